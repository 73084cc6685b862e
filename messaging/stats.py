"""Samples of the Erlang service's /stats for the portal's live chart.

One periodic job (messaging.tasks.sample_stats, every SAMPLE_SECONDS, once for the whole
deployment) asks Erlang and appends to a ring in the shared cache; the portal's panel only
reads that ring (read_stats) and never calls Erlang, however many staff are watching. With no
recent outcome (no worker running) the panel says so rather than showing old figures as live.
"""

import time

from django.core.cache import cache
from django.utils import timezone

from .erlang import ErlangError, erlang_client

RING_KEY = "messaging:stats:ring"
LAST_KEY = "messaging:stats:last"
SAMPLE_SECONDS = 2
# The ring keeps the longest window the chart offers (an hour), in the shared cache.
RING_SIZE = 3600 // SAMPLE_SECONDS
RING_TIMEOUT = 2 * 3600
# The chart's time ranges: key -> (label, seconds). A range longer than MAX_POINTS samples is
# thinned to every k-th sample, so an hour draws as many points as five minutes.
RANGES = {"5m": ("Last 5 minutes", 300), "15m": ("Last 15 minutes", 900), "1h": ("Last hour", 3600)}
DEFAULT_RANGE = "5m"
MAX_POINTS = 150
# An outcome older than this (several missed periods) is not shown as the current state.
STALE_SECONDS = 10
NO_RECENT_SAMPLE = "No recent sample: is a background worker running?"
PRIORITIES = ("high", "normal", "low")


def take_sample() -> dict:
    """Ask Erlang once; append the sample to the ring, and note the outcome (up, or why not)."""
    try:
        answer = erlang_client.stats()
    except ErlangError as error:
        cache.set(LAST_KEY, {"up": False, "error": str(error), "at": time.time()}, 600)
        return {"up": False, "error": str(error)}
    ring = cache.get(RING_KEY) or []
    sample = to_sample(answer, previous=ring[-1] if ring else None)
    cache.set(RING_KEY, (ring + [sample])[-RING_SIZE:], RING_TIMEOUT)
    cache.set(LAST_KEY, {"up": True, "error": "", "at": time.time()}, 600)
    return {"up": True, "error": "", "sample": sample}


def read_stats(range_key: str = DEFAULT_RANGE) -> dict:
    """{"up", "stale", "error", "samples": [...oldest first, within the range], "latest": sample or
    None}, from the cache only."""
    ring = cache.get(RING_KEY) or []
    samples = in_range(ring, range_key)
    last = cache.get(LAST_KEY)
    if last is None or time.time() - last.get("at", 0) > STALE_SECONDS:
        return {"up": False, "stale": True, "error": NO_RECENT_SAMPLE, "samples": samples, "latest": None}
    up = bool(last["up"] and ring)
    return {"up": up, "stale": False, "error": last["error"], "samples": samples, "latest": ring[-1] if up else None}


def in_range(ring: list[dict], range_key: str) -> list[dict]:
    """The samples of the last `range_key` (RANGES), thinned to at most MAX_POINTS, always
    ending with the newest."""
    since = time.time() - RANGES[range_key][1]
    recent = [sample for sample in ring if sample.get("at", 0) >= since]
    step = -(-len(recent) // MAX_POINTS)  # ceiling division
    return recent[::-1][::step][::-1] if step > 1 else recent


def to_sample(stats: dict, previous: dict | None = None) -> dict:
    """The few figures the chart draws, from the service's full /stats."""
    now = timezone.localtime()
    connections = stats.get("connections") or {}
    queue_depth = stats.get("queue_depth") or {}
    routed = {p: int((stats.get("routed") or {}).get(p, 0)) for p in PRIORITIES}
    sample = {
        "at": time.time(),
        "node": stats.get("node", ""),
        "t": now.strftime("%H:%M:%S"),
        "time": now.strftime("%H:%M:%S"),
        "routed": routed,
        "queue_depth": queue_depth.get("total", 0),
        "pending_persistence": stats.get("pending_persistence", 0),
        "persistence_failures": stats.get("persistence_failures", 0),
        "connections": connections.get("websocket", 0) + connections.get("http", 0),
        "websocket_connections": connections.get("websocket", 0),
        "memory_mb": round(stats.get("memory_bytes", 0) / 1_048_576, 1),
        "process_count": stats.get("process_count", 0),
        "uptime_seconds": stats.get("uptime_seconds", 0),
    }
    sample["rate"] = message_rates(sample, previous, erlang_rates=(stats.get("rates") or {}).get("1s") or {})
    sample["rate_total"] = round(sum(sample["rate"].values()), 1)
    return sample


def message_rates(sample: dict, previous: dict | None, *, erlang_rates: dict) -> dict:
    """Messages per second by priority since the previous sample: every message routed in
    between counts, a broadcast's included. Erlang's own 1 s rate sees only the last second
    before the sample, so it stands in only when there is nothing to compare with (the first
    sample, another node answered, or the service restarted and its counters began again)."""
    comparable = (
        previous is not None
        and previous.get("node") == sample["node"]
        and "routed" in previous
        and all(sample["routed"][p] >= previous["routed"].get(p, 0) for p in PRIORITIES)
        and sample["at"] > previous.get("at", 0)
    )
    if not comparable:
        return {p: round(float(erlang_rates.get(p, 0)), 1) for p in PRIORITIES}
    seconds = sample["at"] - previous["at"]
    return {p: round((sample["routed"][p] - previous["routed"][p]) / seconds, 1) for p in PRIORITIES}
