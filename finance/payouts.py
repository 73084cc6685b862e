"""Host payouts: how a withdrawal's money leaves, and how the provider's answer settles it.

Staff "send" a pending withdrawal (finance.staff_actions.complete_withdrawal → `send_payout`).
Its route (`payout_route`) decides the method:

  - "manual": no provider reaches the account (or it has no full number); staff paid it by
    other means and the withdrawal completes at once, as before payouts existed;
  - a provider (paystack, flutterwave, mpesa, or the offline sandbox): the withdrawal becomes
    "processing" with a stable transfer reference, a job (`send_transfer`) sends the transfer,
    and the provider's signed callback (`apply_transfer_event`), the job's own answer, or a
    query after PAYOUT_QUERY_AFTER_MINUTES (`query_stuck_transfers`) completes or fails it.
    The hold stays until then.

`settle_transfer` is the one place a transfer's outcome becomes money. It runs under the
withdrawal's row lock, so whatever order the callbacks, the job's answer and the query's
answers come in, and however many times, the money moves once: the first final outcome
settles, a repeat of it is "already", and a contradiction is reported, never applied.

Provider HTTP never runs inside a database transaction: the job and the query read the
withdrawal, call the provider, then record the answer in a short transaction of their own.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from jobs.policy import PermanentJobError, job
from jobs.worker import current_attempt, describe

from . import approvals, idempotency, ledger
from .errors import InvalidStateError, NotFoundError
from .models import BankAccount, IdempotencyRecord, WebhookEvent, Withdrawal
from .money import format_money
from .providers import PROVIDERS, is_enabled
from .providers.base import (
    FAILED,
    SUCCESS,
    MalformedEventError,
    ProviderEvent,
    ProviderUnavailableError,
    TransferRefusedError,
    TransferResult,
    major_amount,
)
from .services import TransactionService

logger = logging.getLogger("finance.payouts")

MANUAL = "manual"
# How many stuck transfers one run of query_stuck_transfers asks about (the rest wait for the next run).
QUERY_BATCH = 50


@dataclass(frozen=True)
class PayoutRoute:
    method: str  # MANUAL or a provider's name
    label: str  # what staff read: "Paystack transfer", "Manual payout"

    @property
    def is_manual(self) -> bool:
        return self.method == MANUAL


LABELS = {
    MANUAL: "Manual payout (paid by other means)",
    "paystack": "Paystack transfer",
    "flutterwave": "Flutterwave transfer",
    "mpesa": "M-Pesa B2C",
    "sandbox": "Sandbox transfer (offline)",
}


def payout_route(bank_account: BankAccount) -> PayoutRoute:
    """The method that pays `bank_account`: the sandbox when it is on, else the provider
    PAYOUT_ROUTES names for the account's kind and country if that provider is on; manual
    when no provider can (or the account has no full number to send to)."""
    if not bank_account.can_receive_transfers:
        return route_for(MANUAL)
    if settings.SANDBOX_PAYMENTS_ENABLED:
        return route_for("sandbox")
    name = settings.PAYOUT_ROUTES.get((bank_account.account_type, bank_account.country.upper()))
    provider = PROVIDERS.get(name or "")
    if provider is None or not is_enabled(name) or bank_account.account_type not in provider.transfer_account_types:
        return route_for(MANUAL)
    return route_for(name)


def route_for(method: str) -> PayoutRoute:
    return PayoutRoute(method=method, label=LABELS.get(method, method))


# --- sending ------------------------------------------------------------------------------


def send_payout(withdrawal: Withdrawal, *, actor, idempotency_key: str) -> Withdrawal:
    """Pay out `withdrawal` by its route; call inside the staff action's transaction, after its
    permission and four-eyes checks. Returns the withdrawal as now stored: completed (manual)
    or processing (a provider's transfer, sent by the `send_transfer` job enqueued here, which
    commits with the row).

    A replay with the same key, or a second "send" of a payout already in flight, returns the
    same processing withdrawal and enqueues nothing. `processed_by` is the staff member who
    sent it (kept when the provider's callback settles it later; `processed_at` is then the
    settlement's time)."""
    with transaction.atomic():
        if approvals.already_moved(idempotency_key, "complete"):
            # The key completed it manually before: the service hands back the first result.
            return TransactionService.complete_withdrawal(withdrawal, idempotency_key=idempotency_key, actor=actor)
        earlier = IdempotencyRecord.objects.filter(key=idempotency_key, operation="send_payout").first()
        if earlier is not None and earlier.withdrawal_id == withdrawal.pk:
            return Withdrawal.objects.select_related("transaction", "wallet").get(pk=withdrawal.pk)
        locked = _lock(withdrawal.pk)
        if locked.transfer_in_flight:  # a second click: the payout is already on its way
            return locked
        if not locked.is_open:
            raise InvalidStateError(f"Withdrawal {locked.reference} is already {locked.status}.")
        route = payout_route(locked.bank_account)
        if route.is_manual:
            # The manual route keeps today's meaning of "complete", with its own idempotency record.
            done = TransactionService.complete_withdrawal(withdrawal, idempotency_key=idempotency_key, actor=actor)
            _set_manual(done)
            return done
        record, _ = idempotency.claim(idempotency_key, "send_payout", {"withdrawal": locked.pk})
        locked.status = Withdrawal.Status.PROCESSING
        locked.payout_method = route.method
        locked.transfer_reference = locked.transfer_reference or locked.stable_transfer_reference()
        locked.payout_sent_at = timezone.now()
        locked.payout_checked_at = None
        locked.payout_error = ""
        locked.processed_by = actor if getattr(actor, "pk", None) else None
        locked.save(
            update_fields=[
                "status",
                "payout_method",
                "transfer_reference",
                "payout_sent_at",
                "payout_checked_at",
                "payout_error",
                "processed_by",
            ]
        )
        idempotency.remember(record, withdrawal=locked)
        ledger.audit(
            action="withdrawal.send_payout",
            actor=actor,
            wallet=locked.wallet,
            transaction=locked.transaction,
            amount=locked.amount,
            currency=locked.currency,
            metadata={
                "withdrawal": locked.reference,
                "payout_method": route.method,
                "transfer_reference": locked.transfer_reference,
            },
        )
        send_transfer.enqueue(locked.pk)
    return locked


def _set_manual(done: Withdrawal) -> None:
    Withdrawal.objects.filter(pk=done.pk, payout_method="").update(payout_method=MANUAL)
    done.payout_method = done.payout_method or MANUAL


def _lock(withdrawal_id: int) -> Withdrawal:
    """Lock the withdrawal and its pending transaction, as TransactionService does (one statement)."""
    locked = (
        Withdrawal.objects.select_for_update(of=("self", "transaction"))
        .select_related("transaction", "wallet", "bank_account")
        .filter(pk=withdrawal_id)
        .first()
    )
    if locked is None:
        raise NotFoundError("Withdrawal not found.")
    return locked


@job(label="Send payout", max_attempts=5, base_delay=5.0, max_delay=300.0)
def send_transfer(withdrawal_id: int) -> dict:
    """Send the withdrawal's transfer to its provider, with its stable transfer reference (a
    retry never pays twice), and record the answer. A provider that is unreachable is retried
    by the worker with the same reference; after the last attempt the withdrawal stays
    processing and the periodic query (query_stuck_transfers) asks the provider about it."""
    withdrawal = Withdrawal.objects.select_related("bank_account", "wallet").filter(pk=withdrawal_id).first()
    if withdrawal is None:
        raise PermanentJobError(f"Withdrawal {withdrawal_id} no longer exists.")
    if not withdrawal.transfer_in_flight:
        return {"withdrawal": withdrawal.reference, "skipped": f"already {withdrawal.status}"}
    provider = PROVIDERS.get(withdrawal.payout_method)
    if provider is None:
        raise PermanentJobError(f"No provider {withdrawal.payout_method!r} for {withdrawal.reference}.")
    try:
        result = provider.send_transfer(withdrawal)
    except TransferRefusedError as error:
        settled = settle_transfer(
            withdrawal.pk, status=FAILED, reason=f"{provider_label(withdrawal)} refused the transfer: {error.message}"
        )
        return {"withdrawal": withdrawal.reference, "refused": error.message, "settled": settled.what}
    except Exception as error:
        message, hand_to_query = failed_send(
            error, provider=provider_label(withdrawal), reference=withdrawal.transfer_reference
        )
        _record_send_error(withdrawal.pk, message)
        if hand_to_query:
            return {"withdrawal": withdrawal.reference, "handed_to_query": message}
        raise
    settled = record_answer(withdrawal.pk, result)
    return {"withdrawal": withdrawal.reference, "status": result.status, "settled": settled.what}


def failed_send(error: Exception, *, provider: str, reference: str) -> tuple[str, bool]:
    """After a send job's provider call raised `error`: the message to keep for staff, and whether
    to stop retrying and leave the item to the periodic query (the job's last attempt, and the
    provider was unreachable). Payouts' and refunds' send jobs share it."""
    attempt = current_attempt()
    message = describe(error)
    if attempt.is_last:
        message = (
            f"{message} (sending gave up after {attempt.number} attempts; the periodic query will ask "
            f"{provider} about {reference})"
        )
    return message, attempt.is_last and isinstance(error, ProviderUnavailableError)


def provider_label(withdrawal: Withdrawal) -> str:
    return LABELS.get(withdrawal.payout_method, withdrawal.payout_method).split(" (")[0]


def _record_send_error(withdrawal_id: int, message: str) -> None:
    with transaction.atomic():
        Withdrawal.objects.filter(pk=withdrawal_id, status=Withdrawal.Status.PROCESSING).update(payout_error=message)
    logger.warning("payout %s not sent: %s", withdrawal_id, message)


def record_answer(withdrawal_id: int, result: TransferResult, *, checked: bool = False) -> "Settlement":
    """Keep what the provider said about a transfer (its id; a send error cleared) and settle a
    final answer, in one short transaction. The callback may have settled it first: then the
    id is still kept and the answer settles nothing (or is reported, when it contradicts)."""
    with transaction.atomic():
        locked = _lock(withdrawal_id)
        fields = []
        if result.provider_transfer_id and not locked.provider_transfer_id:
            locked.provider_transfer_id = result.provider_transfer_id
            fields.append("provider_transfer_id")
        final = result.status in (SUCCESS, FAILED)
        # The send's answer clears a send error; a query's "no outcome yet" keeps it for staff.
        if locked.payout_error and locked.status == Withdrawal.Status.PROCESSING and (final or not checked):
            locked.payout_error = ""
            fields.append("payout_error")
        if checked:
            locked.payout_checked_at = timezone.now()
            fields.append("payout_checked_at")
        if fields:
            locked.save(update_fields=fields)
        if not final:
            return Settlement(locked, PENDING_STILL, "")
        return _settle_locked(locked, status=result.status, reason=result.failure_reason, actor=None)


# --- settling -----------------------------------------------------------------------------

# What settle_transfer did.
COMPLETED, FAILED_NOW, ALREADY, CONTRADICTION, NOT_SENT, PENDING_STILL = (
    "completed",
    "failed",
    "already",
    "contradiction",
    "not_sent",
    "pending",
)


@dataclass
class Settlement:
    withdrawal: Withdrawal
    what: str  # COMPLETED, FAILED_NOW, ALREADY, CONTRADICTION, NOT_SENT or PENDING_STILL
    message: str  # for staff: what happened, or what to check


def settle_transfer(withdrawal_id: int, *, status: str, reason: str = "", actor=None) -> Settlement:
    """Turn a transfer's final outcome (SUCCESS or FAILED, with the provider's `reason`) into
    money, once: SUCCESS completes the withdrawal (the held money settles), FAILED fails it
    (the hold is released). A repeat of the outcome already applied moves nothing ("already");
    an outcome that contradicts it, or one for a payout never sent, moves nothing and says why
    ("contradiction", "not_sent"). Its own transaction, under the withdrawal's row lock."""
    with transaction.atomic():
        return _settle_locked(_lock(withdrawal_id), status=status, reason=reason, actor=actor)


def _settle_locked(locked: Withdrawal, *, status: str, reason: str, actor) -> Settlement:
    label = provider_label(locked) if locked.payout_method else "The provider"
    ref = locked.reference
    if locked.payout_method in ("", MANUAL) or not locked.transfer_reference:
        return Settlement(
            locked,
            NOT_SENT,
            f"Withdrawal {ref} was never sent to a provider (it is {locked.status}): "
            "check the provider's dashboard for a transfer nobody asked for.",
        )
    S = Withdrawal.Status
    if status == SUCCESS:
        if locked.status == S.PROCESSING:
            sender = locked.processed_by_id
            done = TransactionService.complete_withdrawal(locked, actor=actor)
            _keep_sender(done, sender)
            return Settlement(done, COMPLETED, f"Payout {ref} completed: {label} paid the host.")
        if locked.status == S.COMPLETED:
            return Settlement(locked, ALREADY, f"Payout {ref} was already completed.")
        if locked.status == S.FAILED:
            return Settlement(
                locked,
                CONTRADICTION,
                f"{label} reports transfer {locked.transfer_reference} succeeded, but withdrawal {ref} was "
                f"failed ({locked.failure_reason}) and its hold released: the host may have been paid twice "
                "over. Check the transfer with the provider before the host withdraws again.",
            )
        return Settlement(locked, NOT_SENT, f"Withdrawal {ref} is {locked.status}: its payout was never sent.")
    reason = (reason or "").strip() or f"{label} reported the transfer failed."
    if locked.status == S.PROCESSING:
        sender = locked.processed_by_id
        done = TransactionService.fail_withdrawal(locked, reason, actor=actor)
        _keep_sender(done, sender)
        return Settlement(done, FAILED_NOW, reason)
    if locked.status == S.FAILED:
        return Settlement(locked, ALREADY, f"Payout {ref} had already failed.")
    if locked.status == S.COMPLETED:
        return Settlement(
            locked,
            CONTRADICTION,
            f"{label} reports transfer {locked.transfer_reference} failed or was reversed ({reason}) after "
            f"withdrawal {ref} was completed: the host's money left their wallet but did not reach them. "
            "Confirm with the provider, then credit the host's wallet.",
        )
    return Settlement(locked, NOT_SENT, f"Withdrawal {ref} is {locked.status}: its payout was never sent.")


def _keep_sender(done: Withdrawal, sender_id: int | None) -> None:
    """A settlement by callback or query has no actor: the withdrawal keeps the staff member who sent it."""
    if sender_id and done.processed_by_id != sender_id:
        Withdrawal.objects.filter(pk=done.pk).update(processed_by_id=sender_id)
        done.processed_by_id = sender_id


# --- the provider's callback --------------------------------------------------------------


def apply_transfer_event(inbox: WebhookEvent, event: ProviderEvent, *, actor) -> tuple[str, str]:
    """Apply a provider's transfer callback (stored in the inbox, inside its transaction):
    returns the inbox outcome and its reason (finance.payments._apply records them).

    Unknown transfer, other amount or currency, or an outcome that contradicts what the
    withdrawal already is: flagged for staff, nothing moves."""
    Outcome = WebhookEvent.Outcome
    withdrawal = (
        Withdrawal.objects.select_for_update(of=("self", "transaction"))
        .select_related("transaction", "wallet", "bank_account")
        .filter(payout_method=inbox.provider, transfer_reference=event.transfer_reference)
        .first()
    )
    if withdrawal is None:
        return Outcome.FLAGGED, f"No payout matches transfer reference {event.transfer_reference}."
    inbox.withdrawal = withdrawal
    mismatch = _mismatch(event, withdrawal)
    if mismatch:
        return Outcome.FLAGGED, mismatch
    if event.provider_reference and not withdrawal.provider_transfer_id:
        withdrawal.provider_transfer_id = event.provider_reference[:100]
        withdrawal.save(update_fields=["provider_transfer_id"])
    settled = _settle_locked(withdrawal, status=event.outcome, reason=event.failure_reason, actor=actor)
    if settled.what == COMPLETED:
        return Outcome.APPLIED, settled.message
    if settled.what == FAILED_NOW:
        return Outcome.PAYOUT_FAILED, settled.message
    if settled.what == ALREADY:
        return Outcome.APPLIED, f"{settled.message} Nothing moved again."
    return Outcome.FLAGGED, settled.message


def _mismatch(event: ProviderEvent, withdrawal: Withdrawal) -> str:
    """Why the event's money differs from the withdrawal's, or '' (also when it names none)."""
    amount, currency = event.amount, event.currency
    if amount is None:
        if event.raw_amount is None:
            return ""
        try:  # the provider sends no currency (M-Pesa): read it in the withdrawal's
            amount, currency = major_amount(event.raw_amount, withdrawal.currency), withdrawal.currency
        except MalformedEventError as error:
            return str(error)
    if currency and currency != withdrawal.currency:
        return f"Currency {currency} differs from the payout's {withdrawal.currency}."
    if Decimal(amount) != withdrawal.amount:
        return (
            f"Amount {format_money(amount, currency or withdrawal.currency)} differs from the payout's "
            f"{format_money(withdrawal.amount, withdrawal.currency)}."
        )
    return ""


# --- asking about stuck transfers -----------------------------------------------------------


def stuck_transfers(*, now=None, limit: int = QUERY_BATCH) -> list[Withdrawal]:
    """Payouts in flight sent more than PAYOUT_QUERY_AFTER_MINUTES ago and not asked about
    within that time, oldest first, at most `limit`."""
    now = now or timezone.now()
    cutoff = now - timedelta(minutes=settings.PAYOUT_QUERY_AFTER_MINUTES)
    return list(
        Withdrawal.objects.filter(status=Withdrawal.Status.PROCESSING, payout_sent_at__lt=cutoff)
        .exclude(payout_method__in=("", MANUAL))
        .filter(Q(payout_checked_at__isnull=True) | Q(payout_checked_at__lt=cutoff))
        .select_related("bank_account", "wallet")
        .order_by("payout_sent_at", "pk")[:limit]
    )


@job(label="Query stuck payouts", max_attempts=1, keep_result=False)
def query_stuck_transfers() -> int:
    """Ask the providers about transfers still processing PAYOUT_QUERY_AFTER_MINUTES after they
    were sent, and settle those that have an outcome. Returns how many were asked about."""
    asked = 0
    for withdrawal in stuck_transfers():
        provider = PROVIDERS.get(withdrawal.payout_method)
        if provider is None:
            continue
        asked += 1
        try:
            result = provider.fetch_transfer(withdrawal)
        except Exception as error:  # one provider down must not stop the others being asked
            logger.warning("payout %s: query failed: %s", withdrawal.reference, describe(error))
            with transaction.atomic():
                Withdrawal.objects.filter(pk=withdrawal.pk, status=Withdrawal.Status.PROCESSING).update(
                    payout_checked_at=timezone.now(), payout_error=f"Query failed: {describe(error)}"
                )
            continue
        record_answer(withdrawal.pk, result, checked=True)
    return asked
