"""Four-eyes rules: which money actions wait for a second person, and who may decide them.

A reversal always needs a second approver. A refund or a withdrawal completion needs one
when it would take what staff have moved for the host, in its currency, within the rolling
window above `settings.APPROVAL_THRESHOLDS[currency]` (see `moved_without_approval`), and
always when the currency has no threshold. A refund also needs one when it would leave the
host's wallet further below zero than `settings.NEGATIVE_BALANCE_APPROVAL_LIMITS[currency]`
(any amount below zero when the currency has no limit; `negative_balance_reason`).
The decision is taken under the host wallet's row lock (`lock_refund`, `lock_withdrawal`),
in the same transaction as the money moves, so concurrent filers, one person or several,
queue on that lock and each sees what the others moved. Instead of moving money, such an
action files an `ApprovalRequest`, which records why it needed approval (`approval_reason`).

A second person holding `finance.approve_request` decides it; the requester never
can (refused here, and by the `approval_not_by_requester` database constraint).
Carrying out an approved request is a staff action: `finance.staff_actions.approve_request`.
"""

import logging
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from wagtail.log_actions import log

from .audit import money_data
from .errors import InvalidStateError, NotFoundError, PermissionDeniedError
from .models import ApprovalRequest, IdempotencyRecord, Payment, Wallet, WalletTransaction, Withdrawal
from .money import format_money

EVERY_REVERSAL = "Every reversal needs a second approver."

# What the requester is told happened to their request (notify_requester).
APPROVED, REJECTED, NOT_CARRIED_OUT = "approved", "rejected", "not carried out"

logger = logging.getLogger("finance")


def window() -> timedelta:
    return timedelta(hours=settings.APPROVAL_WINDOW_HOURS)


def threshold(currency: str) -> Decimal | None:
    return getattr(settings, "APPROVAL_THRESHOLDS", {}).get(currency)


def moved_without_approval(wallet: Wallet, *, since=None) -> Decimal:
    """What staff moved out of the host's `wallet` since `since` (default: the window's start)
    without a second approver: the rule the thresholds apply to.

    Counted: completed refunds debiting the wallet, at the amount the guest got back (the
    host's share and the commission clawed back together: what a refund request is for),
    and withdrawals from it completed in the window, or sent to a provider in it and still
    processing, at their amount. Not counted:
    what a second person approved (their request carried it out, so someone already
    looked), a refund since reversed (its reversal was approved and undid it), and
    withdrawals failed or still pending (nothing left). One wallet per host and currency,
    so this is per host, per currency, whoever on the staff moved it.
    """
    since = since or timezone.now() - window()
    approved = ApprovalRequest.objects.filter(status=ApprovalRequest.Status.APPROVED, decided_at__gte=since)
    refunds = (
        WalletTransaction.objects.filter(
            wallet=wallet,
            type=WalletTransaction.Type.REFUND,
            status=WalletTransaction.Status.COMPLETED,
            created_at__gte=since,
        )
        .exclude(reference__in=approved.filter(kind=ApprovalRequest.Kind.REFUND).values("result_reference"))
        .values_list("metadata", "amount")
    )
    # A payout sent to a provider counts from when it was sent: its transfer is on its way.
    sent_or_completed = Q(status=Withdrawal.Status.COMPLETED, processed_at__gte=since) | Q(
        status=Withdrawal.Status.PROCESSING, payout_sent_at__gte=since
    )
    withdrawals = (
        Withdrawal.objects.filter(sent_or_completed, wallet=wallet)
        .exclude(
            pk__in=approved.filter(kind=ApprovalRequest.Kind.WITHDRAWAL, withdrawal__isnull=False).values(
                "withdrawal_id"
            )
        )
        .values_list("amount", flat=True)
    )
    # Summed as Decimal in Python, from the metadata's exact strings: no float on any database.
    total = sum((Decimal(metadata.get("refund_amount", amount)) for metadata, amount in refunds), Decimal(0))
    return total + sum(withdrawals, Decimal(0))


