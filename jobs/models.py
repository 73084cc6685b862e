"""What the worker keeps beside django-tasks-db's own job rows (DBTaskResult)."""

from django.conf import settings
from django.db import models
from django_tasks_db.models import DBTaskResult


class WorkerHeartbeat(models.Model):
    """A worker process's lease: renewed every few seconds while it lives. A running job whose
    worker's beat is older than JOB_LEASE_SECONDS is taken back (jobs.worker.reap_expired_leases)."""

    worker_id = models.CharField(max_length=64, primary_key=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_beat = models.DateTimeField(db_index=True)

    def __str__(self):
        return f"worker {self.worker_id} on {self.hostname} (pid {self.pid})"


class JobRecord(models.Model):
    """A job's attempts under its retry policy and its last error, in words staff can read."""

    task_result = models.OneToOneField(DBTaskResult, primary_key=True, on_delete=models.CASCADE, related_name="record")
    attempts = models.PositiveIntegerField(default=0, help_text="Attempts since it was enqueued or last retried.")
    max_attempts = models.PositiveIntegerField(default=1)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    retried_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    retried_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "background job"
        permissions = [("retry_job", "Can retry failed background jobs")]

    def __str__(self):
        return f"job {self.task_result_id}"


class PeriodicJob(models.Model):
    """One row per periodic job: the next time it is due. Whoever moves `next_run_at` forward
    (a conditional UPDATE) enqueues that period's run; every other worker's UPDATE finds it
    already moved and does nothing."""

    task_path = models.CharField(max_length=200, primary_key=True)
    every_seconds = models.PositiveIntegerField()
    next_run_at = models.DateTimeField()
    last_run_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.task_path} every {self.every_seconds} s"


class CheckResult(models.Model):
    """The last result of a periodic check (finance.tasks.check_ledger: the ledger's invariants), one
    row per check. In the database, so every process reports the same: GET /metrics reads it at
    each scrape (ledger_check_ok, ledger_check_last_run_timestamp_seconds)."""

    name = models.CharField(max_length=64, primary_key=True)
    ok = models.BooleanField()
    ran_at = models.DateTimeField()
    failures = models.JSONField(default=list, blank=True, help_text="The names of the checks that failed.")

    def __str__(self):
        return f"{self.name} check: {'ok' if self.ok else 'failed'} at {self.ran_at:%Y-%m-%d %H:%M:%S}"
