"""Staff actions on money: permission, four-eyes, the money service and the audit entry.

One function per action, named verb_noun, in the manner of Zulip's `zerver/actions/`.
Each refuses an actor without the action's permission (`finance.permissions`), runs the
`TransactionService` operation and writes its Wagtail audit entry in one transaction, so
the action and its record commit or roll back together. The portal's views and the REST
API both call these; neither moves money any other way.

A completion or refund that would take what was moved for its host past the approval
threshold, and every reversal, is not carried out here but filed as an `ApprovalRequest`
(`finance.approvals`); `approve_request` carries it out once a second person approves.

Idempotency keys are the caller's (the portal's come from the server, inside signed
confirmations; the API's are already per user), but the stores behind them (approval
requests, the money operations' IdempotencyRecord, the audit's double-submit check) are
shared. So every action stores its key scoped to the acting user and the operation
(`scoped_key`): the same key sent by someone else is a different key, which can neither
hand back another person's result nor take the place of their request.
"""

import hashlib
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from django.db import transaction
from django.db.models import Exists, OuterRef, Subquery
from wagtail.log_actions import log

from . import approvals, payouts, permissions
from .audit import log_once, money_data
from .errors import (
    InvalidStateError,
    TransactionError,
    TransferInFlightError,
    WalletNotActiveError,
    require_reason,
)
from .models import ApprovalRequest, Booking, IdempotencyRecord, Payment, Wallet, WalletTransaction, Withdrawal
from .money import parse_amount, quantum
from .services import RefundSplit, TransactionService, check_refundable, refund_split
from .services import check_reversible as check_reversal_allowed


def scoped_key(actor, operation: str, key: str | None) -> str:
    """The key as stored: `key` as used by `actor` for `operation`, and only that.

    Hashed so it fits every store (ApprovalRequest keeps 64 characters); without a key,
    a fresh one, so the call acts once and replays nothing."""
    digest = hashlib.sha256((key or uuid.uuid4().hex).encode()).hexdigest()[:32]
    return f"staff-{actor.pk}-{operation}-{digest}"


# --- the checks a confirmation runs before it asks, and the action runs again ---------------
# Each refusal is written once: the portal calls these to refuse before it confirms, and
# the actions below call them again on the way in.


def clean_failure_reason(reason: str | None) -> str:
    return require_reason(reason, "Say why the withdrawal failed; the host and the audit log see it.")


def clean_refund_reason(reason: str | None) -> str:
    return require_reason(reason, "Give a reason for the refund; it goes in the audit log.")


def clean_reversal_reason(reason: str | None) -> str:
    return require_reason(reason, "Give a reason for the reversal; it goes in the audit log.")


def clean_rejection_note(note: str | None) -> str:
    return require_reason(note, "Say why the request is rejected.", field="note")


def can_be_reversed(txn: WalletTransaction) -> bool:
    """Only a completed transaction that is not itself a reversal can be reversed (what the
    row alone says; `reversal_states` adds what other rows say, `check_reversible` is the
    full check)."""
    return txn.status == WalletTransaction.Status.COMPLETED and txn.type != WalletTransaction.Type.REVERSAL


@dataclass(frozen=True)
class ReversalState:
    """What a list shows in a transaction's row: Reverse (`reversible`), or the request
    already waiting for approval (`pending`, its number)."""

    reversible: bool = False
    pending: int | None = None


def reversal_states(txns) -> dict[int, ReversalState]:
    """`check_reversible`'s answer for each of `txns` (a page of a list), by primary key, in
    one query whatever their number: the pending reversal request of each, and whether a
    booking payment has refunds against it (refunds must be reversed first)."""
    candidates = [t.pk for t in txns if can_be_reversed(t)]
    if not candidates:
        return {}
    pending = ApprovalRequest.objects.filter(
        kind=ApprovalRequest.Kind.REVERSAL, status=ApprovalRequest.Status.PENDING, transaction_id=OuterRef("pk")
    ).values("pk")[:1]
    refunded = Payment.objects.filter(ledger_transaction_id=OuterRef("pk"), refunded_amount__gt=0)
    rows = (
        WalletTransaction.objects.filter(pk__in=candidates)
        .annotate(pending=Subquery(pending), refunded=Exists(refunded))
        .values_list("pk", "type", "pending", "refunded")
        .order_by()
    )
    states = {}
    for pk, txn_type, pending_pk, has_refunds in rows:
        blocked = has_refunds and txn_type == WalletTransaction.Type.BOOKING_PAYMENT
        states[pk] = ReversalState(reversible=not blocked and pending_pk is None, pending=pending_pk)
    return states


