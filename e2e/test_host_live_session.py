"""A host's page keeps its live connection to the Erlang service while the tokens that
opened it expire: host.js renews them before the service would close the session."""

import json
import time

import pytest
from playwright.sync_api import expect

from messaging.models import Broadcast
from messaging.services import create_broadcast

from .conftest import shot

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN_TTL_SECONDS = 2

# Counts every time the page reports its connection lost (host.js sets data-connected).
WATCH_DROPS = """() => {
  const box = document.getElementById("broadcasts");
  window.wsDrops = 0;
  new MutationObserver(() => { if (box.dataset.connected !== "true") window.wsDrops += 1; })
    .observe(box, { attributes: true, attributeFilter: ["data-connected"] });
}"""


def test_a_hosts_page_stays_connected_past_two_token_lifetimes_and_shows_a_later_broadcast(
    open_as, messaging, settings, support_user, host, start_job_worker
):
    settings.WS_TOKEN_TTL_SECONDS = TOKEN_TTL_SECONDS
    start_job_worker(ERLANG_MESSAGING_URL=messaging.url)  # sends the broadcast below
    page = open_as(host, "/statement/")
    renewals = []
    page.on(
        "websocket",
        lambda ws: ws.on("framesent", lambda payload: renewals.append(payload) if '"auth"' in str(payload) else None),
    )
    page.reload()  # the page's socket opens again, now watched from its start
    box = page.locator("#broadcasts")
    # The page really runs on short tokens, or staying connected would prove nothing.
    page_token_expiry = int(box.get_attribute("data-ws-token").split(".")[1])
    assert page_token_expiry <= time.time() + TOKEN_TTL_SECONDS + 1
    expect(box).to_have_attribute("data-connected", "true")
    page.evaluate(WATCH_DROPS)

    # Two lifetimes and then some (a token lives between TTL and TTL + 1 s): bounded.
    page.wait_for_timeout(2 * (TOKEN_TTL_SECONDS + 1) * 1000 + 500)
    assert page.evaluate("window.wsDrops") == 0
    expect(box).to_have_attribute("data-connected", "true")
    assert len(renewals) >= 2
    assert json.loads(renewals[-1])["type"] == "auth"

    create_broadcast(
        support_user, audience=Broadcast.Audience.USER_IDS, user_ids=[host.pk], text="Renewed and still listening."
    )
    expect(page.locator(".host-broadcast")).to_contain_text("Renewed and still listening.")
    shot(page, "host-live-broadcast-after-renewals")


def test_a_page_whose_sign_in_is_gone_stops_listening_retries_calmly_and_returns_when_signed_in(
    open_as, messaging, settings, host
):
    settings.WS_TOKEN_TTL_SECONDS = TOKEN_TTL_SECONDS
    page = open_as(host, "/statement/")
    box = page.locator("#broadcasts")
    expect(box).to_have_attribute("data-connected", "true")
    signed_in = page.context.cookies()
    token_requests = []
    page.on("request", lambda request: token_requests.append(request.url) if "/ws-token/" in request.url else None)

    page.context.clear_cookies()  # the session expired, or the host signed out in another tab
    # No fresh token can be had: the service ends the session when its token expires.
    expect(box).to_have_attribute("data-connected", "false", timeout=(TOKEN_TTL_SECONDS + 2) * 1000)
    page.wait_for_timeout(4000)
    # The failed renewal, then reconnect attempts after growing delays: a few, not a busy loop.
    assert 2 <= len(token_requests) <= 5, token_requests
    expect(box).to_have_attribute("data-connected", "false")

    page.context.add_cookies(signed_in)
    expect(box).to_have_attribute("data-connected", "true", timeout=15_000)
