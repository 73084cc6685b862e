"""WebSocket tokens: Django issues them (WS_TOKEN_TTL_SECONDS), pages fetch fresh ones with
their session, and a real Erlang node renews a session with one and closes it at expiry."""

import json
import re
import time

import pytest
from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from messaging.erlang import issue_websocket_token

TOKEN_URL = "/api/messaging/ws-token/"


def signed_in(user) -> Client:
    """A browser-like client: the session cookie, no API token."""
    client = Client()
    client.force_login(user)
    return client


def token_expiry(token: str) -> int:
    return int(token.split(".")[1])


@pytest.mark.django_db
def test_a_host_gets_a_fresh_token_with_their_session_and_a_stranger_none(settings, host):
    settings.WS_TOKEN_TTL_SECONDS = 120
    before = time.time()
    response = signed_in(host).get(TOKEN_URL)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "url", "expires_in", "expires_at"}
    assert body["expires_in"] == 120
    assert before + 120 <= body["expires_at"] <= time.time() + 121  # lives at least the TTL
    assert body["token"].startswith(f"{host.pk}.{body['expires_at']}.")
    assert body["url"].endswith("/ws")
    assert response["Cache-Control"] == "no-store"

    assert Client().get(TOKEN_URL).status_code in (401, 403)


@pytest.mark.django_db
def test_the_host_page_carries_a_token_of_the_configured_lifetime_and_where_to_renew_it(settings, host):
    settings.WS_TOKEN_TTL_SECONDS = 45
    before = time.time()
    html = signed_in(host).get("/statement/").content.decode()

    token = re.search(r'data-ws-token="([^"]+)"', html).group(1)
    assert token.startswith(f"{host.pk}.")
    assert before + 45 <= token_expiry(token) <= time.time() + 46
    assert 'data-ws-expires-in="45"' in html
    assert f'data-ws-token-url="{TOKEN_URL}"' in html


def ws_url(node, token: str) -> str:
    return f"ws://127.0.0.1:{node.port}/ws?token={token}"


def closed_with(ws, timeout: float):
    """(code, reason) of the close the service sends within `timeout` s (frames before it are skipped)."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    except ConnectionClosed as closed:
        return closed.rcvd.code, closed.rcvd.reason


@pytest.mark.django_db(transaction=True)
def test_a_django_token_renews_a_session_on_the_real_node_and_an_unrenewed_one_closes(erlang_node, host):
    """Django's tokens (rounded-up expiry included) are what the node checks on renewal."""
    first = issue_websocket_token(host.pk, 2)
    with connect(ws_url(erlang_node, first.token), open_timeout=5) as ws:
        time.sleep(1.1)  # so the fresh token expires at least a second later than the first
        fresh = issue_websocket_token(host.pk, 2)
        assert fresh.expires_at > first.expires_at
        ws.send(json.dumps({"type": "auth", "token": fresh.token}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "auth_ok", "expires_at": fresh.expires_at}
        # The session outlives the first token and ends with the fresh one.
        assert closed_with(ws, timeout=5) == (1008, "token expired")
        assert time.time() >= fresh.expires_at - 0.05
