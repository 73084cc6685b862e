"""Writes of the jobs engine: staff retrying a failed job (permission, change and audit in one
transaction), and the periodic checks recording their result."""

from django.db import transaction
from django.utils import timezone
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult, get_date_max
from wagtail.log_actions import log

from finance import permissions
from finance.errors import InvalidStateError, NotFoundError

from .models import CheckResult, JobRecord
from .policy import label_for, policy_for


def retry_job(result_id, *, actor) -> DBTaskResult:
    """Put a failed job back in the queue with a fresh set of attempts."""
    permissions.require(actor, permissions.RETRY_JOB)
    with transaction.atomic():
        result = DBTaskResult.objects.select_for_update().filter(pk=result_id).first()
        if result is None:
            raise NotFoundError("No such job.")
        if result.status != TaskResultStatus.FAILED:
            raise InvalidStateError(f"Only a failed job can be retried; this one is {result.status.lower()}.")
        result.status = TaskResultStatus.READY
        result.run_after = get_date_max()
        result.finished_at = None
        result.save(update_fields=["status", "run_after", "finished_at"])
        record, _ = JobRecord.objects.get_or_create(task_result=result)
        record.attempts = 0
        record.max_attempts = policy_for(result.task_path).max_attempts
        record.retried_by = actor
        record.retried_at = timezone.now()
        record.save()
        log(
            record,
            "stayafrica.job.retry",
            user=actor,
            data={"job": str(result.pk), "task": label_for(result.task_path)},
        )
    return result


def record_check(name: str, *, ok: bool, failures: list[str]) -> CheckResult:
    """Keep a periodic check's latest result (one row per check), for every process to read."""
    result, _ = CheckResult.objects.update_or_create(
        name=name, defaults={"ok": ok, "ran_at": timezone.now(), "failures": failures}
    )
    return result
