"""Periodic jobs: each enqueued once per period across every worker of the deployment.

settings.PERIODIC_JOBS maps a task's path to its period in seconds. Periods are aligned to
the clock (a 60 s job is due at each whole minute), so workers started at different times
agree on which period is due. Every worker calls `enqueue_due_periodic_jobs` as it loops;
the row lock of a conditional UPDATE makes exactly one of them enqueue each period.
"""

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from .models import PeriodicJob

logger = logging.getLogger("jobs")


def period_end(now: datetime, every_seconds: int) -> datetime:
    """The start of the period after the one `now` falls in."""
    seconds = int(now.timestamp()) // every_seconds * every_seconds + every_seconds
    return datetime.fromtimestamp(seconds, tz=now.tzinfo or timezone.get_current_timezone())


def enqueue_due_periodic_jobs(periodic: dict[str, int], known: set[str] | None = None) -> list[str]:
    """Enqueue each periodic job whose period has come and nobody enqueued yet; return their paths.

    `known` (kept by the caller between calls) skips creating rows already created."""
    now = timezone.now()
    enqueued = []
    for task_path, every_seconds in periodic.items():
        if known is None or task_path not in known:
            PeriodicJob.objects.get_or_create(
                task_path=task_path, defaults={"every_seconds": every_seconds, "next_run_at": now}
            )
            if known is not None:
                known.add(task_path)
        with transaction.atomic():
            # Concurrent workers queue on this row's lock; after the first commits, the others
            # re-read it, find next_run_at in the future and update nothing.
            claimed = PeriodicJob.objects.filter(task_path=task_path, next_run_at__lte=now).update(
                next_run_at=period_end(now, every_seconds), last_run_at=now, every_seconds=every_seconds
            )
            if claimed:
                import_string(task_path).enqueue()
                enqueued.append(task_path)
    return enqueued


def reschedule_now(task_path: str) -> None:
    """Make a periodic job due at once (tests, and an operator who wants a run now)."""
    PeriodicJob.objects.filter(task_path=task_path).update(next_run_at=timezone.now() - timedelta(seconds=1))
