"""The one way tests wait for something that happens in another process: poll, bounded."""

import time


def wait_until(condition, seconds: float = 10.0, interval: float = 0.05) -> bool:
    """Call `condition` until it returns something true or `seconds` pass; return whether it did.

    The loop always ends: tests assert on the result instead of hanging on a service that
    never answers."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False
