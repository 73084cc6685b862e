"""The stats chart's samples: Erlang is asked once per period, however many people watch."""

import pytest
from django.core.cache import cache

from messaging import stats


@pytest.fixture
def fresh_ring():
    cache.delete_many([stats.RING_KEY, stats.LAST_KEY, stats.TURN_KEY])
    yield
    cache.delete_many([stats.RING_KEY, stats.LAST_KEY, stats.TURN_KEY])


def test_one_sample_per_period_whoever_asks(messaging_settings, fresh_ring):
    first = stats.sample_stats()
    watchers = [stats.sample_stats() for _ in range(5)]

    assert first["up"] and len(first["samples"]) == 1
    # Everyone else in the same period draws the same chart without asking Erlang again.
    assert all(view["samples"] == first["samples"] and view["up"] for view in watchers)

    cache.delete(stats.TURN_KEY)  # the period is over
    assert len(stats.sample_stats()["samples"]) == 2


def test_a_down_service_is_reported_to_every_watcher(settings, fresh_ring):
    settings.ERLANG_MESSAGING_URL = "http://127.0.0.1:9"  # nothing listens there

    sampler = stats.sample_stats()
    watcher = stats.sample_stats()

    assert not sampler["up"] and sampler["error"]
    assert watcher == sampler
