"""`manage.py run_worker`: one background-job worker process (`make serve` starts WORKER_CONCURRENCY)."""

from django.core.management.base import BaseCommand

from jobs.worker import Worker


class Command(BaseCommand):
    help = "Run a background-job worker: takes jobs from the database queue until SIGTERM or Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--queue", default="default", help="Queues to serve, comma-separated; '*' for all.")
        parser.add_argument("--worker-id", default="", help="Unique across the deployment (default: host-pid-random).")
        parser.add_argument("--lease", type=float, default=None, help="Lease in seconds (default JOB_LEASE_SECONDS).")
        parser.add_argument("--interval", type=float, default=None, help="Seconds between polls of an empty queue.")
        parser.add_argument("--max-jobs", type=int, default=None, help="Stop after this many jobs.")
        parser.add_argument("--until-empty", action="store_true", help="Run the jobs ready now, then stop.")

    def handle(self, *, queue, worker_id, lease, interval, max_jobs, until_empty, **options):
        worker = Worker(
            worker_id=worker_id,
            queue_names=tuple(queue.split(",")),
            lease_seconds=lease,
            poll_seconds=interval,
        )
        if until_empty:
            done = worker.run_until_empty()
            self.stdout.write(f"Ran {done} jobs.")
            return
        worker.install_signal_handlers()
        worker.run(max_jobs=max_jobs)
