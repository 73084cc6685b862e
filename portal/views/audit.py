"""The managers' audit log: every staff action, from Wagtail's log entries."""

from decimal import Decimal, InvalidOperation

import django_tables2 as tables
from wagtail.models import ModelLogEntry

from finance import permissions
from finance.errors import TransactionError
from finance.money import format_money

from ..filters import AuditFilter, staff_action_choices
from ..tables import DateTimeColumn
from .base import TableListView


class AuditTable(tables.Table):
    timestamp = DateTimeColumn(verbose_name="When", format="Y-m-d H:i:s")
    user = tables.Column(accessor="user__username", verbose_name="Who", order_by=("user__username",))
    action = tables.Column(verbose_name="Action")
    label = tables.Column(verbose_name="Object")
    amount = tables.Column(accessor="data__amount", verbose_name="Amount", orderable=False)
    reason = tables.Column(accessor="data", verbose_name="Reason / note", orderable=False)

    class Meta:
        model = ModelLogEntry
        fields = ("timestamp", "user", "action", "label", "amount", "reason")
        order_by = ("-timestamp",)

    def render_action(self, value):
        return dict(staff_action_choices()).get(value, value)

    def render_amount(self, value, record):
        currency = record.data.get("currency", "")
        try:
            return format_money(Decimal(value), currency)
        except (InvalidOperation, TransactionError):  # an entry written by another version
            return f"{currency} {value}"

    def render_reason(self, value):
        return value.get("reason") or value.get("note") or "—"


class AuditLogView(TableListView):
    permission_required = permissions.VIEW_AUDIT_LOG
    page_title = "Audit log"
    header_icon = "history"
    table_class = AuditTable
    filterset_class = AuditFilter
    export_filename = "audit-log.csv"
    export_columns = [
        ("When", "timestamp"),
        ("Who", "user.username"),
        ("Action", "action"),
        ("Object", "label"),
        ("Object id", "object_id"),
        ("Amount", "data.amount"),
        ("Currency", "data.currency"),
        ("Reference", "data.reference"),
        ("Reason", "data.reason"),
        ("Note", "data.note"),
    ]

    def get_queryset(self):
        return ModelLogEntry.objects.filter(action__startswith="stayafrica.").select_related("user")
