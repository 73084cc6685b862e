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
