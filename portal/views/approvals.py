"""The four-eyes queue: pending requests, approve (never your own) or reject with a note."""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.functional import cached_property

from finance import approvals, permissions, staff_actions
from finance.errors import TransactionError
from finance.models import ApprovalRequest
from finance.money import format_money

from .base import OperationsView
from .confirmation import Confirmation, ConfirmationMixin, clean_text

RELATED = (
    "requested_by",
    "approved_by",
    "transaction__wallet__user",
    "withdrawal__wallet__user",
    "withdrawal__bank_account",
    "booking__guest",
    "booking__rental_property__host",
)


class ApprovalQueueView(OperationsView):
    permission_required = permissions.VIEW_APPROVALS
    page_title = "Approvals"
    header_icon = "tick-inverse"
    template_name = "portal/approvals.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["pending"] = ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING).select_related(
            *RELATED
        )
        context["recent"] = (
            ApprovalRequest.objects.exclude(status=ApprovalRequest.Status.PENDING)
            .select_related(*RELATED)
            .order_by("-decided_at")[:20]
        )
        context["can_approve"] = permissions.allows(self.request.user, permissions.APPROVE_REQUEST)
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
                f"Nothing moves: the {a.get_kind_display().lower()} of {format_money(a.amount, a.currency)} "
                "is not carried out.",
                requested,
                f"{a.requested_by} sees your note in the approvals history.",
            ],
            quote_label="Your note (why it is rejected)",
            danger=True,
            yes="Yes, reject",
            **common,
        )

    def render_confirmation(self, confirmation, status):
        context = self.get_context_data(confirmation=confirmation, confirming=self.approval.pk)
        return self.render_to_response(context, status=status)

    def render_invalid(self, error):
        if self.approval.status != ApprovalRequest.Status.PENDING:
            messages.error(self.request, f"{self.approval}: {error.message}")
        context = self.get_context_data(
            error=error.message, error_for=self.approval.pk, note=self.request.POST.get("note", "")
        )
        return self.render_to_response(context, status=400)

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
            messages.error(self.request, f"{approval}: {error.message}")
        return redirect("ops_approvals:index")


def what_moves(a: ApprovalRequest) -> str:
    """The money an approval moves, from whom to whom, with the resulting balance where there is one."""
    amount = format_money(a.amount, a.currency)
    if a.kind == ApprovalRequest.Kind.REVERSAL:
        txn = a.transaction
        wallet = txn.wallet
        return (
            f"Reversal of {txn.reference} ({txn.get_type_display().lower()} of {amount}): {wallet.user}'s balance "
            f"goes from {format_money(wallet.balance, wallet.currency)} to "
            f"{format_money(wallet.balance - txn.signed_amount, wallet.currency)}."
        )
    if a.kind == ApprovalRequest.Kind.WITHDRAWAL:
        w = a.withdrawal
        wallet = w.wallet
        return (
            f"Withdrawal {w.reference}: {amount} goes to {w.bank_account} ({wallet.user}); the wallet balance goes "
            f"from {format_money(wallet.balance, wallet.currency)} to "
            f"{format_money(wallet.balance - w.amount, wallet.currency)}."
        )
    booking = a.booking
    return (
        f"Refund of {amount} to {booking.guest} for booking #{booking.pk}; the host "
        f"{booking.rental_property.host}'s wallet is debited their share."
    )
