"""Refunds that reach the guest: the provider side of `TransactionService.process_refund`.

`process_refund` posts a refund to "refunds payable" and, in the same transaction, opens its
ProviderRefund (`open_provider_refund`): queued at the provider that took the payment when
that provider refunds through its API and is on, else "manual" (staff pay the guest by other
means and mark it refunded). For a provider, a job (`send_refund`) creates the refund there;
the provider's signed callback (`apply_refund_event`), the job's own answer, or a query after
REFUND_QUERY_AFTER_MINUTES (`query_stuck_refunds`) settles it.

`settle_refund` is the one place a refund's outcome becomes money. It runs under the
ProviderRefund's row lock, so whatever order the callbacks, the job's answer and the query's
answers come in, and however many times, the money moves once: success takes the amount out
of refunds payable (TransactionService.settle_provider_refund), failure keeps it there with
the provider's words for staff, who may retry (a new reference) or mark it paid by hand.
A repeat is "already"; a contradiction is reported, never applied.

Provider HTTP never runs inside a database transaction: the job and the query read the
refund, call the provider, then record the answer in a short transaction of their own. The
job first marks the refund as being sent (`sent_at`), under the same condition a reversal
checks under the lock, so a refund being sent can no longer be reversed.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from jobs.policy import PermanentJobError, job
from jobs.worker import describe

from . import ledger
from .errors import InvalidStateError, NotFoundError
from .models import Payment, ProviderRefund, WalletTransaction, WebhookEvent
from .money import format_money
from .payouts import failed_send
from .providers import PROVIDERS, is_enabled
from .providers.base import (
    FAILED,
    PENDING,
    SUCCESS,
    MalformedEventError,
    ProviderEvent,
    RefundRefusedError,
    RefundResult,
    major_amount,
)
from .services import TransactionService

logger = logging.getLogger("finance.refunds")

MANUAL = "manual"
Status = ProviderRefund.Status
# How many refunds one run of query_stuck_refunds asks about (the rest wait for the next run).
QUERY_BATCH = 50

LABELS = {
    MANUAL: "Manual refund",
    "paystack": "Paystack",
    "flutterwave": "Flutterwave",
    "stripe": "Stripe",
    "mpesa": "M-Pesa",
    "sandbox": "Sandbox",
}


def provider_label(refund: ProviderRefund) -> str:
    return LABELS.get(refund.provider, refund.provider)


def refund_route(payment: Payment) -> str:
    """Who pays a refund of `payment` back: its provider when that provider refunds through
    its API and is on, else MANUAL."""
    provider = PROVIDERS.get(payment.provider)
    if provider is not None and provider.refunds_by_api and is_enabled(payment.provider):
        return payment.provider
    return MANUAL


# --- opening and sending -------------------------------------------------------------------


def open_provider_refund(payment: Payment, txn: WalletTransaction) -> ProviderRefund:
    """The refund transaction `txn`'s journey at the provider, queued; its send job is enqueued
    in the same transaction (it runs once the refund has committed). Call inside process_refund."""
    refund = ProviderRefund(
        transaction=txn,
        payment=payment,
        provider=refund_route(payment),
        amount=Decimal(txn.metadata["refund_amount"]),
        currency=txn.currency,
    )
    refund.refund_reference = refund.stable_refund_reference()
    refund.save()
    if refund.provider != MANUAL:
        send_refund.enqueue(refund.pk, refund.attempt)
    return refund


def _lock(refund_id: int) -> ProviderRefund:
    locked = (
        ProviderRefund.objects.select_for_update(of=("self",))
        .select_related("payment", "transaction")
        .filter(pk=refund_id)
        .first()
    )
    if locked is None:
        raise NotFoundError("Refund not found.")
    return locked


@job(label="Send refund", max_attempts=5, base_delay=5.0, max_delay=300.0)
def send_refund(refund_id: int, attempt: int = 1) -> dict:
    """Create the refund at its provider and record the answer. `attempt` is the refund's
    attempt this job sends: a job left over from an earlier attempt sends nothing.

    An unreachable provider is retried by the worker with the same reference (Paystack, which
    takes no idempotency key, first looks for a refund already carrying our reference); after
    the last attempt the refund stays queued with the error, and query_stuck_refunds asks the
    provider about it. A refusal fails the refund with the provider's words."""
    refund = ProviderRefund.objects.select_related("payment", "transaction").filter(pk=refund_id).first()
    if refund is None:
        raise PermanentJobError(f"Refund {refund_id} no longer exists.")
    if refund.attempt != attempt or refund.status != Status.QUEUED:
        return {"refund": refund.refund_reference, "skipped": f"attempt {refund.attempt}, {refund.status}"}
    provider = PROVIDERS.get(refund.provider)
    if provider is None or not provider.refunds_by_api:
        raise PermanentJobError(f"No provider {refund.provider!r} refunds {refund.refund_reference}.")
    if not _mark_sending(refund):
        return {"refund": refund.refund_reference, "skipped": "no longer queued"}
    try:
        result = provider.send_refund(refund)
    except RefundRefusedError as error:
        reason = f"{provider_label(refund)} refused the refund: {error.message}"
        settled = settle_refund(refund.pk, status=FAILED, reason=reason)
        return {"refund": refund.refund_reference, "refused": error.message, "settled": settled.what}
    except Exception as error:
        message, hand_to_query = failed_send(error, provider=provider_label(refund), reference=refund.refund_reference)
        _record_send_error(refund.pk, message)
        if hand_to_query:
            return {"refund": refund.refund_reference, "handed_to_query": message}
        raise
    settled = record_refund_answer(refund.pk, result)
    return {"refund": refund.refund_reference, "status": result.status, "settled": settled.what}


