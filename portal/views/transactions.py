"""The transaction page: everything one movement of money touched, reachable from every reference."""

from django.shortcuts import get_object_or_404

from finance import permissions
from finance.models import WalletTransaction

from .base import OperationsView


class TransactionDetailView(OperationsView):
    permission_required = permissions.VIEW_TRANSACTIONS
    header_icon = "list-ol"
    template_name = "portal/transaction_detail.html"

    def dispatch(self, request, reference, *args, **kwargs):
        self.txn = get_object_or_404(WalletTransaction.objects.select_related("wallet__user"), reference=reference)
        return super().dispatch(request, *args, **kwargs)

    def get_page_title(self):
        return f"Transaction {self.txn.reference}"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["txn"] = self.txn
        return context