def check_reversible(txn: WalletTransaction) -> None:
    """Refuse a reversal request that could never be carried out: the reversal's own checks
    (TransactionService.reverse_transaction runs the same at approval), and one already
    waiting for approval."""
    payment = None
    if txn.type == WalletTransaction.Type.BOOKING_PAYMENT:
        payment = Payment.objects.filter(ledger_transaction_id=txn.pk).first()
    check_reversal_allowed(txn, payment)
    pending = ApprovalRequest.objects.filter(
        kind=ApprovalRequest.Kind.REVERSAL, transaction_id=txn.pk, status=ApprovalRequest.Status.PENDING
    ).first()
    if pending is not None:
        raise InvalidStateError(
            f"A reversal of {txn.reference} is already waiting for approval (request #{pending.pk}).",
            approval=pending.pk,
        )


def check_refund(booking: Booking, amount) -> tuple[Payment, RefundSplit]:
    """The booking's settled payment and how a refund of `amount` would be split, if the refund
    can be carried out now (read, not locked): everything "Yes" would refuse is refused here,
    the payment's refundable amount and a frozen or closed host wallet alike."""
    payment = (
        Payment.objects.select_related("booking", "ledger_transaction__wallet__user").refundable_for(booking).first()
    )
    amount = parse_amount(amount, booking.currency)
    check_refundable(payment, amount)
    return payment, check_host_covers(payment, payment.ledger_transaction.wallet, amount)


def check_host_covers(payment: Payment, wallet: Wallet, amount: Decimal) -> RefundSplit:
    """Refuse a refund the host's `wallet` cannot take part in: a frozen or closed wallet.
    Returns the split. Its available balance need not cover the host's share: a refund may take
    it below zero (the negative part a receivable their next payouts recover), and past the
    currency's negative-balance limit it needs a second approver (`refund_effect`)."""
    if not wallet.is_active:
        raise WalletNotActiveError(
            f"The host {wallet.user}'s wallet is {wallet.get_status_display().lower()}: nothing can be taken "
            "from it, so no refund can be made until it is active again.",
            wallet=wallet.pk,
        )
    return refund_split(payment, amount)


def refund_limit(payment: Payment, wallet: Wallet) -> Decimal:
    """The most that can be refunded against `payment` now: what is left of it. The host's
    `wallet` no longer limits it (a refund may take it below zero); a frozen or closed one
    refuses any refund (`check_host_covers`)."""
    return max(payment.refundable_amount, Decimal(0))


class RefundEffect(NamedTuple):
    """What a refund would do to the host's wallet, for the portal's confirmation."""

    split: RefundSplit
    available_before: Decimal
    available_after: Decimal
    # What the refund adds to what the host owes the platform (0 when their balance covers it).
    new_receivable: Decimal
    # Why it needs a second approver ("" when it may go straight through).
    approval_reason: str


def refund_effect(payment: Payment, wallet: Wallet, amount: Decimal) -> RefundEffect:
    """What refunding `amount` against `payment` would do to the host's `wallet` (as read now,
    not locked): the split, its available balance before and after, the receivable the
    negative part would become, and why it would need a second approver."""
    split = refund_split(payment, amount)
    before = wallet.available_balance
    after = before - split.host_debit
    why = approvals.approval_reason(
        kind=ApprovalRequest.Kind.REFUND,
        amount=amount,
        currency=payment.currency,
        wallet=wallet,
        host_debit=split.host_debit,
    )
    owed_before, owed_after = max(-before, Decimal(0)), max(-after, Decimal(0))
    return RefundEffect(split, before, after, owed_after - owed_before, why)


