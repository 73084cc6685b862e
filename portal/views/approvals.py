"""The four-eyes queue: pending requests, approve (never your own) or reject with a note."""

from dataclasses import dataclass
from decimal import Decimal

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.functional import cached_property

from finance import approvals, permissions, staff_actions
from finance.errors import TransactionError
from finance.models import ApprovalRequest, Payment, Wallet
from finance.money import format_money
from finance.services import refund_split

from .base import OperationsView
from .confirmation import Confirmation, ConfirmationMixin, clean_text
from .finance import VIEW_REFUNDS

RELATED = (
    "requested_by",
    "approved_by",
    "transaction__wallet__user",
    "withdrawal__wallet__user",
    "withdrawal__bank_account",
    "withdrawal__transaction",
    "booking__guest",
    "booking__rental_property__host",
)

# The history's outcome filter: what a person picks, and the statuses it shows.
OUTCOMES = {
    "": ("Any outcome", None),
    "approved": ("Approved", ApprovalRequest.Status.APPROVED),
    "rejected": ("Rejected", ApprovalRequest.Status.REJECTED),
    "failed": ("Failed on execution", ApprovalRequest.Status.FAILED),
}
HISTORY_PER_PAGE = 20


@dataclass
class Effect:
    """What approving a request does to the wallet it touches: `before` → `after`."""

    wallet: Wallet
    before: Decimal
    after: Decimal
    sentence: str

    @property
    def covered(self) -> bool:
        """Whether the wallet can take it now (what it holds for open withdrawals stays)."""
        return self.after >= self.wallet.held_balance


def refund_payments(requests) -> dict[int, Payment]:
    """The payment each refund request would draw on (the booking's first settled one), by
    booking, with the host wallet: one query for all of them."""
    booking_ids = {a.booking_id for a in requests if a.kind == ApprovalRequest.Kind.REFUND and a.booking_id}
    found: dict[int, Payment] = {}
    if booking_ids:
        payments = (
            Payment.objects.filter(booking_id__in=booking_ids, ledger_transaction__isnull=False)
            .select_related("booking", "ledger_transaction__wallet__user")
            .order_by("pk")
        )
        for payment in payments:
            found.setdefault(payment.booking_id, payment)
    return found


def effect_of(a: ApprovalRequest, payment: Payment | None = None) -> Effect | None:
    """The balance effect of carrying out `a` now (`payment`: a refund's, from refund_payments)."""
    amount = format_money(a.amount, a.currency)
    if a.kind == ApprovalRequest.Kind.REVERSAL:
        txn = a.transaction
        wallet = txn.wallet
        after = wallet.balance - txn.signed_amount
        sentence = (
            f"Reversal of {txn.reference} ({txn.get_type_display().lower()} of {amount}): {wallet.user}'s balance "
            f"goes from {format_money(wallet.balance, wallet.currency)} to {format_money(after, wallet.currency)}."
        )
        return Effect(wallet, wallet.balance, after, sentence)
    if a.kind == ApprovalRequest.Kind.WITHDRAWAL:
        w = a.withdrawal
        wallet = w.wallet
        after = wallet.balance - w.amount
        sentence = (
            f"Withdrawal {w.reference}: {amount} goes to {w.bank_account} ({wallet.user}); the wallet balance goes "
            f"from {format_money(wallet.balance, wallet.currency)} to {format_money(after, wallet.currency)}."
        )
        return Effect(wallet, wallet.balance, after, sentence)
    booking = a.booking
    if payment is None:
        return None
    wallet = payment.ledger_transaction.wallet
    split = refund_split(payment, a.amount)
    after = wallet.balance - split.host_debit
    sentence = (
        f"Refund of {amount} to {booking.guest} for booking #{booking.pk}: "
        f"{format_money(split.commission_back, a.currency)} commission clawed back, "
        f"{format_money(split.host_debit, a.currency)} debited from {booking.rental_property.host}'s wallet "
        f"(balance {format_money(wallet.balance, wallet.currency)} → {format_money(after, wallet.currency)})."
    )
    return Effect(wallet, wallet.balance, after, sentence)


def what_moves(a: ApprovalRequest) -> str:
    """The money an approval moves, from whom to whom, with the resulting balance."""
    effect = effect_of(a, refund_payments([a]).get(a.booking_id))
    if effect is not None:
        return effect.sentence
    amount = format_money(a.amount, a.currency)
    return f"Refund of {amount} for booking #{a.booking_id}: the booking has no settled payment to refund."


