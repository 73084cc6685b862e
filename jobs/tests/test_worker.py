"""The engine's rules, run in this process: retries with backoff, the failed state and its
retry from the portal, results kept or not, expired leases, the periodic scheduler."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult
from wagtail.models import ModelLogEntry

from finance.errors import InvalidStateError, PermissionDeniedError
from jobs.models import JobRecord, PeriodicJob, WorkerHeartbeat
from jobs.scheduler import enqueue_due_periodic_jobs, period_end
from jobs.services import retry_job
from jobs.worker import Worker
from testing import jobs as test_jobs
from testing.jobs import run_ready_jobs
from testing.log_capture import captured_logs

pytestmark = pytest.mark.django_db


def row(result) -> DBTaskResult:
    return DBTaskResult.objects.select_related("record").get(pk=result.id)


def make_due(result) -> None:
    DBTaskResult.objects.filter(pk=result.id).update(run_after=timezone.now() - timedelta(seconds=1))


def test_a_failed_attempt_comes_back_after_a_delay_that_doubles_and_then_succeeds():
    result = test_jobs.succeed_on_attempt.enqueue(3)

    before = timezone.now()
    assert run_ready_jobs() == 1
    first = row(result)
    assert first.status == TaskResultStatus.READY
    assert first.record.attempts == 1
    assert first.record.last_error == "ConnectionError: attempt 1 refused"
    first_delay = (first.run_after - before).total_seconds()
    assert 0.2 <= first_delay <= 0.2 * 1.1 + 0.5
    assert run_ready_jobs() == 0  # not due yet: the backoff holds it

    make_due(result)
    before = timezone.now()
    run_ready_jobs()
    second = row(result)
    second_delay = (second.run_after - before).total_seconds()
    assert second.record.attempts == 2
    assert 0.4 <= second_delay <= 0.4 * 1.1 + 0.5

    make_due(result)
    run_ready_jobs()
    done = row(result)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value["attempt"] == 3


def test_a_job_that_keeps_failing_stops_at_its_maximum_and_shows_why():
    result = test_jobs.always_fail.enqueue()
    for _ in range(3):
        make_due(result)
        run_ready_jobs()
    failed = row(result)
    assert failed.status == TaskResultStatus.FAILED
    assert failed.record.attempts == 3 == failed.record.max_attempts
    assert failed.record.last_error == "ConnectionError: the far end refused"
    assert failed.exception_class_path == "builtins.ConnectionError"
    assert "the far end refused" in failed.traceback
    make_due(result)
    assert run_ready_jobs() == 0  # failed stays failed


def test_each_attempt_logs_under_the_jobs_own_id():
    result = test_jobs.always_fail.enqueue()
    with captured_logs("json") as logs:
        for _ in range(3):
            make_due(result)
            run_ready_jobs()

    failures = [(line["level"], line["request_id"]) for line in logs.from_logger("jobs") if "failed" in line["message"]]
    assert failures == [
        ("WARNING", f"job:{result.id}:1"),
        ("WARNING", f"job:{result.id}:2"),
        ("ERROR", f"job:{result.id}:3"),
    ]


def test_a_permanent_error_fails_at_once():
    result = test_jobs.fail_permanently.enqueue()
    run_ready_jobs()
    failed = row(result)
    assert failed.status == TaskResultStatus.FAILED
    assert failed.record.attempts == 1
    assert failed.record.last_error == "PermanentJobError: the booking is gone"


def test_staff_retry_a_failed_job_with_a_fresh_set_of_attempts_and_it_is_audited(finance_user):
    result = test_jobs.fail_permanently.enqueue()
    run_ready_jobs()

    retry_job(result.id, actor=finance_user)

    retried = row(result)
    assert retried.status == TaskResultStatus.READY
    assert retried.record.attempts == 0
    assert retried.record.retried_by == finance_user
    entry = ModelLogEntry.objects.get(action="stayafrica.job.retry")
    assert entry.user_id == finance_user.pk
    assert entry.data["job"] == str(result.id)
    assert run_ready_jobs() == 1
    assert row(result).record.attempts == 1


def test_only_a_failed_job_can_be_retried_and_only_by_someone_allowed(finance_user, manager):
    result = test_jobs.fail_permanently.enqueue()
    with pytest.raises(InvalidStateError):
        retry_job(result.id, actor=finance_user)
    run_ready_jobs()
    with pytest.raises(PermissionDeniedError):
        retry_job(result.id, actor=manager)
    assert row(result).status == TaskResultStatus.FAILED


def test_a_job_that_keeps_no_result_leaves_no_row():
    result = test_jobs.quiet_tick.enqueue()
    assert run_ready_jobs() == 1
    assert not DBTaskResult.objects.filter(pk=result.id).exists()


def claimed_by(worker_id: str, *, seconds_ago: float):
    result = test_jobs.tick.enqueue()
    DBTaskResult.objects.filter(pk=result.id).update(
        status=TaskResultStatus.RUNNING,
        worker_ids=[worker_id],
        started_at=timezone.now() - timedelta(seconds=seconds_ago),
    )
    JobRecord.objects.create(task_result_id=result.id, attempts=1, max_attempts=2)
    return result


def beat(worker_id: str, *, seconds_ago: float) -> None:
    moment = timezone.now() - timedelta(seconds=seconds_ago)
    WorkerHeartbeat.objects.create(worker_id=worker_id, hostname="h", pid=1, started_at=moment, last_beat=moment)


def test_a_running_job_whose_worker_stopped_beating_goes_back_to_the_queue():
    beat("dead", seconds_ago=60)
    beat("alive", seconds_ago=1)
    orphan = claimed_by("dead", seconds_ago=60)
    healthy = claimed_by("alive", seconds_ago=60)
    just_claimed = claimed_by("starting", seconds_ago=0)  # its worker's beat may not be visible yet

    assert Worker(lease_seconds=30, periodic={}).reap_expired_leases() == 1

    assert row(orphan).status == TaskResultStatus.READY
    assert "stopped while running it" in row(orphan).record.last_error
    assert row(healthy).status == TaskResultStatus.RUNNING
    assert row(just_claimed).status == TaskResultStatus.RUNNING


def test_an_orphan_on_its_last_attempt_fails_instead():
    orphan = claimed_by("dead", seconds_ago=60)
    JobRecord.objects.filter(pk=orphan.id).update(attempts=2)
    Worker(lease_seconds=30, periodic={}).reap_expired_leases()
    assert row(orphan).status == TaskResultStatus.FAILED


def test_a_periodic_job_is_enqueued_once_per_period_whatever_the_number_of_workers():
    periodic = {"testing.jobs.tick": 60}
    enqueued = [enqueue_due_periodic_jobs(periodic) for _worker in range(5)]
    assert enqueued == [["testing.jobs.tick"], [], [], [], []]
    assert DBTaskResult.objects.filter(task_path="testing.jobs.tick").count() == 1
    due = PeriodicJob.objects.get(pk="testing.jobs.tick").next_run_at
    assert due.timestamp() % 60 == 0 and 0 < (due - timezone.now()).total_seconds() <= 60

    PeriodicJob.objects.filter(pk="testing.jobs.tick").update(next_run_at=timezone.now())
    assert enqueue_due_periodic_jobs(periodic) == ["testing.jobs.tick"]


def test_periods_are_aligned_to_the_clock():
    moment = timezone.now().replace(hour=10, minute=7, second=31, microsecond=5)
    assert period_end(moment, 60) == moment.replace(minute=8, second=0, microsecond=0)
    assert period_end(moment, 3600) == moment.replace(hour=11, minute=0, second=0, microsecond=0)
