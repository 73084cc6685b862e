"""Samples of the Erlang service's /stats for the portal's live chart.

Each call returns the recent ring of samples. Erlang is asked at most once every
SAMPLE_SECONDS whatever the number of staff watching and of web processes serving them:
the ring, the last outcome and the turn to sample all live in the shared cache, and
`cache.add` (atomic in Redis) gives the turn to one process per period.
"""

from django.core.cache import cache
from django.utils import timezone

from .erlang import ErlangError, erlang_client

RING_KEY = "messaging:stats:ring"
LAST_KEY = "messaging:stats:last"
TURN_KEY = "messaging:stats:turn"
RING_SIZE = 60
SAMPLE_SECONDS = 2


def sample_stats() -> dict:
    """{"up": bool, "error": str, "samples": [...oldest first], "latest": sample or None}."""
    if cache.add(TURN_KEY, True, timeout=SAMPLE_SECONDS):
        return _take_sample()
    ring = cache.get(RING_KEY) or []
    last = cache.get(LAST_KEY) or {"up": bool(ring), "error": ""}
    return {
        "up": last["up"],
        "error": last["error"],
        "samples": ring,
        "latest": ring[-1] if ring and last["up"] else None,
    }


def _take_sample() -> dict:
    ring = cache.get(RING_KEY) or []
    try:
        sample = to_sample(erlang_client.stats())
    except ErlangError as error:
        cache.set(LAST_KEY, {"up": False, "error": str(error)}, 60)
        return {"up": False, "error": str(error), "samples": ring, "latest": None}
    ring = (ring + [sample])[-RING_SIZE:]
    cache.set(RING_KEY, ring, 600)
    cache.set(LAST_KEY, {"up": True, "error": ""}, 60)
    return {"up": True, "error": "", "samples": ring, "latest": sample}


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
