"""Our own child processes in tests: a free loopback port to give one, and a bounded stop."""

import signal
import subprocess

from deploy.stack import free_port

__all__ = ["free_port", "stop_process"]


def stop_process(process: subprocess.Popen | None, sig=signal.SIGTERM, timeout: float = 10.0) -> None:
    """Send `sig` (SIGTERM: a clean stop), then SIGKILL if the process lingers past `timeout`.
    Only ever a process we started."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)
