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

from django.db import transaction
from wagtail.log_actions import log

from . import approvals, permissions
from .audit import log_once, money_data
from .errors import InvalidStateError, require_reason
from .models import ApprovalRequest, Booking, Payment, WalletTransaction, Withdrawal
from .money import parse_amount
from .services import TransactionService, check_refundable
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
    """Only a completed transaction that is not itself a reversal can be reversed (a quick look
    for the lists; `check_reversible` is the full check)."""
    return txn.status == WalletTransaction.Status.COMPLETED and txn.type != WalletTransaction.Type.REVERSAL


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
            f"A reversal of {txn.reference} is already waiting for approval (request #{pending.pk})."
        )


def check_refund(booking: Booking, amount) -> Payment:
    """The booking's settled payment, if `amount` can be refunded from it (read, not locked)."""
    payment = Payment.objects.select_related("ledger_transaction").refundable_for(booking).first()
    check_refundable(payment, parse_amount(amount, booking.currency))
    return payment


@dataclass
class Outcome:
    """What a staff action did: moved money (`result`) or asked for approval (`approval`)."""

    result: object = None
    approval: ApprovalRequest | None = None

    @property
    def needs_approval(self) -> bool:
        return self.approval is not None


def _request_instead(*, kind, actor, amount, currency, wallet, key: str, reason: str = "", **target) -> Outcome | None:
    """The approval request filed in place of the action when it needs a second person now
    (`approvals.approval_reason`, under the host wallet's lock); None when it may go through."""
    why = approvals.approval_reason(kind=kind, amount=amount, currency=currency, wallet=wallet)
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
    """Pay out a withdrawal, or file it for approval when it needs a second person
    (`approvals.approval_reason`, decided under the host wallet's row lock).

    `approved_by` is set only by `approve_request`, which has checked the second person."""
    permissions.require(actor, permissions.COMPLETE_WITHDRAWAL)
    key = scoped_key(actor, "complete", idempotency_key)
    with transaction.atomic():
        earlier = approvals.earlier_request(key) if approved_by is None else None
        if earlier is not None:
            return Outcome(approval=earlier)
        locked, wallet = approvals.lock_withdrawal(withdrawal)
        # A closed withdrawal, or a replay, goes to the service: it refuses, or hands back the first result.
        if approved_by is None and locked.is_open and not approvals.already_moved(key, "complete"):
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
        done = TransactionService.complete_withdrawal(withdrawal, idempotency_key=key, actor=actor)
        log_once(
            done,
            "stayafrica.withdrawal.complete",
            actor=approved_by or actor,
            key=key,
            data=money_data(done.amount, done.currency, reference=done.reference, requested_by=actor),
        )
    return Outcome(result=done)


def fail_withdrawal(*, withdrawal: Withdrawal, actor, reason: str, idempotency_key: str) -> Outcome:
    """Fail a withdrawal with a reason: the held amount returns to the host's available balance."""
    permissions.require(actor, permissions.FAIL_WITHDRAWAL)
    reason = clean_failure_reason(reason)
    key = scoped_key(actor, "fail", idempotency_key)
    with transaction.atomic():
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
        if approved_by is None and not approvals.already_moved(key, "refund"):
            check_refundable(payment, amount)  # never file a request that could not be carried out
            filed = _request_instead(
                kind=ApprovalRequest.Kind.REFUND,
                actor=actor,
                amount=amount,
                currency=booking.currency,
                wallet=wallet,
                key=key,
                reason=reason,
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
    withdrawn since), with the approver recorded in the audit entry."""
    permissions.require(actor, permissions.APPROVE_REQUEST)
    with transaction.atomic():
        request = approvals.lock_for_decision(request, actor)
        reference = _carry_out(request, approver=actor)
        approvals.record_decision(
            request, status=ApprovalRequest.Status.APPROVED, actor=actor, note=note, reference=reference
        )
        log(
            request,
            "stayafrica.approval.approve",
            user=actor,
            data=money_data(request.amount, request.currency, kind=request.kind, reference=reference, note=note),
        )
    return request


def reject_request(*, request: ApprovalRequest, actor, note: str) -> ApprovalRequest:
    """Reject the request with a note; nothing moves."""
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
    from .payments import replay_webhook as apply_again

    permissions.require(actor, permissions.REPLAY_WEBHOOK)
    with transaction.atomic():
        replayed = apply_again(event.pk, actor=actor)
        payment = replayed.payment
        log(
            replayed,
            "stayafrica.webhook.replay",
            user=actor,
            data={
                "provider": replayed.provider,
                "event_id": replayed.event_id,
                "outcome": replayed.outcome,
                "reason": replayed.reason,
                "amount": str(payment.amount) if payment else "",
                "currency": payment.currency if payment else "",
            },
        )
    return replayed
