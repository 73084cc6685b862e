"""Real background-job worker processes for tests: `manage.py run_worker` against the test database.

Tests that use them need committed rows (the `transactional_db` fixture), since a worker is
another process with its own connection. Stopped by PID only.
"""

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .processes import stop_process
from .web_server import ROOT, test_database_url


class JobWorkerProcess:
    """`with JobWorkerProcess(lease=3) as worker:` runs one worker until the block ends.

    `env` overrides environment variables (e.g. DJANGO_SETTINGS_MODULE, REDIS_URL)."""

    def __init__(self, *, lease: int = 3, interval: float = 0.05, **env):
        self.args = [sys.executable, "manage.py", "run_worker", "--lease", str(lease), "--interval", str(interval)]
        self.env = {
            **os.environ,
            "DEBUG": "true",
            "DATABASE_URL": test_database_url(),
            "PYTHONUNBUFFERED": "1",
            "FINANCE_LOG_LEVEL": "WARNING",
            **{key: str(value) for key, value in env.items()},
        }
        self.log_path = Path(tempfile.mkstemp(prefix="job-worker-test-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None

    def start(self) -> "JobWorkerProcess":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: the worker gets no chance to tidy up, as when a machine dies."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 30) -> int | None:
        stop_process(self.process, signal.SIGTERM, timeout=timeout)
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text()

    def __enter__(self) -> "JobWorkerProcess":
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        self.log_path.unlink(missing_ok=True)
