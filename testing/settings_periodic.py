"""The project's settings plus one periodic test job every second (the scheduler's process test)."""

from portal.settings import *  # noqa: F403

PERIODIC_JOBS = {"testing.jobs.tick": 1}
