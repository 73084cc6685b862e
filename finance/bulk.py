"""Bulk withdrawal completion: a staff action that starts a batch, and the job that carries it out.

`start_batch` records the batch and its items and enqueues the job in one transaction (the
job row commits with the batch, or neither does). The job, `complete_withdrawal_batch`,
completes the items in order through `staff_actions.complete_withdrawal`, acting as the
person who started the batch, so permission, four-eyes and audit are exactly those of a
single completion. Each item is finished in its own transaction together with the money it
moves, and each uses its own idempotency key (`bulk-<batch>-<withdrawal>`): a worker killed
half-way leaves finished items finished, and the rerun that takes over skips them, or, for
the one it was in the middle of, replays the stored result instead of paying twice.
"""

import uuid
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone
from wagtail.log_actions import log

from jobs.policy import PermanentJobError, job
from jobs.worker import current_attempt

from . import payouts, permissions, staff_actions
from .errors import InvalidStateError, NotFoundError, TransactionError
from .models import Withdrawal, WithdrawalBatch, WithdrawalBatchItem

# How long a finished batch stays on the withdrawals page for everyone to see.
RECENT = timedelta(hours=24)
SHOWN_AT_MOST = 5

Outcome = WithdrawalBatchItem.Outcome


# --- the staff action -------------------------------------------------------------------


def start_batch(*, withdrawal_ids: list[int], actor, idempotency_key: str) -> WithdrawalBatch:
    """Start completing the open withdrawals among `withdrawal_ids`, oldest first, in the background.

    `idempotency_key` (the confirmation's, a UUID) becomes the batch's id: the same key
    again returns the batch it started and starts nothing."""
    permissions.require(actor, permissions.COMPLETE_WITHDRAWAL)
    batch_id = _batch_id(idempotency_key)
    with transaction.atomic():
        earlier = _earlier_batch(batch_id, actor)
        if earlier is not None:
            return earlier
        withdrawals = list(
            Withdrawal.objects.filter(pk__in=withdrawal_ids, status__in=Withdrawal.OPEN_STATUSES)
            .select_related("wallet")
            .order_by("created_at", "id")
        )
        if not withdrawals:
            raise InvalidStateError("Select at least one pending withdrawal first.")
        try:
            with transaction.atomic():
                batch = WithdrawalBatch.objects.create(id=batch_id, created_by=actor, total=len(withdrawals))
        except IntegrityError:
            # The same confirmation posted twice at the same instant: the other request's batch.
            return _earlier_batch(batch_id, actor)
        WithdrawalBatchItem.objects.bulk_create(
            WithdrawalBatchItem(batch=batch, withdrawal=w, position=n) for n, w in enumerate(withdrawals, 1)
        )
        batch.job_id = complete_withdrawal_batch.enqueue(str(batch.pk)).id
        batch.save(update_fields=["job_id"])
        log(
            batch,
            "stayafrica.withdrawal.bulk_complete",
            user=actor,
            data={
                "count": len(withdrawals),
                "references": [w.reference for w in withdrawals],
                "idempotency_key": idempotency_key,
            },
        )
    return batch


def _batch_id(key: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(key))
    except ValueError:
        raise InvalidStateError("This confirmation's key is not valid; confirm again.") from None


def _earlier_batch(batch_id: uuid.UUID, actor) -> WithdrawalBatch | None:
    """The batch this key already started, if any; only its starter's key can name it."""
    earlier = WithdrawalBatch.objects.filter(pk=batch_id).first()
    if earlier is not None and earlier.created_by_id != actor.pk:
        raise InvalidStateError("This confirmation belongs to someone else; confirm again.")
    return earlier


# --- the job --------------------------------------------------------------------------------


