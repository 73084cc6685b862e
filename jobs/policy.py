"""How a job is retried: declared once, next to the job's function, with `@job(...)`."""

import random
from dataclasses import dataclass

from django_tasks import task


class PermanentJobError(Exception):
    """A failure no retry can mend (the job's object is gone, its input is invalid): the job
    fails at once, whatever attempts it has left."""


@dataclass(frozen=True)
class RetryPolicy:
    label: str = ""
    max_attempts: int = 5
    base_delay: float = 2.0  # seconds before the second attempt; doubled for each one after
    max_delay: float = 600.0
    keep_result: bool = True  # False: a finished run leaves no row (frequent periodic jobs)

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after `failed_attempts` failures: base × 2^(n−1), capped, plus up to
        10% jitter so jobs that failed together do not all come back in the same instant."""
        delay = min(self.max_delay, self.base_delay * 2 ** (failed_attempts - 1))
        return delay * (1 + random.random() / 10)


DEFAULT_POLICY = RetryPolicy(max_attempts=3)
_POLICIES: dict[str, RetryPolicy] = {}


def job(
    *,
    label: str,
    max_attempts: int = 5,
    base_delay: float = 2.0,
    max_delay: float = 600.0,
    keep_result: bool = True,
    **task_options,
):
    """`@job(label="Receipt e-mail", max_attempts=6)` over a module-level function: a django-tasks
    Task (call `.enqueue(...)`) whose failures the worker retries under this policy."""

    def decorate(function):
        registered = task(**task_options)(function)
        _POLICIES[registered.module_path] = RetryPolicy(
            label=label, max_attempts=max_attempts, base_delay=base_delay, max_delay=max_delay, keep_result=keep_result
        )
        return registered

    return decorate


def policy_for(task_path: str) -> RetryPolicy:
    """The policy of a task declared with @job; tasks from elsewhere (Wagtail's) get the default."""
    return _POLICIES.get(task_path, DEFAULT_POLICY)


def label_for(task_path: str) -> str:
    policy = _POLICIES.get(task_path)
    if policy and policy.label:
        return policy.label
    return task_path.rsplit(".", 1)[-1].replace("_", " ").capitalize()
