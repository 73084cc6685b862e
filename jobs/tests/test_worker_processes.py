"""The engine with real worker processes (`manage.py run_worker`) on the test database: a job
whose worker is SIGKILLed is finished by another after the lease, retries run by themselves,
SIGTERM lets the current job finish, and three workers run a periodic job once per period."""

import time
from collections import Counter

import pytest
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from testing import jobs as test_jobs
from testing.job_worker import JobWorkerProcess
from testing.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def status_of(result) -> str:
    return DBTaskResult.objects.get(pk=result.id).status


def test_a_job_whose_worker_is_killed_is_finished_by_another_after_the_lease():
    result = test_jobs.slow_first_attempt.enqueue(60)
    with JobWorkerProcess(lease=3) as first:
        assert wait_until(lambda: status_of(result) == TaskResultStatus.RUNNING, seconds=20), first.log()
        first.kill()
    time.sleep(1)
    assert status_of(result) == TaskResultStatus.RUNNING  # nobody has taken it back yet: the lease holds

    with JobWorkerProcess(lease=3) as second:
        assert wait_until(lambda: status_of(result) == TaskResultStatus.SUCCESSFUL, seconds=30), second.log()
        done = DBTaskResult.objects.select_related("record").get(pk=result.id)
        assert done.return_value == {"attempt": 2, "pid": second.pid}
        assert "stopped while running it" in done.record.last_error
        assert len(done.worker_ids) == 2


def test_a_failing_job_is_retried_by_the_worker_until_it_succeeds():
    result = test_jobs.succeed_on_attempt.enqueue(3)
    with JobWorkerProcess() as worker:
        assert wait_until(lambda: status_of(result) == TaskResultStatus.SUCCESSFUL, seconds=30), worker.log()
    done = DBTaskResult.objects.get(pk=result.id)
    assert done.return_value["attempt"] == 3


def test_sigterm_lets_the_running_job_finish_then_the_worker_stops():
    result = test_jobs.slow_first_attempt.enqueue(2)
    worker = JobWorkerProcess().start()
    try:
        assert wait_until(lambda: status_of(result) == TaskResultStatus.RUNNING, seconds=20), worker.log()
        assert worker.stop(timeout=30) == 0
        assert status_of(result) == TaskResultStatus.SUCCESSFUL
    finally:
        worker.stop()


def test_three_workers_run_a_periodic_job_once_per_period():
    workers = [JobWorkerProcess(DJANGO_SETTINGS_MODULE="testing.settings_periodic").start() for _ in range(3)]
    try:
        assert wait_until(lambda: DBTaskResult.objects.filter(task_path="testing.jobs.tick").count() >= 6, seconds=40)
    finally:
        for worker in workers:
            worker.stop()
    runs = list(DBTaskResult.objects.filter(task_path="testing.jobs.tick").order_by("enqueued_at"))
    # One run per one-second period: never two enqueued within the same period.
    periods = Counter(int(run.enqueued_at.timestamp()) for run in runs)
    assert max(periods.values()) == 1, periods
    assert all(run.status == TaskResultStatus.SUCCESSFUL for run in runs if run.finished_at)
