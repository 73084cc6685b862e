from django.contrib import admin

from .models import WalletTransaction


@admin.register(WalletTransaction)
class WalletTransactionAdmin(admin.ModelAdmin):
    """Django's stock changelist: the anchor `make bench-portal` compares the portal with."""

    list_display = ["reference", "wallet", "type", "status", "amount", "currency", "created_at"]
    list_filter = ["type", "status"]
    search_fields = ["reference"]
    list_select_related = ["wallet__user"]
