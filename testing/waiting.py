"""The one way tests wait for something that happens in another process: poll, bounded.

The same helper the scaled-out stack (deploy/stack.py) waits for its servers with."""

from deploy.stack import wait_until

__all__ = ["wait_until"]
