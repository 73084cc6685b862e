"""Readiness: may this app server take traffic? What GET /health/ready/ reports, dependency by
dependency, and what GET /metrics sums up as portal_ready.

Required (any of them down: not ready, 503): the database, the cache (Redis in production: the
webhook limit, sign-in lockouts and the stats chart live there) and the migrations (code newer
than the schema must not serve). Reported but not required:

- the messaging service: when Erlang is down, Django writes messages itself (the fallback), so
  the portal still works;
- the job workers (a heartbeat within JOB_LEASE_SECONDS): without one, payouts in bulk,
  broadcasts and receipts wait in the queue, but every page and API call still works.
  Taking every app server out of rotation for it would turn a delay into an outage; the
  waiting jobs show in jobs_queue_depth, which is what to alert on.

Each check runs in a thread of a small pool and is given CHECK_TIMEOUT_SECONDS: a database or
Redis that does not answer (a dropped packet, a host gone) makes the check "timeout", never a
request that hangs until gunicorn kills its worker. The checks say only "ok", "down",
"timeout" or "pending: 2 migrations": no host name, secret or exception text leaves the
server (the log gets the exception).
"""

import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from django.core.cache import cache
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor

from jobs import selectors as job_selectors
from messaging.erlang import erlang_client

logger = logging.getLogger("portal.health")

CHECK_TIMEOUT_SECONDS = 3.0
OK = "ok"
DOWN = "down"
TIMEOUT = "timeout"

# Shared by every request of this process. A check stuck past its timeout keeps its thread
# until it returns; with all of them stuck, later checks wait in the queue and time out too,
# which is the truth: that dependency is not answering.
_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health-check")


@dataclass(frozen=True)
class Check:
    name: str
    required: bool
    probe: Callable[[], str]  # the state in a few words: "ok" when healthy


def database_answers() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return OK


def cache_round_trip() -> str:
    """Write a key of our own, read it back: a cache that takes writes and loses them is down."""
    key, value = f"health-check:{uuid.uuid4().hex}", uuid.uuid4().hex
    cache.set(key, value, timeout=30)
    answered = cache.get(key)
    cache.delete(key)
    return OK if answered == value else DOWN


def migrations_applied() -> str:
    executor = MigrationExecutor(connection)
    pending = len(executor.migration_plan(executor.loader.graph.leaf_nodes()))
    if not pending:
        return OK
    return f"pending: {pending} migration{'s' if pending > 1 else ''}"


def messaging_answers() -> str:
    return OK if erlang_client.health_check() else DOWN


def job_worker_alive() -> str:
    return OK if job_selectors.live_workers() else "no live worker"


REQUIRED = (
    Check("database", True, database_answers),
    Check("cache", True, cache_round_trip),
    Check("migrations", True, migrations_applied),
)
ALL = (
    *REQUIRED,
    Check("messaging", False, messaging_answers),
    Check("job_worker", False, job_worker_alive),
)


@dataclass(frozen=True)
class Readiness:
    states: dict[str, dict]  # name -> {"state": ..., "required": ...}

    @property
    def ready(self) -> bool:
        return all(check["state"] == OK for check in self.states.values() if check["required"])

    @property
    def status(self) -> str:
        if not self.ready:
            return "not_ready"
        return "ready" if all(check["state"] == OK for check in self.states.values()) else "degraded"


class Failed:
    """What run_bounded gives for a call that raised or ran out of time."""

    def __init__(self, state: str):
        self.state = state


def run_bounded(calls: dict[str, Callable], seconds: float = CHECK_TIMEOUT_SECONDS) -> dict:
    """Run the calls at once in the pool; each one's result, or Failed(DOWN / TIMEOUT) for a
    call that raised or did not return within `seconds` of the start."""
    futures = {name: _pool.submit(_closing_connections, name, call) for name, call in calls.items()}
    deadline = time.monotonic() + seconds
    results = {}
    for name, future in futures.items():
        try:
            results[name] = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            logger.warning("health check %s did not answer within %s s", name, seconds)
            results[name] = Failed(TIMEOUT)
        except Exception:
            results[name] = Failed(DOWN)
    return results


def _closing_connections(name: str, call: Callable):
    try:
        return call()
    except Exception:
        logger.warning("health check %s failed", name, exc_info=True)
        raise
    finally:
        # This pool thread's own database connection: not kept open between checks.
        connections.close_all()


def readiness(checks: tuple[Check, ...] = ALL) -> Readiness:
    results = run_bounded({check.name: check.probe for check in checks})
    return Readiness(
        {
            check.name: {
                "state": result.state if isinstance(result, Failed) else result,
                "required": check.required,
            }
            for check, result in zip(checks, results.values(), strict=True)
        }
    )
