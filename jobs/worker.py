"""The worker: takes jobs one at a time from the database queue, under a lease, retrying failures.

A worker process runs `Worker.run()`. Each turn of its loop it
  1. enqueues the periodic jobs that are due (jobs.scheduler),
  2. takes back running jobs whose worker's lease expired (a heartbeat older than
     JOB_LEASE_SECONDS: that worker was killed, or its machine is gone),
  3. claims the next ready job with a row lock (SELECT ... FOR UPDATE SKIP LOCKED, so any
     number of workers on any number of machines never take the same job) and runs it.
A failed job goes back to the queue after an exponential backoff until its policy's
maximum attempts (jobs.policy), then stays failed, with its error, for staff to retry.

A thread of the worker renews its heartbeat while a job runs, so a long job keeps its
lease; only a worker that stopped altogether loses it. SIGTERM or SIGINT lets the current
job finish, then the worker stops; a second one interrupts the job, which goes back to the
queue as it was.
"""

import contextvars
import logging
import os
import signal
import socket
import threading
import traceback
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.db import close_old_connections, connection, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.crypto import get_random_string
from django_tasks_db.compat import TaskContext, TaskResultStatus
from django_tasks_db.models import DBTaskResult, get_date_max
from django_tasks_db.utils import exclusive_transaction

import request_context

from .models import JobRecord, WorkerHeartbeat
from .policy import PermanentJobError, RetryPolicy, policy_for
from .scheduler import enqueue_due_periodic_jobs

logger = logging.getLogger("jobs")

# How often, at most, the loop runs the scheduler while jobs keep it busy.
SCHEDULER_SECONDS = 0.5


@dataclass(frozen=True)
class Attempt:
    """What a running job may ask about itself (jobs.worker.current_attempt())."""

    number: int
    max_attempts: int

    @property
    def is_last(self) -> bool:
        return self.number >= self.max_attempts


_current_attempt: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar("current_attempt", default=None)


def current_attempt() -> Attempt:
    """The attempt the running job is on; outside a worker (a direct call), the only one."""
    return _current_attempt.get() or Attempt(number=1, max_attempts=1)


def drop_broken_connection() -> None:
    """A job whose database connection broke (a restart, a network cut) leaves it unusable;
    closing it lets the worker's next query open a fresh one instead of failing too."""
    if connection.connection is not None and not connection.in_atomic_block and not connection.is_usable():
        connection.close()


def job_request_id(result: DBTaskResult, record: JobRecord) -> str:
    """`job:<job id>:<attempt>`: grepping `job:<job id>` finds every attempt."""
    return f"job:{result.pk}:{record.attempts}"


def describe(error: BaseException) -> str:
    """The error as staff read it: its type and message, never a traceback."""
    message = str(error).strip()
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