@job(label="Bulk withdrawal completion", max_attempts=5, base_delay=2.0, max_delay=60.0)
def complete_withdrawal_batch(batch_id: str) -> dict:
    """Complete the batch's unfinished items in order, then mark it done. Safe to run again."""
    batch = WithdrawalBatch.objects.select_related("created_by").filter(pk=batch_id).first()
    if batch is None:
        raise PermanentJobError(f"Withdrawal batch {batch_id} no longer exists.")
    if batch.status == WithdrawalBatch.Status.DONE:  # a rerun of a finished batch changes nothing
        return summary(batch)
    _set_status(batch, WithdrawalBatch.Status.RUNNING)
    try:
        for item_id in batch.items.filter(outcome=Outcome.PENDING).values_list("pk", flat=True):
            complete_item(batch, item_id)
    except Exception:
        if current_attempt().is_last:  # no retry follows: say so on the withdrawals page
            _set_status(batch, WithdrawalBatch.Status.FAILED, finished=True)
        raise
    _set_status(batch, WithdrawalBatch.Status.DONE, finished=True)
    return summary(batch)


def summary(batch: WithdrawalBatch) -> dict:
    """The job's return value, shown with it on the Background jobs page."""
    counts = WithdrawalBatch.objects.with_counts().get(pk=batch.pk)
    return {"total": counts.total, "completed": counts.completed, "sent": counts.sent}


def complete_item(batch: WithdrawalBatch, item_id: int) -> None:
    """Complete one item and record what became of it, in one transaction with the money.

    The item's row lock makes a second run wait, then see the item finished and skip it. A
    refusal (already completed by someone else, a failed withdrawal, no permission any more)
    is the item's outcome, not the job's failure; it moved nothing."""
    with transaction.atomic():
        item = WithdrawalBatchItem.objects.select_for_update().select_related("withdrawal").get(pk=item_id)
        if item.outcome != Outcome.PENDING:
            return
        try:
            done = staff_actions.complete_withdrawal(
                withdrawal=item.withdrawal,
                actor=batch.created_by,
                idempotency_key=f"bulk-{batch.pk}-{item.withdrawal_id}",
            )
        except TransactionError as error:
            item.outcome, item.message = Outcome.ERROR, error.message
        else:
            if done.needs_approval:
                request = done.approval
                item.outcome = Outcome.NEEDS_APPROVAL
                item.message = f"needs a second approver (request #{request.pk}): {request.approval_reason}"
            elif done.result.status == Withdrawal.Status.COMPLETED:
                item.outcome, item.message = Outcome.COMPLETED, ""
            else:  # a provider's transfer is on its way; its callback settles it
                withdrawal = done.result
                item.outcome = Outcome.SENT
                item.message = f"{payouts.provider_label(withdrawal)} {withdrawal.transfer_reference} on its way"
        item.finished_at = timezone.now()
        item.save(update_fields=["outcome", "message", "finished_at"])


def _set_status(batch: WithdrawalBatch, status: str, *, finished: bool = False) -> None:
    batch.status = status
    batch.finished_at = timezone.now() if finished else None
    batch.save(update_fields=["status", "finished_at"])


# --- reads ----------------------------------------------------------------------------------


def get_batch(batch_id) -> WithdrawalBatch:
    """The batch with its counts (NotFoundError when there is none)."""
    batch = WithdrawalBatch.objects.with_counts().select_related("created_by").filter(pk=batch_id).first()
    if batch is None:
        raise NotFoundError("No such bulk completion.")
    return batch


def recent_batches() -> list[WithdrawalBatch]:
    """What the withdrawals page shows everyone: batches still running and those finished in
    the last day, newest first, a few."""
    since = timezone.now() - RECENT
    return list(WithdrawalBatch.objects.recent(since=since).with_counts().select_related("created_by")[:SHOWN_AT_MOST])


def finished_items(batch: WithdrawalBatch, *, after: int = 0):
    """The batch's finished items in the order they finished, skipping the first `after`
    (those an earlier look already showed)."""
    return list(
        batch.items.exclude(outcome=Outcome.PENDING)
        .order_by("finished_at", "position")
        .select_related("withdrawal__wallet__user", "withdrawal__bank_account")[after:]
    )


def unsuccessful_items(batch: WithdrawalBatch):
    """The items that were not paid out (nor sent to a provider), with their reasons, in the batch's order."""
    return list(
        batch.items.exclude(outcome__in=(Outcome.PENDING, Outcome.COMPLETED, Outcome.SENT)).select_related("withdrawal")
    )
