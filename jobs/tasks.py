"""The engine's own periodic housekeeping."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from .policy import job


@job(label="Prune finished jobs", max_attempts=1)
def prune_finished_jobs() -> int:
    """Delete jobs that succeeded more than JOB_RETENTION_DAYS ago (failed ones stay for staff)."""
    cutoff = timezone.now() - timedelta(days=settings.JOB_RETENTION_DAYS)
    deleted, _ = DBTaskResult.objects.successful().filter(finished_at__lt=cutoff).delete()
    return deleted
