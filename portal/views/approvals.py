"""The four-eyes queue: pending requests, approve (never your own) or reject with a note."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect

from finance import permissions, staff_actions
from finance.errors import TransactionError
from finance.models import ApprovalRequest

from .base import OperationsView


class ApprovalQueueView(OperationsView):
    permission_required = permissions.VIEW_APPROVALS
    page_title = "Approvals"
    header_icon = "tick-inverse"
    template_name = "portal/approvals.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        related = ("requested_by", "approved_by", "transaction__wallet__user", "withdrawal__wallet__user", "booking")
        context["pending"] = ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING).select_related(
            *related
        )
        context["recent"] = (
            ApprovalRequest.objects.exclude(status=ApprovalRequest.Status.PENDING)
            .select_related(*related)
            .order_by("-decided_at")[:20]
        )
        context["can_approve"] = permissions.allows(self.request.user, permissions.APPROVE_REQUEST)
        return context


class ApprovalDecisionView(OperationsView):
    permission_required = permissions.APPROVE_REQUEST
    template_name = "portal/approvals.html"

    def post(self, request, pk, decision):
        approval = get_object_or_404(ApprovalRequest, pk=pk)
        try:
            if decision == "approve":
                approval = staff_actions.approve_request(
                    request=approval, actor=request.user, note=request.POST.get("note", "")
                )
                messages.success(request, f"{approval} approved and carried out ({approval.result_reference}).")
            else:
                approval = staff_actions.reject_request(
                    request=approval, actor=request.user, note=request.POST.get("note", "")
                )
                messages.success(request, f"{approval} rejected.")
        except TransactionError as error:
            messages.error(request, f"{approval}: {error.message}")
        return redirect("ops_approvals:index")
