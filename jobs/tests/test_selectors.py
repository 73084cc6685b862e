"""What the readiness probe and GET /metrics read about jobs: the queue's depth and live workers."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from jobs import selectors
from jobs.models import WorkerHeartbeat
from testing import jobs as test_jobs

pytestmark = pytest.mark.django_db


def test_queue_depth_counts_the_jobs_a_worker_could_take_now():
    for _ in range(3):
        test_jobs.tick.enqueue()
    later = test_jobs.tick.enqueue()  # waiting out a retry's backoff: not ready yet
    DBTaskResult.objects.filter(pk=later.id).update(run_after=timezone.now() + timedelta(minutes=5))
    taken = test_jobs.tick.enqueue()  # a worker has it
    DBTaskResult.objects.filter(pk=taken.id).update(status=TaskResultStatus.RUNNING)

    assert selectors.queue_depth() == 3


def test_a_worker_is_live_while_its_heartbeat_is_within_the_lease(settings):
    now = timezone.now()
    stale = now - timedelta(seconds=settings.JOB_LEASE_SECONDS + 5)
    for worker_id, beat in (("fresh", now), ("stale", stale)):
        WorkerHeartbeat.objects.create(worker_id=worker_id, hostname="h", pid=1, started_at=stale, last_beat=beat)

    assert selectors.live_workers() == 1
