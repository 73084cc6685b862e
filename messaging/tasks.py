"""Messaging's background jobs: a broadcast's fan-out, and the stats chart's sampler."""

import logging

from jobs.policy import PermanentJobError, job
from jobs.worker import current_attempt

from . import services, stats
from .erlang import ErlangRejected, ErlangUnavailable
from .models import Broadcast

logger = logging.getLogger("messaging")


# Four attempts 5, 10 and 20 s apart (plus jitter): about half a minute of Erlang being away
# before the fallback writes the rows, short enough that a broadcast is never long delayed.
FAN_OUT_ATTEMPTS = 4


@job(label="Broadcast fan-out", max_attempts=FAN_OUT_ATTEMPTS, base_delay=5, max_delay=60)
def fan_out_broadcast(broadcast_id: str) -> str:
    """Hand a recorded broadcast to Erlang, which delivers it and reports progress.

    While Erlang cannot be reached the job raises, and the engine retries it with backoff
    (the broadcast shows 'retrying' and why); on the last attempt the rows are written here
    instead (services.fan_out_here), so no broadcast is lost. Runs at least once: a run that
    finds the broadcast handed over does nothing, and a repeat that reaches Erlang again is
    ignored there (see services.hand_broadcast_to_erlang)."""
    broadcast = Broadcast.objects.filter(pk=broadcast_id).first()
    if broadcast is None:
        raise PermanentJobError("The broadcast no longer exists.")
    if broadcast.handed_over:
        return broadcast.status
    attempt = current_attempt()
    recipients = services.broadcast_recipients(broadcast)
    if not recipients:
        _fail(broadcast, "Nobody is in this audience any more.", attempt.number)
    try:
        services.hand_broadcast_to_erlang(broadcast, recipients, attempt=attempt.number)
    except ErlangRejected as error:  # our request was wrong: no retry can mend it
        _fail(broadcast, str(error), attempt.number)
    except ErlangUnavailable as error:
        if not attempt.is_last:
            services.note_broadcast_retry(broadcast, error, attempt=attempt.number)
            raise
        logger.warning("Erlang still unavailable, writing broadcast %s directly: %s", broadcast.pk, error)
        _fall_back(broadcast, recipients, attempt.number)
    broadcast.refresh_from_db()
    return broadcast.status


def _fall_back(broadcast: Broadcast, recipients: list[int], attempt: int) -> None:
    try:
        services.fan_out_here(broadcast, recipients, attempt=attempt)
    except Exception as error:  # the rows could not be written either: the broadcast failed
        services.note_broadcast_failed(broadcast, f"Could not store the messages directly: {error}", attempt=attempt)
        raise


def _fail(broadcast: Broadcast, reason: str, attempt: int):
    services.note_broadcast_failed(broadcast, reason, attempt=attempt)
    raise PermanentJobError(reason)


@job(label="Messaging stats sample", max_attempts=1, keep_result=False)
def sample_stats() -> None:
    """One sample of Erlang's /stats into the cache ring the portal's chart reads (periodic)."""
    stats.take_sample()
