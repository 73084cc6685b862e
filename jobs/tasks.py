"""The engine's own periodic jobs: housekeeping, and the ledger check that GET /metrics reports."""

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from finance.ledger_checks import run_ledger_checks

from .policy import job
from .services import record_check

logger = logging.getLogger("jobs")

LEDGER_CHECK = "ledger"


@job(label="Prune finished jobs", max_attempts=1)
def prune_finished_jobs() -> int:
    """Delete jobs that succeeded more than JOB_RETENTION_DAYS ago (failed ones stay for staff)."""
    cutoff = timezone.now() - timedelta(days=settings.JOB_RETENTION_DAYS)
    deleted, _ = DBTaskResult.objects.successful().filter(finished_at__lt=cutoff).delete()
    return deleted


# One attempt: the next period runs it again. A run that cannot finish (the database away)
# stays as a failed job, which jobs_failed_total shows; a finished run leaves no job row, its
# result is the CheckResult row.
@job(label="Ledger check", max_attempts=1, keep_result=False)
def check_ledger() -> bool:
    """Run every ledger invariant check (as `manage.py check_ledger` does) and record the result:
    ok or not, when, and the names of the failing checks. Each failing check is logged as an
    ERROR naming it; violations are the ledger's state, not the job's failure, so the job succeeds."""
    results = run_ledger_checks()
    failed = [result for result in results if not result.ok]
    for result in failed:
        logger.error(
            "ledger check failed: %s (%s violations): %s. First: %s",
            result.name,
            result.violation_count,
            result.description,
            "; ".join(result.violations[:3]),
        )
    record_check(LEDGER_CHECK, ok=not failed, failures=[result.name for result in failed])
    if not failed:
        logger.info("ledger check passed: %s checks", len(results))
    return not failed