@dataclass
class Outcome:
    """What a staff action did: moved money (`result`) or asked for approval (`approval`)."""

    result: object = None
    approval: ApprovalRequest | None = None

    @property
    def needs_approval(self) -> bool:
        return self.approval is not None


def _request_instead(
    *, kind, actor, amount, currency, wallet, key: str, reason: str = "", host_debit=None, **target
) -> Outcome | None:
    """The approval request filed in place of the action when it needs a second person now
    (`approvals.approval_reason`, under the host wallet's lock); None when it may go through."""
    why = approvals.approval_reason(kind=kind, amount=amount, currency=currency, wallet=wallet, host_debit=host_debit)
    if not why:
        return None
    return Outcome(
        approval=approvals.file_request(
            kind=kind,
            actor=actor,
            amount=amount,
            currency=currency,
            reason=reason,
            idempotency_key=key,
            approval_reason=why,
            **target,
        )
    )


# --- withdrawals ------------------------------------------------------------------------


def complete_withdrawal(*, withdrawal: Withdrawal, actor, idempotency_key: str, approved_by=None) -> Outcome:
    """Send a withdrawal's payout (`finance.payouts.send_payout`), or file it for approval when
    it needs a second person (`approvals.approval_reason`, decided under the host wallet's row lock).

    The result is the withdrawal: completed when it was paid by other means (the manual
    route), processing when a provider's transfer is on its way (its callback settles it).
    A second "complete" of a payout already in flight returns it and sends nothing.

    `approved_by` is set only by `approve_request`, which has checked the second person."""
    permissions.require(actor, permissions.COMPLETE_WITHDRAWAL)
    key = scoped_key(actor, "complete", idempotency_key)
    with transaction.atomic():
        earlier = approvals.earlier_request(key) if approved_by is None else None
        if earlier is not None:
            return Outcome(approval=earlier)
        locked, wallet = approvals.lock_withdrawal(withdrawal)
        # A closed withdrawal, a payout in flight, or a replay goes to send_payout: it refuses,
        # or hands back what was done.
        fresh = locked.is_open and not locked.transfer_in_flight
        if approved_by is None and fresh and not approvals.already_moved(key, "complete"):
            filed = _request_instead(
                kind=ApprovalRequest.Kind.WITHDRAWAL,
                actor=actor,
                amount=locked.amount,
                currency=locked.currency,
                wallet=wallet,
                key=key,
                withdrawal=locked,
            )
            if filed:
                return filed
        done = payouts.send_payout(withdrawal, actor=actor, idempotency_key=key)
        data = money_data(done.amount, done.currency, reference=done.reference, requested_by=actor)
        if done.payout_method in ("", payouts.MANUAL):
            log_once(done, "stayafrica.withdrawal.complete", actor=approved_by or actor, key=key, data=data)
        elif IdempotencyRecord.objects.filter(key=key, operation="send_payout").exists():
            # This call (or the first call with this key) sent it; a second click sent nothing.
            data.update(payout_method=done.payout_method, transfer_reference=done.transfer_reference)
            log_once(done, "stayafrica.withdrawal.send_payout", actor=approved_by or actor, key=key, data=data)
    return Outcome(result=done)


def check_failable(withdrawal: Withdrawal) -> None:
    """Refuse failing a withdrawal whose transfer a provider is moving: only its callback (or
    the periodic query) may settle it now, or the host could be paid and refunded both."""
    if withdrawal.transfer_in_flight:
        raise TransferInFlightError(
            f"Withdrawal {withdrawal.reference} is being paid by {payouts.provider_label(withdrawal)} "
            f"(transfer {withdrawal.transfer_reference}): only the provider's answer can settle it now.",
            provider=withdrawal.payout_method,
            transfer_reference=withdrawal.transfer_reference,
        )


