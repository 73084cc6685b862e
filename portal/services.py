"""The portal's staff actions: permission, money service, audit entry — one transaction.

Each function checks the actor's permission (the view checked it already; this is the
second check), calls `finance.services.TransactionService` inside an outer
`transaction.atomic`, and writes a Wagtail audit log entry (`wagtail.log_actions.log`,
action codes registered in portal/wagtail_hooks.py) in that same transaction, so an
action and its audit record commit or roll back together.

Four-eyes: a reversal always, and a withdrawal completion or refund above
`settings.APPROVAL_THRESHOLDS[currency]`, become an `ApprovalRequest` instead of moving
money. A second person with `portal.approve_request` approves it; the requester never can
(checked here and by the `approval_not_by_requester` database constraint).
"""

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from wagtail.log_actions import log
from wagtail.models import ModelLogEntry

from finance.errors import InvalidStateError, PermissionDeniedError, TransactionError
from finance.models import Booking, WalletTransaction, Withdrawal
from finance.money import parse_amount, quantum
from finance.services import TransactionService

from .models import ApprovalRequest

# Action codes, registered with Wagtail's log action registry (wagtail_hooks.py).
ACTIONS = {
    "stayafrica.withdrawal.complete": ("Complete withdrawal", "Completed a withdrawal"),
    "stayafrica.withdrawal.fail": ("Fail withdrawal", "Failed a withdrawal"),
    "stayafrica.refund": ("Refund", "Issued a refund"),
    "stayafrica.reversal": ("Reversal", "Reversed a transaction"),
    "stayafrica.approval.request": ("Request approval", "Requested a second approval"),
    "stayafrica.approval.approve": ("Approve", "Approved a request"),
    "stayafrica.approval.reject": ("Reject", "Rejected a request"),
    "stayafrica.broadcast.send": ("Send broadcast", "Sent a broadcast"),
    "stayafrica.webhook.replay": ("Replay webhook", "Replayed a webhook event"),
}


@dataclass
class Outcome:
    """What a staff action did: moved money (`result`) or asked for approval (`approval`)."""

    result: object = None
    approval: ApprovalRequest | None = None

    @property
    def needs_approval(self) -> bool:
        return self.approval is not None


def require_permission(actor, permission: str) -> None:
    if actor is None or not actor.has_perm(permission):
        raise PermissionDeniedError(f"You do not have permission for this action ({permission}).")


def needs_approval(amount: Decimal, currency: str) -> bool:
    threshold = getattr(settings, "APPROVAL_THRESHOLDS", {}).get(currency)
    return threshold is not None and amount > threshold


def _log_once(instance, action: str, *, actor, key: str | None, data: dict) -> None:
    """Log the action unless this idempotency key already logged it (a double submit)."""
    if key and ModelLogEntry.objects.filter(action=action, data__idempotency_key=key).exists():
        return
    log(instance, action, user=actor, data={**data, "idempotency_key": key or ""})


# --- withdrawals ------------------------------------------------------------------------


def complete_withdrawal(*, withdrawal: Withdrawal, actor, idempotency_key: str, approved_by=None) -> Outcome:
    require_permission(actor, "finance.complete_withdrawal")
    if approved_by is None and needs_approval(withdrawal.amount, withdrawal.currency):
        return Outcome(
            approval=request_approval(
                kind=ApprovalRequest.Kind.WITHDRAWAL,
                actor=actor,
                amount=withdrawal.amount,
                currency=withdrawal.currency,
                withdrawal=withdrawal,
                idempotency_key=idempotency_key,
            )
        )
    with transaction.atomic():
        done = TransactionService.complete_withdrawal(withdrawal, idempotency_key=idempotency_key, actor=actor)
        _log_once(
            done,
            "stayafrica.withdrawal.complete",
            actor=approved_by or actor,
            key=idempotency_key,
            data=_money_data(done.amount, done.currency, reference=done.reference, requested_by=actor),
        )
    return Outcome(result=done)


def fail_withdrawal(*, withdrawal: Withdrawal, actor, reason: str, idempotency_key: str) -> Outcome:
    require_permission(actor, "finance.fail_withdrawal")
    with transaction.atomic():
        done = TransactionService.fail_withdrawal(withdrawal, reason, idempotency_key=idempotency_key, actor=actor)
        _log_once(
            done,
            "stayafrica.withdrawal.fail",
            actor=actor,
            key=idempotency_key,
            data=_money_data(done.amount, done.currency, reference=done.reference, reason=reason),
        )
    return Outcome(result=done)


# --- refunds and reversals ----------------------------------------------------------------


def refund_booking(*, booking: Booking, amount, reason: str, actor, idempotency_key: str, approved_by=None) -> Outcome:
    require_permission(actor, "finance.refund_booking")
    reason = (reason or "").strip()
    if not reason:
        raise TransactionError("Give a reason for the refund.", field="reason")
    amount = parse_amount(amount, booking.currency)
    if approved_by is None and needs_approval(amount, booking.currency):
        return Outcome(
            approval=request_approval(
                kind=ApprovalRequest.Kind.REFUND,
                actor=actor,
                amount=amount,
                currency=booking.currency,
                booking=booking,
                reason=reason,
                idempotency_key=idempotency_key,
            )
        )
    with transaction.atomic():
        txn = TransactionService.process_refund(booking, amount, reason, idempotency_key=idempotency_key, actor=actor)
        _log_once(
            booking,
            "stayafrica.refund",
            actor=approved_by or actor,
            key=idempotency_key,
            data=_money_data(amount, booking.currency, reference=txn.reference, reason=reason, requested_by=actor),
        )
    return Outcome(result=txn)


