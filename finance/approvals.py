"""Four-eyes rules: which money actions wait for a second person, and who may decide them.

A reversal always, and a withdrawal completion or refund above
`settings.APPROVAL_THRESHOLDS[currency]`, become an `ApprovalRequest` instead of moving
money. A second person holding `finance.approve_request` decides it; the requester never
can (refused here, and by the `approval_not_by_requester` database constraint).
Carrying out an approved request is a staff action: `finance.staff_actions.approve_request`.
"""

from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from wagtail.log_actions import log

from .audit import money_data
from .errors import InvalidStateError, PermissionDeniedError
from .models import ApprovalRequest


def needs_approval(amount: Decimal, currency: str) -> bool:
    """True when moving `amount` of `currency` needs a second approver."""
    threshold = getattr(settings, "APPROVAL_THRESHOLDS", {}).get(currency)
    return threshold is not None and amount > threshold


def file_request(*, kind, actor, amount, currency, idempotency_key: str, reason: str = "", **target) -> ApprovalRequest:
    """File (once per idempotency key) a request for a second approver, with its audit entry.

    Refused when another request for the same target is already pending."""
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
                data=money_data(amount, currency, kind=kind, reason=reason, idempotency_key=idempotency_key),
            )
    return request


def lock_for_decision(request: ApprovalRequest, actor) -> ApprovalRequest:
    """Lock the request's row and check it can still be decided, and not by its requester."""
    request = ApprovalRequest.objects.select_for_update().get(pk=request.pk)
    check_decidable(request, actor)
    return request


def check_decidable(request: ApprovalRequest, actor) -> None:
    """Refuse a decision on a request already decided, or by the person who filed it."""
    if request.status != ApprovalRequest.Status.PENDING:
        raise InvalidStateError(f"This request is already {request.get_status_display().lower()}.")
    if request.requested_by_id == actor.pk:
        raise PermissionDeniedError("You requested this yourself: a second person has to approve it.")


def record_decision(request: ApprovalRequest, *, status: str, actor, note: str, reference: str = "") -> None:
    """Write the decision onto the (locked) request."""
    request.status = status
    request.approved_by = actor
    request.decided_at = timezone.now()
    request.decision_note = note
    request.result_reference = reference
    request.save(update_fields=["status", "approved_by", "decided_at", "decision_note", "result_reference"])
