"""Support's user stories, with the real Erlang service: broadcasts arrive live, stats chart."""

import re

import pytest
from playwright.sync_api import expect

from messaging.models import Broadcast

from .conftest import shot

pytestmark = pytest.mark.django_db(transaction=True)


def test_support_broadcast_arrives_live_on_a_hosts_page(
    open_as, messaging, support_user, host, make_user, start_job_worker
):
    make_user("host")  # someone else, who must not be counted
    start_job_worker(ERLANG_MESSAGING_URL=messaging.url)  # runs the broadcast's fan-out job
    host_page = open_as(host, "/statement/")
    expect(host_page.locator("#broadcasts")).to_have_attribute("data-connected", "true")

    page = open_as(support_user, "/admin/operations/broadcasts/")
    expect(page.locator(".ops-empty")).to_contain_text("No broadcasts yet")
    page.get_by_label("Message").fill("Payouts to Kenyan banks run a day late this week.")
    page.get_by_role("radio", name="A list of users").check()
    page.get_by_label("Users", exact=True).fill(host.username)
    page.get_by_role("button", name=re.compile(host.username)).click()
    expect(page.locator("[data-recipients]")).to_have_text("1")
    shot(page, "broadcast-compose")
    page.get_by_role("button", name="Review and send").click()
    expect(page.get_by_role("group", name="Confirm broadcast")).to_contain_text("1 recipient")
    shot(page, "broadcast-confirm")
    page.get_by_role("button", name="Yes, send to 1").click()

    expect(page.locator("#broadcast-progress")).to_have_attribute("data-status", "delivered")
    expect(page.locator("#broadcast-progress")).to_contain_text("Delivered 1 of 1")
    shot(page, "broadcast-done")
    expect(host_page.locator(".host-broadcast")).to_contain_text("Payouts to Kenyan banks run a day late")
    shot(host_page, "host-live-broadcast")
    assert Broadcast.objects.get().via_fallback is False

    page.goto("/admin/operations/broadcasts/")
    expect(page.locator("table.ops-table")).to_contain_text("1 / 1")


def test_broadcast_to_an_empty_audience_is_refused_with_a_clear_message(open_as, messaging, support_user):
    page = open_as(support_user, "/admin/operations/broadcasts/")
    page.get_by_label("Message").fill("Hello")
    page.get_by_role("radio", name="Hosts in a country").check()
    page.get_by_role("combobox", name="Country").select_option("RW")
    expect(page.locator("#recipient-count")).to_contain_text("Nobody is in this audience")
    page.get_by_role("button", name="Review and send").click()
    expect(page.locator(".error-message")).to_contain_text("Nobody is in this audience")
    assert Broadcast.objects.count() == 0


def test_live_stats_chart_updates_and_says_plainly_when_the_service_is_down(
    open_as, messaging, support_user, shared_cache, start_job_worker
):
    page = open_as(support_user, "/admin/operations/stats/")
    expect(page.locator("[data-stats-up=unknown]")).to_contain_text("No recent sample: is a background worker running?")

    sampler = start_job_worker(ERLANG_MESSAGING_URL=messaging.url, **shared_cache)
    expect(page.locator("[data-stats-up=true]")).to_be_visible(timeout=15_000)
    # The chart grows by a sample every two seconds: two or more drawn.
    expect(page.locator(".ops-stats")).to_have_attribute(
        "data-samples", re.compile(r"^([2-9]|\d{2,})$"), timeout=15_000
    )
    shot(page, "stats-live")

    sampler.stop()  # the sampler now finds nothing listening at the service's address
    sampler = start_job_worker(ERLANG_MESSAGING_URL="http://127.0.0.1:9", **shared_cache)
    expect(page.locator("[data-stats-up=false]")).to_contain_text("down", timeout=15_000)
    shot(page, "stats-down")
    sampler.stop()
    sampler = start_job_worker(ERLANG_MESSAGING_URL=messaging.url, **shared_cache)
    expect(page.locator("[data-stats-up=true]")).to_be_visible(timeout=15_000)

    sampler.stop()  # no worker: the panel stops presenting the last figures as live
    expect(page.locator("[data-stats-up=unknown]")).to_contain_text("No recent sample", timeout=20_000)
    shot(page, "stats-no-worker")


def test_host_and_support_are_refused_finance_pages(open_as, host, support_user):
    page = open_as(host, "/admin/operations/wallets/")
    assert page.url.endswith("/statement/")
    page = open_as(support_user, "/admin/operations/refunds/")
    expect(page.locator(".messages")).to_contain_text("permission")
