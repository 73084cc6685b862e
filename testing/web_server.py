"""The production profile for tests: gunicorn with `deploy/gunicorn.conf.py`, and `deploy/serve`.

Both run as our own child processes on free loopback ports, against the test database
pytest-django created and a Redis key prefix of their own, and are stopped by PID.
"""

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

import requests
from django.db import connection

from .processes import free_port, stop_process
from .production_secrets import PRODUCTION_SECRETS
from .waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"
SERVE_SCRIPT = ROOT / "deploy" / "serve"

# HTTPS is terminated in front of the app: a load balancer says so in this header, and the
# tests that talk to gunicorn directly send it too (plain HTTP is redirected).
BEHIND_TLS = {"X-Forwarded-Proto": "https"}


def redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def test_database_url() -> str:
    """The database this test process uses (pytest-django's test database), as a DATABASE_URL."""
    db = connection.settings_dict
    user, host, port = db["USER"] or "postgres", db["HOST"] or "127.0.0.1", db["PORT"] or 5432
    if db["PASSWORD"]:
        user = f"{user}:{quote(db['PASSWORD'], safe='')}"
    return f"postgres://{user}@{host}:{port}/{db['NAME']}"


# The production secrets include the providers' keys, so a stack's periodic jobs (the
# reconciliation fetch) would call the real providers: their APIs point at a loopback port
# nothing listens on instead (refused at once). A test with a recorded server passes its URL.
UNREACHABLE_PROVIDER_APIS = {
    name: "http://127.0.0.1:9" for name in ("PAYSTACK_API_URL", "FLUTTERWAVE_API_URL", "STRIPE_API_URL")
}


def production_environment(**overrides) -> dict:
    """DEBUG off with private secrets, the test database, Redis under a prefix no other test or run shares."""
    database_url = test_database_url()
    env = {
        **os.environ,
        "DEBUG": "false",
        **PRODUCTION_SECRETS,
        **UNREACHABLE_PROVIDER_APIS,
        "SANDBOX_PAYMENTS_ENABLED": "false",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url(),
        "CACHE_KEY_PREFIX": f"test-{uuid.uuid4().hex}",
        "PYTHONUNBUFFERED": "1",
    }
    env.update({key: str(value) for key, value in overrides.items()})
    return env


def collect_static(static_root: Path) -> None:
    """What `make serve` does before starting: hashed, compressed copies in static_root."""
    env = production_environment(STATIC_ROOT=static_root)
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


def _answers(url: str, process: subprocess.Popen, log_path: Path) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"{process.args[0]} exited at start:\n{log_path.read_text()[-3000:]}")
    try:
        return requests.get(url, headers=BEHIND_TLS, timeout=1).status_code < 500
    except requests.RequestException:
        return False


class Gunicorn:
    """`with Gunicorn(workers=3, STATIC_ROOT=...) as server:` → server.url serves the portal.

    It counts as started once `ready_path` answers below 500 (the sign-in page; the liveness
    probe for a server whose database is meant to be unreachable)."""

    def __init__(self, *, workers: int = 1, ready_path: str = "/admin/login/", **env):
        self.ready_path = ready_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix="gunicorn-test-", suffix=".log")[1])
        self.env = production_environment(WEB_BIND=f"127.0.0.1:{self.port}", WEB_CONCURRENCY=workers, **env)
        self.process = None

    def __enter__(self) -> "Gunicorn":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "--config", str(GUNICORN_CONFIG)],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if not wait_until(lambda: _answers(self.url + self.ready_path, self.process, self.log_path), seconds=30):
            stop_process(self.process, timeout=30)
            raise RuntimeError(f"gunicorn did not answer within 30 s:\n{self.log_path.read_text()[-3000:]}")
        return self

    def __exit__(self, *exc):
        stop_process(self.process, timeout=30)
        self.log_path.unlink(missing_ok=True)

    def log(self) -> str:
        return self.log_path.read_text()


def access_lines(server: "Gunicorn") -> list[dict]:
    """gunicorn's access log lines (JSON: the production profile's LOG_FORMAT), whole lines only."""
    log = server.log()
    lines = [json.loads(line) for line in log[: log.rfind("\n") + 1].splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "gunicorn.access"]


def workers_that_served(server: "Gunicorn", method: str, path: str) -> set[int]:
    """The PIDs of the gunicorn workers whose access lines show `method path`."""
    return {line["worker_pid"] for line in access_lines(server) if (line["method"], line["path"]) == (method, path)}
