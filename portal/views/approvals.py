"""The four-eyes queue: pending requests, approve (never your own) or reject with a note."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect

from finance.errors import TransactionError

from .. import services
from ..models import ApprovalRequest
from .base import OperationsView


class ApprovalQueueView(OperationsView):
    permission_required = "portal.view_approvalrequest"
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
        context["can_approve"] = self.request.user.has_perm("portal.approve_request")
        return context


class ApprovalDecisionView(OperationsView):
    permission_required = "portal.approve_request"
    template_name = "portal/approvals.html"

    def post(self, request, pk, decision):
        approval = get_object_or_404(ApprovalRequest, pk=pk)
        try:
            if decision == "approve":
                approval = services.approve(request=approval, actor=request.user, note=request.POST.get("note", ""))
                messages.success(request, f"{approval} approved and carried out ({approval.result_reference}).")
            else:
                approval = services.reject(request=approval, actor=request.user, note=request.POST.get("note", ""))
                messages.success(request, f"{approval} rejected.")
        except TransactionError as error:
            messages.error(request, f"{approval}: {error.message}")
        return redirect("ops_approvals:index")
