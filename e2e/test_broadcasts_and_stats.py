"""Issue 16, section 3: support aims a broadcast (fields by audience, a user picker by name, a
review that names the audience), sees it delivered live vs queued; managers read broadcasts;
the stats chart counts what a broadcast sends, with integer ticks, figures and a time range."""

import re
import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.utils import timezone
from playwright.sync_api import expect

from messaging import stats
from messaging.models import Broadcast
from messaging.services import create_broadcast

from .conftest import shots

pytestmark = pytest.mark.django_db(transaction=True)

# True once the named chart draws a value above zero in any series.
CHART_HAS_POSITIVE = """name => {
  const chart = window.Chart && Chart.getChart(document.querySelector(`canvas[data-chart=${name}]`));
  return !!chart && chart.data.datasets.some(d => d.data.some(v => v > 0));
}"""
Y_TICKS = (
    "name => Chart.getChart(document.querySelector(`canvas[data-chart=${name}]`)).scales.y.ticks.map(t => t.value)"
)


def pick_user(page, typed: str, name: str) -> None:
    page.get_by_label("Users", exact=True).fill(typed)
    page.get_by_role("button", name=re.compile(name)).click()


def test_support_aims_a_broadcast_picks_users_by_name_and_sees_delivered_vs_queued(
    open_as, messaging, support_user, make_user, start_job_worker
):
    amara = make_user("host", country="KE", first_name="Amara", last_name="Okafor")
    kwame = make_user("host", country="GH", first_name="Kwame", last_name="Mensah")
    make_user("host", country="KE", first_name="Zainab", last_name="Bello")
    start_job_worker(ERLANG_MESSAGING_URL=messaging.url)  # runs the broadcast's fan-out job
    amara_page = open_as(amara, "/statement/")  # Amara is online; Kwame is not
    expect(amara_page.locator("#broadcasts")).to_have_attribute("data-connected", "true")

    page = open_as(support_user, "/admin/operations/broadcasts/")
    country, users = page.get_by_label("Country", exact=True), page.get_by_label("Users", exact=True)
    expect(country).to_be_hidden()  # "All hosts" needs neither
    expect(users).to_be_hidden()

    page.get_by_role("radio", name="Hosts in a country").check()
    expect(country).to_be_visible()
    expect(users).to_be_hidden()
    country.select_option("KE")
    expect(page.locator("#recipient-count")).to_have_text("This reaches 2 recipients.")
    shots(page, "broadcast-audience-country")

    page.get_by_role("radio", name="A list of users").check()
    expect(country).to_be_hidden()
    pick_user(page, "amara", "Amara Okafor")
    expect(page.locator("#recipient-count")).to_have_text("This reaches 1 recipient.")
    pick_user(page, "mensah", "Kwame Mensah")
    chips = page.get_by_role("list", name="Chosen users").get_by_role("listitem")
    expect(chips).to_have_text([re.compile("Amara Okafor"), re.compile("Kwame Mensah")])
    expect(page.locator("#recipient-count")).to_have_text("This reaches 2 recipients.")
    shots(page, "broadcast-user-picker")

    page.get_by_label("Message").fill("Your payout date moves to Friday this week.")
    page.get_by_role("button", name="Review and send").click()
    review = page.get_by_role("group", name="Confirm broadcast")
    expect(review).to_contain_text("2 recipients")
    expect(review).to_contain_text("2 chosen users: Amara Okafor, Kwame Mensah")
    shots(page, "broadcast-review-names")
    page.get_by_role("button", name="Yes, send to 2 recipients").click()

    progress = page.locator("#broadcast-progress")
    expect(progress).to_have_attribute("data-status", "delivered")
    expect(progress).to_contain_text("Delivered 2 of 2")
    online, offline = progress.locator("[data-delivered-online]"), progress.locator("[data-queued-offline]")
    expect(online.get_by_role("term")).to_have_text("Delivered to a connected session")
    expect(online.get_by_role("definition")).to_have_text("1 recipient")
    expect(offline.get_by_role("term")).to_have_text("Queued for offline users")
    expect(offline.get_by_role("definition")).to_have_text("1 recipient")
    shots(page, "broadcast-delivered-vs-queued")
    expect(amara_page.locator(".host-broadcast")).to_contain_text("Your payout date moves to Friday")
    assert sorted(Broadcast.objects.get().user_ids) == sorted([amara.pk, kwame.pk])


