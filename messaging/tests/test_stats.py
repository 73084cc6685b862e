"""The stats chart: one periodic job samples Erlang into the cache; the panel only reads it."""

import time

import pytest
from django.core.cache import cache
from django.test import Client

from messaging import stats
from messaging.tasks import sample_stats
from testing.processes import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def fresh_ring():
    cache.delete_many([stats.RING_KEY, stats.LAST_KEY])
    yield
    cache.delete_many([stats.RING_KEY, stats.LAST_KEY])


def panel(user) -> str:
    client = Client()
    client.force_login(user)
    return client.get("/admin/operations/stats/panel/").content.decode()


def test_each_run_of_the_sampler_job_appends_one_sample_to_the_ring(messaging_settings, fresh_ring):
    sample_stats.call()
    sample_stats.call()

    view = stats.read_stats()
    assert view["up"] and not view["stale"]
    assert len(view["samples"]) == 2
    assert view["latest"] == view["samples"][-1]


def test_the_panel_shows_the_sampled_figures_without_asking_erlang(messaging_settings, fresh_ring, support_user):
    sample_stats.call()
    messaging_settings.ERLANG_MESSAGING_URL = f"http://127.0.0.1:{free_port()}"  # a call now would fail

    page = panel(support_user)

    assert 'data-stats-up="true"' in page
    assert page.count('"queue_depth"') == 1  # the one sample, from the cache


def test_a_sample_that_finds_erlang_down_is_shown_as_down(settings, fresh_ring, support_user):
    settings.ERLANG_MESSAGING_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    sample_stats.call()

    page = panel(support_user)

    assert 'data-stats-up="false"' in page
    assert "The messaging service could not be reached." in page


def test_without_a_recent_sample_the_panel_says_so_instead_of_showing_old_figures(
    messaging_settings, fresh_ring, support_user
):
    assert stats.NO_RECENT_SAMPLE in panel(support_user)  # no worker has sampled yet

    sample_stats.call()
    outcome = cache.get(stats.LAST_KEY)
    cache.set(stats.LAST_KEY, {**outcome, "at": time.time() - stats.STALE_SECONDS - 1})
    page = panel(support_user)

    assert "No recent sample: is a background worker running?" in page
    assert 'data-stats-up="true"' not in page
    assert '"queue_depth"' not in page  # the old figures are not drawn as live


# --- issue 16: rates that count a broadcast, the figures, the time range ---------------------


def erlang_stats(*, routed: int, node="messaging@a") -> dict:
    return {"node": node, "routed": {"high": 0, "normal": routed, "low": 0}, "rates": {"1s": {"normal": 7.0}}}


def test_the_rate_counts_every_message_routed_since_the_previous_sample():
    first = stats.to_sample(erlang_stats(routed=100))
    first["at"] -= 2  # two seconds ago
    second = stats.to_sample(erlang_stats(routed=400), previous=first)
    assert second["rate"]["normal"] == pytest.approx(150.0, abs=1)
    assert first["rate"]["normal"] == 7.0  # nothing to compare with: Erlang's own 1 s rate


def test_another_node_or_a_restart_falls_back_to_erlangs_rate():
    first = stats.to_sample(erlang_stats(routed=400))
    first["at"] -= 2
    assert stats.to_sample(erlang_stats(routed=500, node="messaging@b"), previous=first)["rate"]["normal"] == 7.0
    assert stats.to_sample(erlang_stats(routed=3), previous=first)["rate"]["normal"] == 7.0


def ring_of(minutes_ago):
    now = time.time()
    return [{"at": now - m * 60, "t": f"-{m}m"} for m in minutes_ago]


def test_the_time_range_picks_the_window_and_thins_long_ones():
    ring = ring_of([50, 20, 10, 4, 1, 0])
    assert [s["t"] for s in stats.in_range(ring, "5m")] == ["-4m", "-1m", "-0m"]
    assert [s["t"] for s in stats.in_range(ring, "15m")] == ["-10m", "-4m", "-1m", "-0m"]
    assert len(stats.in_range(ring, "1h")) == 6
    full_hour = [{"at": time.time() - i * stats.SAMPLE_SECONDS, "t": str(i)} for i in range(stats.RING_SIZE)][::-1]
    thinned = stats.in_range(full_hour, "1h")
    assert len(thinned) <= stats.MAX_POINTS and thinned[-1] == full_hour[-1]  # the newest is always drawn


def test_the_panel_shows_current_figures_and_refuses_an_unknown_range(messaging_settings, fresh_ring, support_user):
    sample_stats.call()
    page = panel(support_user)
    for figure in ("Messages per second", "Queue depth", "Connections", "Memory"):
        assert f"<dt>{figure}</dt>" in page
    client = Client()
    client.force_login(support_user)
    response = client.get("/admin/operations/stats/panel/", {"range": "1y"})
    assert response.status_code == 400
    assert "Unknown time range" in response.content.decode()
    assert client.get("/admin/operations/stats/panel/", {"range": "1h"}).status_code == 200