def _mark_sending(refund: ProviderRefund) -> bool:
    """Record that a send of this attempt started (kept from the first try on), if the refund is
    still queued for it; False when it is not (reversed or settled meanwhile: send nothing).
    `refund.sent_at` keeps its earlier value: set, it tells the provider this is a re-send."""
    with transaction.atomic():
        return bool(
            ProviderRefund.objects.filter(pk=refund.pk, status=Status.QUEUED, attempt=refund.attempt).update(
                sent_at=Coalesce(F("sent_at"), Value(timezone.now())), updated_at=timezone.now()
            )
        )


def _record_send_error(refund_id: int, message: str) -> None:
    with transaction.atomic():
        ProviderRefund.objects.filter(pk=refund_id, status__in=(Status.QUEUED, Status.PROCESSING)).update(
            last_error=message, updated_at=timezone.now()
        )
    logger.warning("refund %s not sent: %s", refund_id, message)


def record_refund_answer(refund_id: int, result: RefundResult, *, checked: bool = False) -> "Settlement":
    """Keep what the provider said about a refund (its id; accepted → processing; a send error
    cleared) and settle a final answer, in one short transaction under the refund's row lock."""
    with transaction.atomic():
        locked = _lock(refund_id)
        fields = []
        if result.provider_refund_id and not locked.provider_refund_id:
            locked.provider_refund_id = result.provider_refund_id[:100]
            fields.append("provider_refund_id")
        final = result.status in (SUCCESS, FAILED)
        if locked.status == Status.QUEUED and (final or result.provider_refund_id):
            # Accepted by the provider (a query that found nothing leaves it queued).
            locked.status = Status.PROCESSING
            locked.sent_at = locked.sent_at or timezone.now()
            fields += ["status", "sent_at"]
        if locked.last_error and locked.is_open and (final or not checked):
            locked.last_error = ""
            fields.append("last_error")
        if checked:
            locked.checked_at = timezone.now()
            fields.append("checked_at")
        if fields:
            locked.save(update_fields=[*fields, "updated_at"])
        if not final:
            if locked.status == Status.CANCELLED and result.provider_refund_id:
                logger.error(
                    "refund %s was reversed, yet %s accepted it (%s): check the guest was not paid twice",
                    locked.refund_reference,
                    provider_label(locked),
                    result.provider_refund_id,
                )
            return Settlement(locked, PENDING_STILL, "")
        return _settle_locked(locked, status=result.status, reason=result.failure_reason, actor=None)


# --- settling -------------------------------------------------------------------------------

# What settle_refund did.
SETTLED, FAILED_NOW, ALREADY, CONTRADICTION, PENDING_STILL = "settled", "failed", "already", "contradiction", "pending"


@dataclass
class Settlement:
    refund: ProviderRefund
    what: str  # SETTLED, FAILED_NOW, ALREADY, CONTRADICTION or PENDING_STILL
    message: str  # for staff: what happened, or what to check


def settle_refund(refund_id: int, *, status: str, reason: str = "", actor=None) -> Settlement:
    """Turn a refund's final outcome (SUCCESS or FAILED, with the provider's `reason`) into
    money, once, in its own transaction under the refund's row lock (see the module's doc)."""
    with transaction.atomic():
        return _settle_locked(_lock(refund_id), status=status, reason=reason, actor=actor)