def test_a_manager_reads_broadcasts_but_has_no_compose_form(open_as, support_user, manager, make_user):
    make_user("host", country="KE")
    create_broadcast(
        support_user, audience=Broadcast.Audience.HOSTS_IN_COUNTRY, country="KE", text="Office closed on Monday."
    )

    page = open_as(manager, "/admin/operations/broadcasts/")
    expect(page.get_by_role("heading", name="Sent broadcasts")).to_be_visible()
    expect(page.locator("table.ops-table")).to_contain_text("hosts in Kenya")
    expect(page.get_by_role("heading", name="New broadcast")).to_have_count(0)
    expect(page.get_by_role("button", name="Review and send")).to_have_count(0)
    expect(page.get_by_role("link", name="Background jobs")).to_have_count(0)
    shots(page, "broadcasts-manager")

    page.locator("table.ops-table a").first.click()
    expect(page.get_by_role("heading", name=re.compile("To hosts in Kenya"))).to_be_visible()
    expect(page.locator("#broadcast-progress")).to_contain_text("Delivered 0 of 1")
    shots(page, "broadcast-detail-manager")


def older_samples(minutes_ago: range) -> list[dict]:
    """Samples as the sampler writes them, from earlier in the hour (the ring keeps an hour)."""
    now = timezone.localtime()
    samples = []
    for minutes in minutes_ago:
        at = now - timedelta(minutes=minutes)
        samples.append(
            {
                "at": time.time() - minutes * 60,
                "t": at.strftime("%H:%M:%S"),
                "time": at.strftime("%H:%M:%S"),
                "rate": {"high": 0.0, "normal": 0.0, "low": 0.0},
                "rate_total": 0.0,
                "queue_depth": 0,
                "pending_persistence": 0,
                "connections": 1,
                "memory_mb": 40.0,
            }
        )
    return samples


def test_stats_count_what_a_broadcast_sends_with_integer_ticks_figures_and_a_time_range(
    open_as, messaging, support_user, shared_cache, start_job_worker
):
    User = get_user_model()
    User.objects.bulk_create(
        [User(username=f"stats-host-{n}", role="host", country="NG") for n in range(300)], batch_size=300
    )
    earlier = older_samples(range(50, 5, -1))  # 50 to 6 minutes ago
    cache.set(stats.RING_KEY, earlier, 3600)
    start_job_worker(ERLANG_MESSAGING_URL=messaging.url, **shared_cache)  # samples /stats, runs the fan-out

    page = open_as(support_user, "/admin/operations/stats/")
    expect(page.locator("[data-stats-up=true]")).to_be_visible(timeout=15_000)
    root = page.locator(".ops-stats")
    expect(root).to_have_attribute("data-samples", re.compile(r"^([2-9]|\d{2,})$"), timeout=15_000)
    for figure in ("Messages per second", "Queue depth", "Connections", "Memory"):
        expect(page.locator(".ops-stats-now")).to_contain_text(figure)

    create_broadcast(support_user, audience=Broadcast.Audience.ALL_HOSTS, text="Maintenance tonight at 23:00.")
    page.wait_for_function(CHART_HAS_POSITIVE, arg="rate", timeout=20_000)
    for chart in ("rate", "queues", "connections"):
        ticks = page.evaluate(Y_TICKS, chart)
        assert ticks and all(float(t).is_integer() for t in ticks), (chart, ticks)
    shots(page, "stats-broadcast-rate")

    # The last 5 minutes start after the earlier samples; the last hour reaches back to them.
    assert root.get_attribute("data-first-sample") != earlier[0]["t"]
    page.get_by_label("Time range").select_option("1h")
    expect(root).to_have_attribute("data-first-sample", earlier[0]["t"])
    shots(page, "stats-last-hour")