class Worker:
    def __init__(
        self,
        *,
        worker_id: str = "",
        queue_names: tuple[str, ...] = ("default",),
        backend_name: str = "default",
        lease_seconds: float | None = None,
        poll_seconds: float | None = None,
        periodic: dict[str, int] | None = None,
    ):
        self.worker_id = worker_id or f"{socket.gethostname()[:30]}-{os.getpid()}-{get_random_string(8)}"
        self.queue_names = list(queue_names)
        self.backend_name = backend_name
        self.lease_seconds = lease_seconds if lease_seconds is not None else settings.JOB_LEASE_SECONDS
        self.poll_seconds = poll_seconds if poll_seconds is not None else settings.JOB_POLL_SECONDS
        self.periodic = settings.PERIODIC_JOBS if periodic is None else periodic
        self._known_periodic: set[str] = set()
        self._last_scheduled = self._last_reaped = 0.0
        self._stop = threading.Event()
        self._running_job = False
        self._heartbeat_thread: threading.Thread | None = None

    # --- the loop -------------------------------------------------------------------

    def run(self, *, max_jobs: int | None = None) -> None:
        """Serve the queue until stopped by a signal (or after `max_jobs` jobs)."""
        self.beat()  # before the first claim: a job of ours is never mistaken for an orphan
        self._heartbeat_thread = threading.Thread(target=self._keep_beating, name="heartbeat", daemon=True)
        self._heartbeat_thread.start()
        logger.info(
            "worker %s started (queues %s, lease %s s)", self.worker_id, ",".join(self.queue_names), self.lease_seconds
        )
        done = 0
        try:
            while not self._stop.is_set():
                close_old_connections()
                self.housekeeping()
                if self.run_one():
                    done += 1
                    if max_jobs is not None and done >= max_jobs:
                        break
                else:
                    self._stop.wait(self.poll_seconds)
        finally:
            self._stop.set()
            WorkerHeartbeat.objects.filter(worker_id=self.worker_id).delete()
            logger.info("worker %s stopped after %s jobs", self.worker_id, done)

    def run_until_empty(self) -> int:
        """Run every job that is ready now, in this thread, then return how many ran.

        For `run_worker --until-empty` and for tests that drain the queue inside their own
        transaction: no heartbeat thread (the beat is written once, on this connection)."""
        self.beat()
        done = 0
        self.housekeeping(force=True)
        while self.run_one():
            done += 1
        WorkerHeartbeat.objects.filter(worker_id=self.worker_id).delete()
        return done

    def housekeeping(self, *, force: bool = False) -> None:
        now = timezone.now().timestamp()
        if force or now - self._last_scheduled >= SCHEDULER_SECONDS:
            self._last_scheduled = now
            enqueue_due_periodic_jobs(self.periodic, self._known_periodic)
        if force or now - self._last_reaped >= self.lease_seconds / 3:
            self._last_reaped = now
            self.reap_expired_leases()

    # --- signals --------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self._stop.is_set() and self._running_job:
            logger.warning("worker %s: %s again, interrupting the job", self.worker_id, signal.strsignal(signum))
            raise KeyboardInterrupt
        logger.info("worker %s: %s, stopping after the current job", self.worker_id, signal.strsignal(signum))
        self._stop.set()

    # --- the lease ------------------------------------------------------------------

    def beat(self) -> None:
        if not WorkerHeartbeat.objects.filter(worker_id=self.worker_id).update(last_beat=Now()):
            WorkerHeartbeat.objects.create(
                worker_id=self.worker_id,
                hostname=socket.gethostname()[:255],
                pid=os.getpid(),
                started_at=timezone.now(),
                last_beat=Now(),
            )

    def _keep_beating(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                self.beat()
            except Exception:  # the database is away; the next beat tries again
                logger.exception("worker %s could not renew its heartbeat", self.worker_id)
            finally:
                connection.close()  # this thread's own connection; not held between beats

    def reap_expired_leases(self) -> int:
        """Take back running jobs whose worker stopped beating; return how many."""
        expired = Now() - timedelta(seconds=self.lease_seconds)
        live = set(WorkerHeartbeat.objects.filter(last_beat__gte=expired).values_list("worker_id", flat=True))
        taken_back = 0
        running = DBTaskResult.objects.running().filter(backend_name=self.backend_name, started_at__lt=expired)
        with exclusive_transaction(running.db):
            for result in running.select_for_update(skip_locked=True):
                owner = result.worker_ids[-1] if result.worker_ids else ""
                if owner in live:
                    continue
                self._record_failure(
                    result,
                    JobRecord.objects.get_or_create(task_result=result)[0],
                    policy_for(result.task_path),
                    f"Its worker ({owner or 'unknown'}) stopped while running it (lease expired).",
                    error=None,
                    delay=0,
                )
                taken_back += 1
        WorkerHeartbeat.objects.filter(last_beat__lt=Now() - timedelta(days=1)).delete()
        if taken_back:
            logger.warning("worker %s took back %s jobs whose worker stopped", self.worker_id, taken_back)
        return taken_back

    # --- one job --------------------------------------------------------------------

    def run_one(self) -> bool:
        """Claim the next ready job and run it; False when none is ready."""
        claimed = self._claim()
        if claimed is None:
            return False
        result, record = claimed
        # The job's own id on every line it logs and every call it makes, as a request's id is.
        with request_context.serving(job_request_id(result, record)):
            self._execute(result, record)
        return True

    def _claim(self) -> tuple[DBTaskResult, JobRecord] | None:
        ready = DBTaskResult.objects.ready().filter(backend_name=self.backend_name)
        if "*" not in self.queue_names:
            ready = ready.filter(queue_name__in=self.queue_names)
        with exclusive_transaction(ready.db):
            result = ready.get_locked()
            if result is None:
                return None
            result.claim(self.worker_id)
            record, _ = JobRecord.objects.get_or_create(
                task_result=result, defaults={"max_attempts": policy_for(result.task_path).max_attempts}
            )
            JobRecord.objects.filter(pk=record.pk).update(attempts=F("attempts") + 1)
            record.attempts += 1
        return result, record

    def _execute(self, result: DBTaskResult, record: JobRecord) -> None:
        policy = policy_for(result.task_path)
        try:
            task = result.task
        except (ImportError, SuspiciousOperation) as error:
            self._record_failure(result, record, policy, describe(error), error=error, delay=None)
            return
        token = _current_attempt.set(Attempt(number=record.attempts, max_attempts=record.max_attempts))
        self._running_job = True
        try:
            args, kwargs = result.args_kwargs["args"], result.args_kwargs["kwargs"]
            if task.takes_context:
                value = task.call(TaskContext(task_result=result.task_result), *args, **kwargs)
            else:
                value = task.call(*args, **kwargs)
        except KeyboardInterrupt:
            self._put_back_interrupted(result, record)
            raise
        except Exception as error:
            drop_broken_connection()
            delay = None if isinstance(error, PermanentJobError) else policy.delay(record.attempts)
            self._record_failure(result, record, policy, describe(error), error=error, delay=delay)
        else:
            self._record_success(result, policy, value)
        finally:
            self._running_job = False
            _current_attempt.reset(token)

    def _record_success(self, result: DBTaskResult, policy: RetryPolicy, value) -> None:
        if not policy.keep_result:
            result.delete()
            return
        try:
            result.set_successful(value)
        except Exception as error:  # a return value JSON cannot hold
            self._record_failure(result, result.record, policy, describe(error), error=error, delay=None)

    def _record_failure(
        self, result: DBTaskResult, record: JobRecord, policy: RetryPolicy, message: str, *, error, delay
    ) -> None:
        """Back to the queue after `delay` seconds while attempts remain (delay None: never)."""
        now = timezone.now()
        retry = delay is not None and record.attempts < record.max_attempts
        with transaction.atomic():
            JobRecord.objects.filter(pk=record.pk).update(last_error=message, last_error_at=now)
            if retry:
                DBTaskResult.objects.filter(pk=result.pk).update(
                    status=TaskResultStatus.READY,
                    run_after=now + timedelta(seconds=delay) if delay else get_date_max(),
                )
            else:
                DBTaskResult.objects.filter(pk=result.pk).update(
                    status=TaskResultStatus.FAILED,
                    finished_at=now,
                    exception_class_path=f"{type(error).__module__}.{type(error).__qualname__}" if error else "",
                    traceback="".join(traceback.format_exception(error)) if error else message,
                )
        if retry:
            logger.warning(
                "job %s (%s) attempt %s of %s failed, retrying in %.1f s: %s",
                result.pk,
                result.task_path,
                record.attempts,
                record.max_attempts,
                delay or 0,
                message,
            )
        else:
            logger.error(
                "job %s (%s) failed after %s attempts: %s", result.pk, result.task_path, record.attempts, message
            )

    def _put_back_interrupted(self, result: DBTaskResult, record: JobRecord) -> None:
        """A second signal stopped the job half-way: it goes back as it was, the attempt not counted."""
        drop_broken_connection()
        DBTaskResult.objects.filter(pk=result.pk).update(status=TaskResultStatus.READY, run_after=get_date_max())
        JobRecord.objects.filter(pk=record.pk).update(attempts=F("attempts") - 1)
