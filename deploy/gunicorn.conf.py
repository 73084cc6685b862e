"""gunicorn's configuration for the portal: the one `make serve` and the tests use.

Every setting comes from the environment, with a default for one machine:
  WEB_BIND          address:port to listen on (127.0.0.1:8000)
  WEB_CONCURRENCY   worker processes (2 × cores + 1, gunicorn's own rule of thumb)
  WEB_TIMEOUT       seconds a request may take before its worker is replaced (30)
  TRUSTED_PROXIES   the reverse proxies whose X-Forwarded-Proto gunicorn believes; the
                    same list tells Django whose X-Forwarded-For to believe
  WEB_ACCESS_LOG    where the access log goes: "-" (stdout, the default), a file, or empty
                    for none (when the proxy in front keeps one, or for a benchmark)
  PROMETHEUS_MULTIPROC_DIR
                    where the workers write their Prometheus counters, summed by GET /metrics
                    (portal/metrics.py). It must be empty when gunicorn starts: deploy/serve
                    and deploy/stack.py make a fresh one; unset, this file makes one for this
                    gunicorn (removed when it exits)
  LOG_FORMAT        json (the default with DEBUG off) or plain: gunicorn's error and access
                    lines look like Django's (portal/log_format.py, deploy/gunicorn_logging.py)
"""

import multiprocessing
import os
import shutil
import tempfile

wsgi_app = "portal.wsgi:application"
bind = os.environ.get("WEB_BIND", "127.0.0.1:8000").split(",")
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count() + 1))

# Sync workers: each request has a process to itself, and the database connection it
# uses (a money movement holds row locks only inside one request's transaction).
worker_class = "sync"
timeout = int(os.environ.get("WEB_TIMEOUT", 30))
graceful_timeout = 20
keepalive = 5

# Recycle workers now and then, so a slow leak never grows into an outage; the jitter
# keeps them from restarting all at once. A new worker imports the whole application
# again (about a second of CPU), and a busy worker serves a few hundred requests a second:
# at 2000 requests each worker was replaced every few seconds under load, and the workers
# of one server, started together and fed alike, were replaced at the same moment, so for
# a second or two none answered (bench/stack.py saw requests wait over 2 s). Ten times
# that, with the jitter as wide as half of it, recycles a busy worker every minute or two
# and almost never two of one server together.
max_requests = 20000
max_requests_jitter = 10000

# Only a proxy we trust may say the original request was HTTPS.
forwarded_allow_ips = os.environ.get("TRUSTED_PROXIES", "")

# No control socket: its default path is one per user, so several app servers on one
# machine (and parallel tests) would fight over it; gunicorn is managed by signals.
control_socket_disable = True

# Logs to stdout/stderr: the process manager (or `make serve`'s terminal) keeps them.
# WEB_ACCESS_LOG="" turns the access log off (None is gunicorn's "no access log").
accesslog = os.environ.get("WEB_ACCESS_LOG", "-") or None
# JSON lines with DEBUG off, like Django's own (settings.LOG_FORMAT); an access line carries
# the request id Django answered with, the same as on every line the request logged. Either
# way a secret in a query string (the M-Pesa callback's token) is written as "[redacted]".
_debug = os.environ.get("DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}
_log_format = os.environ.get("LOG_FORMAT", "").strip().lower() or ("plain" if _debug else "json")
logger_class = "deploy.gunicorn_logging.JsonLogger" if _log_format == "json" else "deploy.gunicorn_logging.Logger"
# The plain line: gunicorn's default, the request id, and the worker that served it.
access_log_format = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" request_id=%({x-request-id}o)s worker=%(p)s'
)
errorlog = "-"
loglevel = os.environ.get("WEB_LOG_LEVEL", "info")
proc_name = "stayafrica-portal"


# --- Prometheus, multiprocess mode ---------------------------------------------------------
# Every worker is a process with its own counters: prometheus-client keeps each worker's in a
# file of this directory, and a scrape sums them all, whichever worker answers it. Counts left
# by an earlier gunicorn would be summed too, hence a fresh directory for each start. Set here,
# in the master, before any worker is forked, so every worker inherits it.
# Which directory this gunicorn made (to remove at exit), kept in the environment because a
# reload (SIGHUP) reads this file again.
OWN_METRICS_DIR = "GUNICORN_OWN_PROMETHEUS_DIR"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ[OWN_METRICS_DIR] = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
        prefix="stayafrica-prometheus-"
    )


def child_exit(server, worker):
    """A worker exited (recycled after max_requests, timed out, killed): prometheus-client drops
    its live gauges' files. Its counters stay in the directory and keep being summed."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if os.environ.get(OWN_METRICS_DIR):
        shutil.rmtree(os.environ[OWN_METRICS_DIR], ignore_errors=True)