def fail_withdrawal(*, withdrawal: Withdrawal, actor, reason: str, idempotency_key: str) -> Outcome:
    """Fail a withdrawal with a reason: the held amount returns to the host's available balance.

    Refused while a provider's transfer is in flight (TransferInFlightError), decided under
    the withdrawal's row lock so a send or a callback cannot slip in between."""
    permissions.require(actor, permissions.FAIL_WITHDRAWAL)
    reason = clean_failure_reason(reason)
    key = scoped_key(actor, "fail", idempotency_key)
    with transaction.atomic():
        if not approvals.already_moved(key, "fail"):
            locked, _wallet = approvals.lock_withdrawal(withdrawal)
            check_failable(locked)
        done = TransactionService.fail_withdrawal(withdrawal, reason, idempotency_key=key, actor=actor)
        log_once(
            done,
            "stayafrica.withdrawal.fail",
            actor=actor,
            key=key,
            data=money_data(done.amount, done.currency, reference=done.reference, reason=reason),
        )
    return Outcome(result=done)


# --- refunds and reversals ----------------------------------------------------------------


def refund_booking(*, booking: Booking, amount, reason: str, actor, idempotency_key: str, approved_by=None) -> Outcome:
    """Refund part or all of a booking's payment, or file it for approval when it needs a
    second person (`approvals.approval_reason`, decided under the host wallet's row lock)."""
    permissions.require(actor, permissions.REFUND_BOOKING)
    reason = clean_refund_reason(reason)
    amount = parse_amount(amount, booking.currency)
    key = scoped_key(actor, "refund", idempotency_key)
    with transaction.atomic():
        earlier = approvals.earlier_request(key) if approved_by is None else None
        if earlier is not None:
            return Outcome(approval=earlier)
        payment, wallet = approvals.lock_refund(booking)
        replay = approvals.already_moved(key, "refund")
        if not replay:
            # What the confirmation checked, again under the locks: never file a request that
            # could not be carried out now, and say why a refund cannot be in the portal's words.
            check_refundable(payment, amount)
            split = check_host_covers(payment, wallet, amount)
        if approved_by is None and not replay:
            filed = _request_instead(
                kind=ApprovalRequest.Kind.REFUND,
                actor=actor,
                amount=amount,
                currency=booking.currency,
                wallet=wallet,
                key=key,
                reason=reason,
                host_debit=split.host_debit,
                booking=booking,
            )
            if filed:
                return filed
        txn = TransactionService.process_refund(booking, amount, reason, idempotency_key=key, actor=actor)
        log_once(
            booking,
            "stayafrica.refund",
            actor=approved_by or actor,
            key=key,
            data=money_data(amount, booking.currency, reference=txn.reference, reason=reason, requested_by=actor),
        )
    return Outcome(result=txn)


def request_reversal(*, txn: WalletTransaction, reason: str, actor, idempotency_key: str) -> Outcome:
    """A reversal always needs a second approver: this only files the request, and refuses
    one that could never be carried out (`check_reversible`)."""
    permissions.require(actor, permissions.REVERSE_TRANSACTION)
    reason = clean_reversal_reason(reason)
    key = scoped_key(actor, "reverse", idempotency_key)
    with transaction.atomic():
        earlier = approvals.earlier_request(key)
        if earlier is not None:
            return Outcome(approval=earlier)
        txn = WalletTransaction.objects.get(pk=txn.pk)  # as it stands now, not as the caller loaded it
        check_reversible(txn)
        return Outcome(
            approval=approvals.file_request(
                kind=ApprovalRequest.Kind.REVERSAL,
                actor=actor,
                amount=txn.amount,
                currency=txn.currency,
                transaction=txn,
                reason=reason,
                idempotency_key=key,
                approval_reason=approvals.EVERY_REVERSAL,
            )
        )


# --- four-eyes decisions -------------------------------------------------------------------


