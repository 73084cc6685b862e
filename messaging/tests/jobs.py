"""Run background jobs in the test process until none is left to run, retries included."""

from django.utils import timezone
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult, get_date_max

from testing.jobs import run_ready_jobs


def run_jobs_with_retries(*, rounds: int = 10) -> int:
    """Run the ready jobs, then bring every job waiting out a backoff forward and run again,
    until no job is left ready or waiting; returns how many runs there were."""
    runs = 0
    for _ in range(rounds):
        runs += run_ready_jobs()
        waiting = DBTaskResult.objects.filter(status=TaskResultStatus.READY).exclude(run_after=get_date_max())
        if not waiting.update(run_after=timezone.now()):
            return runs
    raise AssertionError(f"jobs still waiting after {rounds} rounds")
