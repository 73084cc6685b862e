"""Reads for the portal's broadcast pages."""

from collections.abc import Iterable

from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult, get_date_max

from .models import Broadcast
from .tasks import FAN_OUT_ATTEMPTS


def with_fan_out_state(broadcasts: Iterable[Broadcast]) -> list[Broadcast]:
    """The broadcasts, each with `max_attempts` and, while retrying, `next_attempt_at`: when its
    fan-out job runs again (the job engine's backoff, read from the job's row)."""
    broadcasts = list(broadcasts)
    retrying = {b.job_id: b for b in broadcasts if b.status == Broadcast.Status.RETRYING and b.job_id}
    waiting = DBTaskResult.objects.filter(pk__in=retrying, status=TaskResultStatus.READY).exclude(
        run_after=get_date_max()
    )
    next_runs = dict(waiting.values_list("pk", "run_after"))
    for broadcast in broadcasts:
        broadcast.max_attempts = FAN_OUT_ATTEMPTS
        broadcast.next_attempt_at = next_runs.get(broadcast.job_id)
    return broadcasts
