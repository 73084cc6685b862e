from django.contrib import admin

from .models import WalletTransaction


class ReadOnlyAdminMixin:
    """Django's admin may show rows but never add, change or delete them.

    Money moves only through finance/services.py (one balanced journal movement, the wallet
    balances and an audit record in one transaction); a row edited here would bypass all three.
    Viewing stays as Django decides: superusers, and staff with the view or change permission.
    The portal's admin site (portal/admin_site.py) mixes this into every model it registers.
    """

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(WalletTransaction)
class WalletTransactionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Django's stock changelist: the anchor `make bench-portal` compares the portal with."""

    list_display = ["reference", "wallet", "type", "status", "amount", "currency", "created_at"]
    list_filter = ["type", "status"]
    search_fields = ["reference"]
    list_select_related = ["wallet__user"]
