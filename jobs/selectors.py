"""Reading jobs: for people (a status in words, the attempt, when the next one is due), and for
the readiness probe and GET /metrics (the queue's depth, live workers, the periodic checks)."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Q, QuerySet
from django.db.models.functions import Now
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult, get_date_max

from .models import CheckResult, WorkerHeartbeat
from .policy import label_for

# What the Background jobs page filters by. "Waiting to retry" is a queued job that has
# already failed at least once: the engine keeps it READY with a later run_after.
STATUS_FILTERS = {
    "failed": ("Failed", Q(status=TaskResultStatus.FAILED)),
    "retrying": ("Waiting to retry", Q(status=TaskResultStatus.READY, record__attempts__gt=0)),
    "queued": ("Queued", Q(status=TaskResultStatus.READY) & (Q(record__isnull=True) | Q(record__attempts=0))),
    "running": ("Running", Q(status=TaskResultStatus.RUNNING)),
    "succeeded": ("Succeeded", Q(status=TaskResultStatus.SUCCESSFUL)),
}


def jobs() -> QuerySet[DBTaskResult]:
    return DBTaskResult.objects.select_related("record").order_by("-enqueued_at", "-id")


def filter_by_status(queryset: QuerySet, status: str) -> QuerySet:
    return queryset.filter(STATUS_FILTERS[status][1]) if status in STATUS_FILTERS else queryset


def job_kinds() -> list[tuple[str, str]]:
    paths = DBTaskResult.objects.order_by("task_path").values_list("task_path", flat=True).distinct()
    return sorted(((path, label_for(path)) for path in paths), key=lambda choice: choice[1])


def status_in_words(result: DBTaskResult) -> str:
    record = getattr(result, "record", None)
    attempts = record.attempts if record else 0
    if result.status == TaskResultStatus.READY:
        return "Waiting to retry" if attempts else "Queued"
    return {
        TaskResultStatus.RUNNING: "Running",
        TaskResultStatus.SUCCESSFUL: "Succeeded",
        TaskResultStatus.FAILED: "Failed",
    }.get(result.status, result.status.title())


def next_attempt_at(result: DBTaskResult):
    """When a job waiting to retry will run again (None: as soon as a worker is free)."""
    if result.status != TaskResultStatus.READY or result.run_after == get_date_max():
        return None
    return result.run_after


def count_failed() -> int:
    return DBTaskResult.objects.filter(status=TaskResultStatus.FAILED).count()


def queue_depth() -> int:
    """Jobs ready to run now and not yet taken by a worker (retries still waiting out their
    backoff are not ready)."""
    return DBTaskResult.objects.ready().count()


def live_workers() -> int:
    """Workers whose heartbeat is within the lease (JOB_LEASE_SECONDS): those still taking jobs.
    The database's clock, as the workers' beats are written with it."""
    lease = timedelta(seconds=settings.JOB_LEASE_SECONDS)
    return WorkerHeartbeat.objects.filter(last_beat__gte=Now() - lease).count()


def last_check(name: str) -> CheckResult | None:
    """The latest result of the periodic check `name` (None: it has never run)."""
    return CheckResult.objects.filter(name=name).first()
