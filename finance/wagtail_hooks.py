"""Read-only Wagtail views of the ledger: wallets, transactions, withdrawals.

Money never changes here: these views only list and inspect. Changes go through
`finance.staff_actions`, whose audit action codes are registered here too.
"""

from wagtail import hooks
from wagtail.admin.viewsets.model import ModelViewSet
from wagtail.permission_policies.base import ModelPermissionPolicy
from wagtail.permissions import register_permission_policy

from .audit import ACTIONS
from .models import Wallet, WalletTransaction, Withdrawal


class ViewOnlyPermissionPolicy(ModelPermissionPolicy):
    """Grants only the model's `view` permission, whatever else the user holds."""

    def user_has_permission(self, user, action):
        return action == "view" and super().user_has_permission(user, action)

    def user_has_any_permission(self, user, actions):
        return "view" in actions and self.user_has_permission(user, "view")


class ReadOnlyViewSet(ModelViewSet):
    inspect_view_enabled = True
    copy_view_enabled = False
    add_to_reference_index = False
    # Required by ModelViewSet; the add and edit views are unreachable under the policy.
    form_fields = ["status"]


class WalletViewSet(ReadOnlyViewSet):
    model = Wallet
    icon = "list-ul"
    list_display = ["user", "currency", "status", "balance", "held_balance", "available_balance"]
    list_filter = ["currency", "status"]
    search_fields = ["user__username", "user__email"]


class WalletTransactionViewSet(ReadOnlyViewSet):
    model = WalletTransaction
    icon = "list-ol"
    menu_label = "Transactions"
    list_display = ["reference", "wallet", "type", "status", "direction", "amount", "currency", "created_at"]
    list_filter = ["type", "status", "currency"]
    search_fields = ["reference"]


class WithdrawalViewSet(ReadOnlyViewSet):
    model = Withdrawal
    icon = "upload"
    list_display = ["reference", "wallet", "amount", "currency", "status", "created_at"]
    list_filter = ["status", "currency"]
    search_fields = ["reference"]


for _model in (Wallet, WalletTransaction, Withdrawal):
    register_permission_policy(_model, ViewOnlyPermissionPolicy(_model))


@hooks.register("register_admin_viewset")
def register_ledger_viewsets():
    # Registered without a menu item: the Operations menu (portal/viewsets.py) is the way
    # in; these stay as read-only inspect pages of the raw rows.
    return [WalletViewSet(), WalletTransactionViewSet(), WithdrawalViewSet()]


@hooks.register("register_log_actions")
def register_staff_action_codes(actions):
    for code, (label, message) in ACTIONS.items():
        actions.register_action(code, label, message)
