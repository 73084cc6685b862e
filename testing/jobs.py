"""Jobs for the engine's own tests (jobs/tests): importable by path, so real worker processes run them."""

import os
import time

from jobs.policy import PermanentJobError, job
from jobs.worker import current_attempt


@job(label="Test: succeed on attempt n", max_attempts=4, base_delay=0.2)
def succeed_on_attempt(n: int) -> dict:
    attempt = current_attempt().number
    if attempt < n:
        raise ConnectionError(f"attempt {attempt} refused")
    return {"attempt": attempt, "pid": os.getpid()}


@job(label="Test: always fails", max_attempts=3, base_delay=0.2)
def always_fail() -> None:
    raise ConnectionError("the far end refused")


@job(label="Test: permanent failure", max_attempts=5)
def fail_permanently() -> None:
    raise PermanentJobError("the booking is gone")


@job(label="Test: slow first attempt", max_attempts=3, base_delay=0.2)
def slow_first_attempt(seconds: float) -> dict:
    """Sleeps on its first attempt only: the lease test kills the worker during that sleep."""
    attempt = current_attempt().number
    if attempt == 1:
        time.sleep(seconds)
    return {"attempt": attempt, "pid": os.getpid()}


@job(label="Test: tick", max_attempts=1)
def tick() -> int:
    """A periodic job: each run leaves a successful row, so a test counts the runs."""
    return os.getpid()


@job(label="Test: quiet tick", max_attempts=1, keep_result=False)
def quiet_tick() -> None:
    """A periodic job that leaves no row behind."""


def run_ready_jobs() -> int:
    """Run every job that is ready now in this process (inside the test's transaction), as a
    worker would; return how many ran. Periodic jobs are not enqueued by it."""
    from jobs.worker import Worker

    return Worker(periodic={}).run_until_empty()


def bring_retries_forward() -> int:
    """Make every job waiting out a retry's backoff due now; return how many there were."""
    from django.utils import timezone
    from django_tasks_db.compat import TaskResultStatus
    from django_tasks_db.models import DBTaskResult, get_date_max

    waiting = DBTaskResult.objects.filter(status=TaskResultStatus.READY).exclude(run_after=get_date_max())
    return waiting.update(run_after=timezone.now())


def run_jobs_with_retries(*, rounds: int = 10) -> int:
    """Run the ready jobs, then bring the retries forward and run again, until no job is left
    ready or waiting; return how many runs there were."""
    runs = 0
    for _ in range(rounds):
        runs += run_ready_jobs()
        if not bring_retries_forward():
            return runs
    raise AssertionError(f"jobs still waiting after {rounds} rounds")