class ApprovalQueueView(OperationsView):
    permission_required = permissions.VIEW_APPROVALS
    page_title = "Approvals"
    header_icon = "tick-inverse"
    template_name = "portal/approvals.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        pending = list(ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING).select_related(*RELATED))
        payments = refund_payments(pending)
        for a in pending:
            a.effect = effect_of(a, payments.get(a.booking_id))
        context["pending"] = pending
        outcome = self.request.GET.get("outcome", "")
        if outcome not in OUTCOMES:
            outcome = ""
        decided = ApprovalRequest.objects.exclude(status=ApprovalRequest.Status.PENDING)
        if OUTCOMES[outcome][1]:
            decided = decided.filter(status=OUTCOMES[outcome][1])
        history = Paginator(decided.select_related(*RELATED).order_by("-decided_at", "-id"), HISTORY_PER_PAGE)
        context["recent"] = history.get_page(self.request.GET.get("page"))
        context["outcome"] = outcome
        context["outcomes"] = [(value, label) for value, (label, _) in OUTCOMES.items()]
        user = self.request.user
        context["can_approve"] = permissions.allows(user, permissions.APPROVE_REQUEST)
        context["can_view_wallets"] = permissions.allows(user, permissions.VIEW_WALLETS)
        context["can_view_withdrawals"] = permissions.allows(user, permissions.VIEW_WITHDRAWALS)
        context["can_view_refunds"] = permissions.allows(user, *VIEW_REFUNDS)
        return context


class ApprovalDecisionView(ConfirmationMixin, ApprovalQueueView):
    """Approve and carry out, or reject, one request: its confirmation says what moves, for whom."""

    permission_required = permissions.APPROVE_REQUEST

    def dispatch(self, request, *args, **kwargs):
        if kwargs["decision"] not in ("approve", "reject"):
            raise Http404
        self.decision = kwargs["decision"]
        self.confirmation_action = f"approval.{self.decision}"
        return super().dispatch(request, *args, **kwargs)

    @cached_property
    def approval(self):
        return get_object_or_404(ApprovalRequest.objects.select_related(*RELATED), pk=self.kwargs["pk"])

    def get_confirmation_params(self):
        approval, note = self.approval, clean_text(self.request.POST.get("note"))
        if self.decision == "reject":
            note = staff_actions.clean_rejection_note(note)
        approvals.check_decidable(approval, self.request.user)
        return {"amount": str(approval.amount), "currency": approval.currency, "note": note}

    def get_confirmation_target(self):
        return self.approval.pk

    def describe_confirmation(self, params):
        a = self.approval
        common = {
            "url": reverse("ops_approvals:decide", args=[a.pk, self.decision]),
            "fields": [("note", params["note"])],
            "quote": params["note"],
            "cancel_url": f"{reverse('ops_approvals:index')}#approval-{a.pk}",
            "id": f"confirm-{self.decision}-{a.pk}",
        }
        requested = f"Requested by {a.requested_by}" + (f", because: {a.reason}" if a.reason else ".")
        why = [f"Why it needs a second approver: {a.approval_reason}"] if a.approval_reason else []
        if self.decision == "approve":
            return Confirmation(
                label=f"Confirm approval of request #{a.pk}",
                question=f"Approve and carry out request #{a.pk}?",
                effects=[
                    what_moves(a),
                    requested,
                    *why,
                    "You are the second approver: this happens as soon as you confirm.",
                ],
                quote_label="Your note",
                yes="Yes, approve",
                **common,
            )
        return Confirmation(
            label=f"Confirm rejection of request #{a.pk}",
            question=f"Reject request #{a.pk}?",
            effects=[
                f"Nothing moves: the {approvals.describe(a)} is not carried out.",
                requested,
                f"{a.requested_by} is told by e-mail, with your note; it stays in the approvals history."
                if a.requested_by.email
                else f"{a.requested_by} sees your note in the approvals history.",
            ],
            quote_label="Your note (why it is rejected)",
            danger=True,
            yes="Yes, reject",
            **common,
        )

    def render_confirmation(self, confirmation, status):
        context = self.get_context_data(confirmation=confirmation, confirming=self.approval.pk)
        return self.render_to_response(context, status=status)

    def render_invalid(self, error, *, status=400):
        if self.approval.status != ApprovalRequest.Status.PENDING:
            messages.error(self.request, f"{self.approval}: {error.message}")
        context = self.get_context_data(
            error=error.message, error_for=self.approval.pk, note=self.request.POST.get("note", "")
        )
        return self.render_to_response(context, status=status)

    def perform(self, params, key):
        approval, actor = self.approval, self.request.user
        try:
            if self.decision == "approve":
                approval = staff_actions.approve_request(request=approval, actor=actor, note=params["note"])
                messages.success(self.request, f"{approval} approved and carried out ({approval.result_reference}).")
            else:
                approval = staff_actions.reject_request(request=approval, actor=actor, note=params["note"])
                messages.success(self.request, f"{approval} rejected.")
        except TransactionError as error:
            approval.refresh_from_db(fields=["status"])
            if approval.status != ApprovalRequest.Status.PENDING:  # decided meanwhile: the history says how
                return self.render_invalid(error, status=error.status)
            # Nothing changed: the row again, with the note as typed and why it could not be done.
            verb = "carried out" if self.decision == "approve" else "rejected"
            refusal = TransactionError(
                f"Request #{approval.pk} could not be {verb}: {error.message} Nothing was moved and the request "
                "is still waiting: try again later, or reject it with your note."
                if self.decision == "approve"
                else f"Request #{approval.pk} could not be {verb}: {error.message}"
            )
            return self.render_invalid(refusal, status=error.status if error.status >= 400 else 400)
        return redirect("ops_approvals:index")
