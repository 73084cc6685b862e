"""Background jobs: django-tasks with its database backend, plus what it lacks for money work.

django-tasks (Wagtail already depends on it) defines tasks and enqueues them; the
django-tasks-db backend keeps each job as a row in PostgreSQL, next to the money it moves,
so a job enqueued inside a transaction exists exactly when that transaction commits. This
package adds what the engine does not have (see jobs/worker.py):

- a lease: a worker renews a heartbeat; a job whose worker stopped beating (SIGKILL, the
  machine gone) returns to the queue, instead of staying "running" forever;
- retries with exponential backoff up to a maximum, then a failed state staff can see and
  retry from the portal (Operations → Background jobs);
- one periodic scheduler: each periodic job is enqueued once per period whatever the number
  of workers (a conditional UPDATE on its row is the lock).

Jobs run at least once: a worker that dies after a job's work committed but before the job
was marked done runs it again. Every job is therefore idempotent.
"""
