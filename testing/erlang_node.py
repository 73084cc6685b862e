"""A real Erlang messaging node for tests: started on a free loopback port, stopped by PID."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import requests

from .processes import free_port, stop_process
from .waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
START_SCRIPT = ROOT / "erlang_messaging" / "bin" / "messaging-start"


class ErlangNode:
    """`with ErlangNode(django_url=..., secret=...) as node:` → node.url is the service's base URL."""

    def __init__(self, *, django_url: str, secret: str, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tempfile.mkdtemp(prefix="messaging-test-")
        self.log_path = Path(self.data_dir) / "node.log"
        self.env = {
            **os.environ,
            "HTTP_PORT": str(self.port),
            "DJANGO_API_URL": django_url,
            "MESSAGING_SHARED_SECRET": secret,
            "MESSAGING_DATA_DIR": self.data_dir,
            "PERSIST_FLUSH_INTERVAL_MS": "50",
            **{key: str(value) for key, value in env.items()},
        }
        self.process = None

    def command(self) -> list[str]:
        """What starts the node: the source tree's start script (a subclass may run a release)."""
        if not START_SCRIPT.exists():
            raise RuntimeError(f"{START_SCRIPT} is missing: build the Erlang service with `make erlang-build`.")
        return [str(START_SCRIPT)]

    def start(self, timeout: float = 30.0) -> "ErlangNode":
        command = self.command()
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        if not wait_until(self._answers_health, seconds=timeout, interval=0.1):
            self.stop()
            raise RuntimeError(f"The Erlang node did not answer /health within {timeout} s.")
        return self

    def _answers_health(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"The Erlang node exited at start:\n{self.log_path.read_text()[-3000:]}")
        try:
            return requests.get(f"{self.url}/health", timeout=0.5).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a clean stop), then SIGKILL if it lingers."""
        stop_process(self.process, timeout=timeout)
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crashed machine would: no clean stop, no flush. start() again reuses
        the same port and data directory, so the node replays its write-ahead log."""
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()