def approve_request(*, request: ApprovalRequest, actor, note: str = "") -> ApprovalRequest:
    """Approve and carry out the request, as one transaction. The requester cannot approve.

    The action runs as its requester (whose permission is checked again: it may have been
    withdrawn since), with the approver recorded in the audit entry. When carrying it out is
    refused (the host's balance no longer covers it, say), nothing changes: the request stays
    pending, the error goes up to the caller, and the requester is told why by e-mail."""
    permissions.require(actor, permissions.APPROVE_REQUEST)
    failure = None
    try:
        with transaction.atomic():
            request = approvals.lock_for_decision(request, actor)
            try:
                reference = _carry_out(request, approver=actor)
            except TransactionError as error:
                failure = error
                raise
            approvals.record_decision(
                request, status=ApprovalRequest.Status.APPROVED, actor=actor, note=note, reference=reference
            )
            log(
                request,
                "stayafrica.approval.approve",
                user=actor,
                data=money_data(request.amount, request.currency, kind=request.kind, reference=reference, note=note),
            )
            approvals.notify_requester(request, outcome=approvals.APPROVED, decider=actor, note=note)
    except TransactionError as error:
        if error is failure:  # rolled back; the attempt is worth telling (a refusal to decide is not)
            approvals.notify_requester(
                request, outcome=approvals.NOT_CARRIED_OUT, decider=actor, note=note, why=error.message
            )
        raise
    return request


def reject_request(*, request: ApprovalRequest, actor, note: str) -> ApprovalRequest:
    """Reject the request with a note; nothing moves. The requester is told by e-mail."""
    permissions.require(actor, permissions.APPROVE_REQUEST)
    note = clean_rejection_note(note)
    with transaction.atomic():
        request = approvals.lock_for_decision(request, actor)
        approvals.record_decision(request, status=ApprovalRequest.Status.REJECTED, actor=actor, note=note)
        log(
            request,
            "stayafrica.approval.reject",
            user=actor,
            data=money_data(request.amount, request.currency, kind=request.kind, note=note),
        )
        approvals.notify_requester(request, outcome=approvals.REJECTED, decider=actor, note=note)
    return request


def _carry_out(request: ApprovalRequest, *, approver) -> str:
    """Run the approved action as its requester; return the reference of what it moved."""
    requester = request.requested_by
    key = f"approval-{request.pk}"
    if request.kind == ApprovalRequest.Kind.REVERSAL:
        return _reverse(request, requester=requester, approver=approver, key=key).reference
    if request.kind == ApprovalRequest.Kind.WITHDRAWAL:
        outcome = complete_withdrawal(
            withdrawal=request.withdrawal, actor=requester, idempotency_key=key, approved_by=approver
        )
        return outcome.result.reference
    outcome = refund_booking(
        booking=request.booking,
        amount=request.amount,
        reason=request.reason,
        actor=requester,
        idempotency_key=key,
        approved_by=approver,
    )
    return outcome.result.reference


def _reverse(request: ApprovalRequest, *, requester, approver, key: str) -> WalletTransaction:
    permissions.require(requester, permissions.REVERSE_TRANSACTION)
    key = scoped_key(requester, "reverse", key)
    original = request.transaction
    reversal = TransactionService.reverse_transaction(
        original.reference, request.reason, idempotency_key=key, actor=requester
    )
    log_once(
        original,
        "stayafrica.reversal",
        actor=approver,
        key=key,
        data=money_data(
            request.amount,
            request.currency,
            reference=reversal.reference,
            reverses=original.reference,
            reason=request.reason,
            requested_by=requester,
        ),
    )
    return reversal


# --- webhook inbox ------------------------------------------------------------------------------


def replay_webhook(*, event, actor):
    """Apply a flagged or rejected provider event again, with its audit entry in the same transaction."""
    from .payments import confirm_for_replay
    from .payments import replay_webhook as apply_again

    permissions.require(actor, permissions.REPLAY_WEBHOOK)
    check = confirm_for_replay(event.pk)  # the provider's verify endpoint, outside the transaction
    with transaction.atomic():
        replayed = apply_again(event.pk, actor=actor, check=check)
        payment = replayed.payment or replayed.withdrawal  # a payout's callback: its withdrawal
        log(
            replayed,
            "stayafrica.webhook.replay",
            user=actor,
            data={
                "provider": replayed.provider,
                "event_id": replayed.event_id,
                "outcome": replayed.outcome,
                "reason": replayed.reason,
                "amount": str(payment.amount.quantize(quantum(payment.currency))) if payment else "",
                "currency": payment.currency if payment else "",
            },
        )
    return replayed