def _settle_locked(locked: ProviderRefund, *, status: str, reason: str, actor) -> Settlement:
    label = provider_label(locked)
    ref = locked.refund_reference
    amount = format_money(locked.amount, locked.currency)
    if status == SUCCESS:
        if locked.is_open:
            earlier = locked.failure_reason if locked.status == Status.FAILED else ""
            done = TransactionService.settle_provider_refund(locked, actor=actor)
            message = f"Refund {ref} settled: {label} paid {amount} back to the guest."
            if earlier:
                message += f" (It had been reported failed: {earlier})"
            return Settlement(done, SETTLED, message)
        if locked.status == Status.SUCCEEDED:
            return Settlement(locked, ALREADY, f"Refund {ref} was already settled.")
        return Settlement(
            locked,
            CONTRADICTION,
            f"{label} reports refund {ref} paid, but it was cancelled when its refund transaction "
            f"{locked.transaction.reference} was reversed: the guest may have {amount} they are not owed. "
            "Check the refund with the provider.",
        )
    reason = (reason or "").strip() or f"{label} reported the refund failed."
    if locked.status in (Status.QUEUED, Status.PROCESSING):
        locked.status = Status.FAILED
        locked.failure_reason = reason
        locked.save(update_fields=["status", "failure_reason", "updated_at"])
        ledger.audit(
            action="refund.failed",
            actor=actor,
            wallet=None,
            transaction=locked.transaction,
            amount=locked.amount,
            currency=locked.currency,
            reason=reason,
            metadata={"refund_reference": ref, "provider": locked.provider},
        )
        return Settlement(locked, FAILED_NOW, reason)
    if locked.status == Status.FAILED:
        return Settlement(locked, ALREADY, f"Refund {ref} had already failed.")
    if locked.status == Status.CANCELLED:
        return Settlement(locked, ALREADY, f"Refund {ref} was cancelled by a reversal; its failure changes nothing.")
    return Settlement(
        locked,
        CONTRADICTION,
        f"{label} reports refund {ref} failed ({reason}) after it was settled as paid: the guest may not "
        f"have the {amount}. Confirm with the provider, then retry the refund by hand.",
    )


# --- the provider's callback ------------------------------------------------------------------


def apply_refund_event(inbox: WebhookEvent, event: ProviderEvent, *, actor) -> tuple[str, str]:
    """Apply a provider's refund callback (stored in the inbox, inside its transaction): returns
    the inbox outcome and its reason (finance.payments._apply records them).

    The refund is found by the provider's refund id, else our refund reference, else the
    refunded payment's reference and the amount among open refunds. Unknown refund, other
    amount or currency, or an outcome that contradicts what the refund already is: flagged
    for staff, nothing moves."""
    Outcome = WebhookEvent.Outcome
    refund = _find_refund(inbox.provider, event)
    if refund is None:
        return Outcome.FLAGGED, f"No refund matches this event ({_describe_keys(event)})."
    inbox.refund = refund
    mismatch = _mismatch(event, refund)
    if mismatch:
        return Outcome.FLAGGED, mismatch
    if event.refund_id and not refund.provider_refund_id:
        refund.provider_refund_id = event.refund_id[:100]
        refund.save(update_fields=["provider_refund_id", "updated_at"])
    settled = _settle_locked(refund, status=event.outcome, reason=event.failure_reason, actor=actor)
    if settled.what == SETTLED:
        return Outcome.APPLIED, settled.message
    if settled.what == FAILED_NOW:
        return Outcome.REFUND_FAILED, settled.message
    if settled.what == ALREADY:
        return Outcome.APPLIED, f"{settled.message} Nothing moved again."
    return Outcome.FLAGGED, settled.message


def _find_refund(provider: str, event: ProviderEvent) -> ProviderRefund | None:
    """The event's refund, locked: by each key the event carries, most precise first."""
    refunds = (
        ProviderRefund.objects.select_for_update(of=("self",))
        .select_related("payment", "transaction")
        .filter(provider=provider)
    )
    if event.refund_id:
        found = refunds.filter(provider_refund_id=event.refund_id).first()
        if found is not None:
            return found
    if event.refund_reference:
        found = refunds.filter(refund_reference=event.refund_reference).first()
        if found is not None:
            return found
    if event.payment_reference and event.amount is not None:
        # Oldest first: the refund the provider most likely answers about.
        return (
            refunds.filter(
                payment__reference=event.payment_reference, amount=event.amount, status__in=ProviderRefund.OPEN_STATUSES
            )
            .order_by("created_at", "pk")
            .first()
        )
    return None


def _describe_keys(event: ProviderEvent) -> str:
    keys = [
        f"refund id {event.refund_id}" if event.refund_id else "",
        f"reference {event.refund_reference}" if event.refund_reference else "",
        f"payment {event.payment_reference}" if event.payment_reference else "",
    ]
    return ", ".join(key for key in keys if key) or "no reference"


def _mismatch(event: ProviderEvent, refund: ProviderRefund) -> str:
    """Why the event's money differs from the refund's, or '' (also when it names none)."""
    amount, currency = event.amount, event.currency
    if amount is None:
        if event.raw_amount is None:
            return ""
        try:  # the provider sends no currency: read it in the refund's
            amount, currency = major_amount(event.raw_amount, refund.currency), refund.currency
        except MalformedEventError as error:
            return str(error)
    if currency and currency != refund.currency:
        return f"Currency {currency} differs from the refund's {refund.currency}."
    if Decimal(amount) != refund.amount:
        return (
            f"Amount {format_money(amount, currency or refund.currency)} differs from the refund's "
            f"{format_money(refund.amount, refund.currency)}."
        )
    return ""


