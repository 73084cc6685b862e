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
RING_SIZE = 60
SAMPLE_SECONDS = 2
# An outcome older than this (several missed periods) is not shown as the current state.
STALE_SECONDS = 10
NO_RECENT_SAMPLE = "No recent sample: is a background worker running?"


def take_sample() -> dict:
    """Ask Erlang once; append the sample to the ring, and note the outcome (up, or why not)."""
    try:
        sample = to_sample(erlang_client.stats())
    except ErlangError as error:
        cache.set(LAST_KEY, {"up": False, "error": str(error), "at": time.time()}, 600)
        return {"up": False, "error": str(error)}
    ring = ((cache.get(RING_KEY) or []) + [sample])[-RING_SIZE:]
    cache.set(RING_KEY, ring, 600)
    cache.set(LAST_KEY, {"up": True, "error": "", "at": time.time()}, 600)
    return {"up": True, "error": "", "sample": sample}


def read_stats() -> dict:
    """{"up", "stale", "error", "samples": [...oldest first], "latest": sample or None}, from the cache only."""
    ring = cache.get(RING_KEY) or []
    last = cache.get(LAST_KEY)
    if last is None or time.time() - last.get("at", 0) > STALE_SECONDS:
        return {"up": False, "stale": True, "error": NO_RECENT_SAMPLE, "samples": ring, "latest": None}
    up = bool(last["up"] and ring)
    return {"up": up, "stale": False, "error": last["error"], "samples": ring, "latest": ring[-1] if up else None}


def to_sample(stats: dict) -> dict:
    """The few figures the chart draws, from the service's full /stats."""
    now = timezone.localtime()
    connections = stats.get("connections") or {}
    queue_depth = stats.get("queue_depth") or {}
    rates = (stats.get("rates") or {}).get("1s") or {}
    return {
        "t": now.strftime("%H:%M:%S"),
        "time": now.strftime("%H:%M:%S"),
        "rate": {p: round(float(rates.get(p, 0)), 1) for p in ("high", "normal", "low")},
        "queue_depth": queue_depth.get("total", 0),
        "pending_persistence": stats.get("pending_persistence", 0),
        "persistence_failures": stats.get("persistence_failures", 0),
        "connections": connections.get("websocket", 0) + connections.get("http", 0),
        "websocket_connections": connections.get("websocket", 0),
        "memory_mb": round(stats.get("memory_bytes", 0) / 1_048_576, 1),
        "process_count": stats.get("process_count", 0),
        "uptime_seconds": stats.get("uptime_seconds", 0),
        "broadcasts": stats.get("broadcasts", [])[:5],
    }