def request_reversal(*, txn: WalletTransaction, reason: str, actor, idempotency_key: str) -> Outcome:
    """A reversal always needs a second approver: this only files the request."""
    require_permission(actor, "finance.reverse_transaction")
    reason = (reason or "").strip()
    if not reason:
        raise TransactionError("Give a reason for the reversal.", field="reason")
    if txn.status != WalletTransaction.Status.COMPLETED or txn.type == WalletTransaction.Type.REVERSAL:
        raise InvalidStateError(f"{txn.reference} is {txn.get_status_display().lower()}: it cannot be reversed.")
    return Outcome(
        approval=request_approval(
            kind=ApprovalRequest.Kind.REVERSAL,
            actor=actor,
            amount=txn.amount,
            currency=txn.currency,
            transaction=txn,
            reason=reason,
            idempotency_key=idempotency_key,
        )
    )


# --- four-eyes -----------------------------------------------------------------------------


def request_approval(*, kind, actor, amount, currency, idempotency_key: str, reason: str = "", **target):
    with transaction.atomic():
        request, created = ApprovalRequest.objects.get_or_create(
            idempotency_key=idempotency_key,
            defaults={
                "kind": kind,
                "requested_by": actor,
                "amount": amount,
                "currency": currency,
                "reason": reason,
                **target,
            },
        )
        if created:
            open_duplicate = ApprovalRequest.objects.filter(
                kind=kind, status=ApprovalRequest.Status.PENDING, **target
            ).exclude(pk=request.pk)
            if open_duplicate.exists():
                raise InvalidStateError("A request for this is already waiting for approval.")
            log(
                request,
                "stayafrica.approval.request",
                user=actor,
                data=_money_data(amount, currency, kind=kind, reason=reason, idempotency_key=idempotency_key),
            )
    return request


def approve(*, request: ApprovalRequest, actor, note: str = "") -> ApprovalRequest:
    """Approve and carry out the request, as one transaction. The requester cannot approve."""
    require_permission(actor, "portal.approve_request")
    with transaction.atomic():
        request = ApprovalRequest.objects.select_for_update().get(pk=request.pk)
        _check_decidable(request, actor)
        requester = request.requested_by
        key = f"approval-{request.pk}"
        if request.kind == ApprovalRequest.Kind.REVERSAL:
            require_permission(requester, "finance.reverse_transaction")
            result = TransactionService.reverse_transaction(
                request.transaction.reference, request.reason, idempotency_key=key, actor=requester
            )
            _log_once(
                request.transaction,
                "stayafrica.reversal",
                actor=actor,
                key=key,
                data=_money_data(
                    request.amount,
                    request.currency,
                    reference=result.reference,
                    reverses=request.transaction.reference,
                    reason=request.reason,
                    requested_by=requester,
                ),
            )
            reference = result.reference
        elif request.kind == ApprovalRequest.Kind.WITHDRAWAL:
            done = complete_withdrawal(
                withdrawal=request.withdrawal, actor=requester, idempotency_key=key, approved_by=actor
            ).result
            reference = done.reference
        else:
            txn = refund_booking(
                booking=request.booking,
                amount=request.amount,
                reason=request.reason,
                actor=requester,
                idempotency_key=key,
                approved_by=actor,
            ).result
            reference = txn.reference
        request.status = ApprovalRequest.Status.APPROVED
        request.approved_by = actor
        request.decided_at = timezone.now()
        request.decision_note = note
        request.result_reference = reference
        request.save(update_fields=["status", "approved_by", "decided_at", "decision_note", "result_reference"])
        log(
            request,
            "stayafrica.approval.approve",
            user=actor,
            data=_money_data(request.amount, request.currency, kind=request.kind, reference=reference, note=note),
        )
    return request


def reject(*, request: ApprovalRequest, actor, note: str) -> ApprovalRequest:
    require_permission(actor, "portal.approve_request")
    note = (note or "").strip()
    if not note:
        raise TransactionError("Say why the request is rejected.", field="note")
    with transaction.atomic():
        request = ApprovalRequest.objects.select_for_update().get(pk=request.pk)
        _check_decidable(request, actor)
        request.status = ApprovalRequest.Status.REJECTED
        request.approved_by = actor
        request.decided_at = timezone.now()
        request.decision_note = note
        request.save(update_fields=["status", "approved_by", "decided_at", "decision_note"])
        log(
            request,
            "stayafrica.approval.reject",
            user=actor,
            data=_money_data(request.amount, request.currency, kind=request.kind, note=note),
        )
    return request


def _check_decidable(request: ApprovalRequest, actor) -> None:
    if request.status != ApprovalRequest.Status.PENDING:
        raise InvalidStateError(f"This request is already {request.get_status_display().lower()}.")
    if request.requested_by_id == actor.pk:
        raise PermissionDeniedError("You requested this yourself: a second person has to approve it.")


def _money_data(amount, currency: str, **extra) -> dict:
    data = {"amount": str(Decimal(amount).quantize(quantum(currency))), "currency": currency}
    for name, value in extra.items():
        data[name] = getattr(value, "username", value) if value is not None else ""
    return data


# --- webhook inbox ------------------------------------------------------------------------------


def replay_webhook(*, event, actor):
    """Apply a flagged or rejected provider event again, with its audit entry in the same transaction."""
    from finance.payments import replay_webhook as apply_again

    require_permission(actor, "finance.replay_webhookevent")
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