# --- staff: retry, or paid by hand (finance.staff_actions checks permission and audits) ------


def retry_failed(refund_id: int, *, actor) -> ProviderRefund:
    """Send a failed refund again, as a new attempt with a new reference (the provider keeps the
    failed one under the old), through the payment's provider; call inside the staff action's
    transaction. Refused unless the refund failed, or when no provider can send it."""
    locked = _lock(refund_id)
    if locked.status != Status.FAILED:
        raise InvalidStateError(
            f"Only a failed refund can be retried; refund {locked.refund_reference} is "
            f"{locked.get_status_display().lower()}."
        )
    route = refund_route(locked.payment)
    if route == MANUAL:
        raise InvalidStateError(
            f"{LABELS.get(locked.payment.provider, locked.payment.provider)} cannot send refunds here: pay the "
            "guest by other means and mark the refund refunded."
        )
    locked.attempt += 1
    locked.provider = route
    locked.refund_reference = locked.stable_refund_reference()
    locked.status = Status.QUEUED
    locked.provider_refund_id = ""
    locked.failure_reason = ""
    locked.last_error = ""
    locked.sent_at = locked.checked_at = None
    locked.save()
    ledger.audit(
        action="refund.retry",
        actor=actor,
        transaction=locked.transaction,
        amount=locked.amount,
        currency=locked.currency,
        metadata={"refund_reference": locked.refund_reference, "attempt": locked.attempt, "provider": route},
    )
    send_refund.enqueue(locked.pk, locked.attempt)
    return locked


def mark_paid_by_hand(refund_id: int, *, actor, note: str) -> ProviderRefund:
    """Settle a manual or failed refund that staff paid by other means; call inside the staff
    action's transaction. Refused while a provider may still pay it (queued or processing at
    a provider) and once it is settled or cancelled."""
    locked = _lock(refund_id)
    manual_open = locked.provider == MANUAL and locked.status == Status.QUEUED
    if not (manual_open or locked.status == Status.FAILED):
        if locked.is_open:
            why = f"{provider_label(locked)} may still pay it ({locked.get_status_display().lower()})"
        else:
            why = f"it is {locked.get_status_display().lower()}"
        raise InvalidStateError(f"Refund {locked.refund_reference} cannot be marked refunded: {why}.")
    return TransactionService.settle_provider_refund(locked, note=note, actor=actor)


# --- asking about stuck refunds -----------------------------------------------------------------


def stuck_refunds(*, now=None, limit: int = QUERY_BATCH) -> list[ProviderRefund]:
    """Refunds at a provider (being sent or processing) sent more than REFUND_QUERY_AFTER_MINUTES
    ago and not asked about within that time, oldest first, at most `limit`."""
    now = now or timezone.now()
    cutoff = now - timedelta(minutes=settings.REFUND_QUERY_AFTER_MINUTES)
    return list(
        ProviderRefund.objects.filter(status__in=(Status.QUEUED, Status.PROCESSING), sent_at__lt=cutoff)
        .exclude(provider=MANUAL)
        .filter(Q(checked_at__isnull=True) | Q(checked_at__lt=cutoff))
        .select_related("payment", "transaction")
        .order_by("sent_at", "pk")[:limit]
    )


@job(label="Query stuck refunds", max_attempts=1, keep_result=False)
def query_stuck_refunds() -> int:
    """Ask the providers about refunds still open REFUND_QUERY_AFTER_MINUTES after they were
    sent, and settle those that have an outcome. A refund whose sending gave up and that the
    provider does not know is sent again (same reference). Returns how many were asked about."""
    asked = 0
    for refund in stuck_refunds():
        provider = PROVIDERS.get(refund.provider)
        if provider is None or not provider.refunds_by_api:
            continue
        asked += 1
        try:
            result = provider.fetch_refund(refund)
        except Exception as error:  # one provider down must not stop the others being asked
            logger.warning("refund %s: query failed: %s", refund.refund_reference, describe(error))
            with transaction.atomic():
                ProviderRefund.objects.filter(pk=refund.pk, status__in=(Status.QUEUED, Status.PROCESSING)).update(
                    checked_at=timezone.now(), last_error=f"Query failed: {describe(error)}", updated_at=timezone.now()
                )
            continue
        settled = record_refund_answer(refund.pk, result, checked=True)
        unknown = result.status == PENDING and not result.provider_refund_id
        if unknown and settled.refund.status == Status.QUEUED:
            with transaction.atomic():
                send_refund.enqueue(refund.pk, refund.attempt)
    return asked
