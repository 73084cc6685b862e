"""The transaction page: everything one movement of money touched, reachable from every reference."""

from decimal import Decimal, InvalidOperation

from django.http import Http404
from django.urls import reverse

from finance import permissions, staff_actions
from finance.errors import TransactionError
from finance.models import WalletTransaction
from finance.money import format_money

from .. import selectors
from .base import OperationsView
from .finance import VIEW_REFUNDS


class TransactionDetailView(OperationsView):
    permission_required = permissions.VIEW_TRANSACTIONS
    header_icon = "list-ol"
    template_name = "portal/transaction_detail.html"

    def get(self, request, reference, *args, **kwargs):
        # After the permission check (dispatch): someone who may not look learns nothing of what exists.
        self.trail = selectors.transaction_trail(reference)
        if self.trail is None:
            raise Http404("No transaction with this reference.")
        return super().get(request, *args, **kwargs)

    def get_page_title(self):
        return f"Transaction {self.trail.txn.reference}"

    def get_breadcrumbs_items(self):
        transactions = {"url": reverse("ops_transactions:index"), "label": "Transactions"}
        return [*self.breadcrumbs_items, transactions, {"url": "", "label": self.trail.txn.reference}]

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        user, trail = self.request.user, self.trail
        context.update(
            trail=trail,
            txn=trail.txn,
            log_entries=[_log_row(entry) for entry in trail.log_entries],
            ledger_audit=[(row, _ledger_action(row.action)) for row in trail.ledger_audit],
            can_view_wallets=permissions.allows(user, permissions.VIEW_WALLETS),
            can_view_refunds=permissions.allows(user, *VIEW_REFUNDS),
            can_view_approvals=permissions.allows(user, permissions.VIEW_APPROVALS),
            can_view_webhooks=permissions.allows(user, permissions.VIEW_WEBHOOKS),
            can_view_withdrawals=permissions.allows(user, permissions.VIEW_WITHDRAWALS),
            can_reverse=permissions.allows(user, permissions.REVERSE_TRANSACTION)
            and staff_actions.can_be_reversed(trail.txn),
        )
        return context


def _log_row(entry) -> dict:
    """A staff log entry as the page shows it: the amount at its currency's precision, the reason or note."""
    data = entry.data or {}
    amount, currency = data.get("amount", ""), data.get("currency", "")
    try:
        amount = format_money(Decimal(amount), currency) if amount else ""
    except (InvalidOperation, TransactionError):  # an entry written by another version
        amount = f"{currency} {amount}"
    return {
        "timestamp": entry.timestamp,
        "who": entry.user_display_name,
        "message": entry.message,
        "amount": amount,
        "reference": data.get("reference", ""),
        "reverses": data.get("reverses", ""),
        "reason": data.get("reason") or data.get("note") or "",
        "requested_by": data.get("requested_by", ""),
    }


def _ledger_action(action: str) -> str:
    """A ledger audit code in words: "transaction.refund" → "Refund posted",
    "transaction.withdrawal.completed" → "Withdrawal completed"."""
    kind, _, rest = action.partition(".")
    type_code, _, status = rest.partition(".")
    if kind != "transaction" or type_code not in WalletTransaction.Type.values:
        return action
    label = WalletTransaction.Type(type_code).label
    return f"{label} {status or 'posted'}"