def approval_reason(
    *,
    kind: str,
    amount: Decimal,
    currency: str,
    wallet: Wallet | None,
    already=None,
    host_debit: Decimal | None = None,
) -> str:
    """Why moving `amount` out of the host's `wallet` needs a second approver now; "" when it
    may go straight through. `already`: what counts as moved so far, when the caller knows.
    `host_debit` (refunds): the host's share, which may take their wallet below zero; past
    the currency's negative-balance limit that needs a second approver too.

    Final only when called under the wallet's row lock (`lock_refund`, `lock_withdrawal`);
    the portal also calls it unlocked, to say what is likely before it asks."""
    noun = {ApprovalRequest.Kind.REFUND: "refund", ApprovalRequest.Kind.WITHDRAWAL: "withdrawal completion"}.get(kind)
    if noun is None:
        return EVERY_REVERSAL
    limit = threshold(currency)
    if limit is None:
        reasons = [f"No approval threshold is configured for {currency}: every {noun} needs a second approver."]
    elif wallet is None:  # nothing to refund from: the action refuses it anyway
        return ""
    else:
        moved = moved_without_approval(wallet) if already is None else already
        reasons = [_threshold_reason(wallet, amount, currency, moved, limit)] if moved + amount > limit else []
    if wallet is not None and host_debit is not None:
        reasons.append(negative_balance_reason(wallet, host_debit, currency))
    return " ".join(reason for reason in reasons if reason)


def _threshold_reason(wallet: Wallet, amount: Decimal, currency: str, moved: Decimal, limit: Decimal) -> str:
    return (
        f"{format_money(moved + amount, currency)} moved for host {wallet.user} within "
        f"{settings.APPROVAL_WINDOW_HOURS} h would exceed the {format_money(limit, currency)} threshold "
        f"({format_money(moved, currency)} already moved without a second approver)."
    )


def negative_balance_limit(currency: str) -> Decimal | None:
    """How far below zero a refund may take a host's wallet without a second approver; None
    when the currency has no limit (then any refund that takes it below zero needs one)."""
    return getattr(settings, "NEGATIVE_BALANCE_APPROVAL_LIMITS", {}).get(currency)


def negative_balance_reason(wallet: Wallet, host_debit: Decimal, currency: str) -> str:
    """Why a refund taking `host_debit` from the host's `wallet` needs a second approver
    because of where it leaves the wallet; "" when it does not."""
    after = wallet.available_balance - host_debit
    if after >= 0:
        return ""
    limit = negative_balance_limit(currency)
    if limit is None:
        return (
            f"This refund would leave the host's wallet at {signed_money(after, currency)}, and no "
            f"negative-balance limit is configured for {currency}: a refund that takes a host below zero "
            "needs a second approver."
        )
    if after >= -limit:
        return ""
    return (
        f"This refund would leave the host's wallet at {signed_money(after, currency)}, beyond the "
        f"{format_money(limit, currency)} a refund may take a host below zero without a second approver."
    )


def signed_money(amount: Decimal, currency: str) -> str:
    """A balance as staff read it: −NGN 150,000.00 below zero."""
    return f"−{format_money(-amount, currency)}" if amount < 0 else format_money(amount, currency)


# --- locks: the ledger's order (finance.services): payment or withdrawal first, then the wallet


def lock_refund(booking) -> tuple[Payment | None, Wallet | None]:
    """Lock the booking's refundable payment, then the host wallet a refund debits.

    The same rows, in the same order, as TransactionService.process_refund, which runs
    later in the same transaction and so waits for nothing more."""
    payment = (
        Payment.objects.select_for_update(of=("self",))
        .select_related("ledger_transaction")
        .refundable_for(booking)
        .first()
    )
    if payment is None:
        return None, None
    return payment, _lock_wallet(payment.ledger_transaction.wallet_id)


def lock_withdrawal(withdrawal: Withdrawal) -> tuple[Withdrawal, Wallet]:
    """Lock the withdrawal and its pending transaction (as TransactionService.complete_withdrawal
    does, in one statement), then the wallet it pays out of."""
    try:
        locked = Withdrawal.objects.select_for_update().select_related("transaction").get(pk=withdrawal.pk)
    except Withdrawal.DoesNotExist:
        raise NotFoundError("Withdrawal not found.") from None
    return locked, _lock_wallet(locked.wallet_id)


def _lock_wallet(wallet_id: int) -> Wallet:
    """Lock the wallet's row only (`of`): its owner is read for the reason, never locked."""
    return Wallet.objects.select_for_update(of=("self",)).select_related("user").get(pk=wallet_id)


def earlier_request(key: str) -> ApprovalRequest | None:
    """The request this (scoped) key already filed: a double submit gets it back."""
    return ApprovalRequest.objects.filter(idempotency_key=key).first()


def already_moved(key: str, operation: str) -> bool:
    """Whether this (scoped) key already moved money: its replay goes to the service, which
    hands back the first result, whatever the window says now."""
    return IdempotencyRecord.objects.filter(key=key, operation=operation).exists()


def file_request(
    *, kind, actor, amount, currency, idempotency_key: str, approval_reason: str, reason: str = "", **target
) -> ApprovalRequest:
    """File (once per idempotency key) a request for a second approver, with its audit entry.

    `approval_reason` says why it needs one (shown in the queue and the audit entry).
    Refused when another request for the same target is already pending."""
    with transaction.atomic():
        try:
            request, created = ApprovalRequest.objects.get_or_create(
                idempotency_key=idempotency_key,
                defaults={
                    "kind": kind,
                    "requested_by": actor,
                    "amount": amount,
                    "currency": currency,
                    "reason": reason,
                    "approval_reason": approval_reason,
                    **target,
                },
            )
        except IntegrityError:
            # Not this key (get_or_create would have returned its request): the database's
            # one-pending-request-per-target constraint, even when filed at the same instant.
            raise InvalidStateError("A request for this is already waiting for approval.") from None
        if created:
            log(
                request,
                "stayafrica.approval.request",
                user=actor,
                data=money_data(
                    amount,
                    currency,
                    kind=kind,
                    reason=reason,
                    approval_reason=approval_reason,
                    idempotency_key=idempotency_key,
                ),
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


def waiting_count() -> int:
    """How many requests wait for a second approver (the Operations menu's badge): one COUNT
    on the (status, created_at) index; the pending requests are few."""
    return ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING).count()


def describe(request: ApprovalRequest) -> str:
    """What the request is for, in a few words: "refund of NGN 400.00 for booking #12"."""
    amount = format_money(request.amount, request.currency)
    if request.kind == ApprovalRequest.Kind.REVERSAL:
        return f"reversal of {request.transaction.reference} ({amount})"
    if request.kind == ApprovalRequest.Kind.WITHDRAWAL:
        return f"completion of withdrawal {request.withdrawal.reference} ({amount})"
    return f"refund of {amount} for booking #{request.booking_id}"


def queue_url(request: ApprovalRequest) -> str:
    """The request's row on the approvals page, as a full address for an e-mail."""
    try:
        path = reverse("ops_approvals:index")
    except NoReverseMatch:  # a URL configuration without the portal
        path = "/admin/operations/approvals/"
    return f"{settings.WAGTAILADMIN_BASE_URL.rstrip('/')}{path}#approval-{request.pk}"


def notify_requester(request: ApprovalRequest, *, outcome: str, decider, note: str = "", why: str = "") -> None:
    """E-mail the requester what became of their request (`outcome`: APPROVED, REJECTED, or
    NOT_CARRIED_OUT with `why`), once the decision is committed: inside a transaction the
    mail waits for its commit and is never sent for one rolled back. A requester without an
    e-mail address is skipped; a mail failure is logged, never undoes the decision."""
    requester = request.requested_by
    if not requester.email:
        return
    what = describe(request)
    subject = f"Request #{request.pk} {outcome}: {what}"
    body = render_to_string(
        "finance/email/approval_outcome.txt",
        {
            "request": request,
            "requester": requester,
            "what": what,
            "outcome": outcome,
            "not_carried_out": outcome == NOT_CARRIED_OUT,
            "decider": decider,
            "note": note,
            "why": why,
            "url": queue_url(request),
        },
    )

    def send():
        try:
            send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [requester.email])
        except Exception:
            logger.exception("Could not e-mail %s the outcome of approval request #%s", requester, request.pk)

    transaction.on_commit(send)
