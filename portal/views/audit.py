"""The managers' audit log: every staff action, sign-in, refusal and export, from Wagtail's log entries."""

from decimal import Decimal, InvalidOperation

import django_tables2 as tables
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db.models import BigIntegerField, Case, CharField, OuterRef, Subquery, When
from django.db.models.functions import Cast
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.http import urlencode
from wagtail.models import ModelLogEntry

from finance import permissions
from finance.errors import TransactionError
from finance.models import ApprovalRequest, Booking, WalletTransaction, WebhookEvent, Withdrawal, WithdrawalBatch
from finance.money import format_money
from jobs.models import JobRecord
from messaging.models import Broadcast

from ..csv_export import money, person
from ..filters import AuditFilter, staff_action_choices
from ..links import transaction_link
from ..tables import DateTimeColumn
from .base import TableListView


def action_label(code: str) -> str:
    """The action's readable label, as registered with Wagtail ("Refund", not "stayafrica.refund")."""
    return _labels().get(code, code)


def _labels() -> dict[str, str]:
    return dict(staff_action_choices())


def details(entry) -> str:
    """What else the entry says, in words: the reason or note, and for the events that are not
    staff actions, what was refused, what was exported, where a sign-in came from."""
    data = entry.data or {}
    parts = []
    if entry.action == "stayafrica.access.denied":
        where = " ".join(part for part in (data.get("method"), data.get("path")) if part)
        parts.append(f"Needs {data.get('permission') or 'a permission'}" + (f" ({where})" if where else ""))
    elif entry.action == "stayafrica.export":
        rows = data.get("rows", 0)
        filters = ", ".join(f"{name}={value}" for name, value in (data.get("filters") or {}).items())
        stopped = "" if data.get("complete", True) else ", stopped early"
        parts.append(f"{rows} row{'' if rows == 1 else 's'}{stopped}")
        parts.append(f"filters: {filters}" if filters else "no filters")
    elif entry.action.startswith("stayafrica.auth."):
        if entry.action in ("stayafrica.auth.login_failed", "stayafrica.auth.lockout") and data.get("username"):
            parts.append(f"username tried: {data['username']}")
        if data.get("ip"):
            parts.append(f"from {data['ip']}")
    for key in ("reason", "note"):
        if data.get(key):
            parts.append(str(data[key]))
    return "; ".join(parts)


# Where an entry's object is seen, by the object's model: (the permission that page needs,
# url(object_id, data)). A transaction links through transaction_link; an export to its list.
OBJECT_PAGES = {
    Withdrawal: (permissions.VIEW_WITHDRAWALS, lambda pk, data: reverse("ops_withdrawals:index")),
    WithdrawalBatch: (
        permissions.VIEW_WITHDRAWALS,
        lambda pk, data: reverse("ops_withdrawals:bulk_progress", args=[pk]),
    ),
    Booking: (permissions.REFUND_BOOKING, lambda pk, data: f"{reverse('ops_refunds:index')}?booking={pk}"),
    ApprovalRequest: (permissions.VIEW_APPROVALS, lambda pk, data: f"{reverse('ops_approvals:index')}#approval-{pk}"),
    WebhookEvent: (permissions.VIEW_WEBHOOKS, lambda pk, data: f"{reverse('ops_webhooks:index')}?show=all"),
    Broadcast: (permissions.SEND_BROADCAST, lambda pk, data: reverse("ops_broadcasts:detail", args=[pk])),
    JobRecord: (permissions.VIEW_JOBS, lambda pk, data: reverse("ops_jobs:index")),
    # A person (who signed in, was refused, exported): their wallets.
    get_user_model(): (
        permissions.VIEW_WALLETS,
        lambda pk, data: f"{reverse('ops_wallets:index')}?{urlencode({'owner': data['username']})}",
    ),
}


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

    @cached_property
    def labels(self) -> dict[str, str]:
        return _labels()  # once per table, not once per row

    @cached_property
    def viewer(self):
        return getattr(getattr(self, "request", None), "user", None)

    def allows(self, permission: str) -> bool:
        return permissions.allows(self.viewer, permission)  # has_perm caches: no query per row

    def render_user(self, value, record):
        shown = str(record.user)
        if shown == value:
            return value
        return format_html("{}<br><small>{}</small>", shown, value)

    def render_action(self, value):
        return self.labels.get(value, value)

    def render_label(self, value, record):
        url = self.object_url(record)
        if url is None:
            return value
        if url == "transaction":
            return transaction_link(value, user=self.viewer)
        return format_html('<a href="{}">{}</a>', url, value)

    def object_url(self, record) -> str | None:
        """Where the entry's object can be seen, for this viewer: a URL, "transaction" (the label is a
        transaction reference: `transaction_link` decides), or None (plain text)."""
        data = record.data or {}
        if record.action == "stayafrica.export":
            url = data.get("url") or ""
            return url if url.startswith("/") and not url.startswith("//") else None
        if record.action == "stayafrica.access.denied":
            return None  # the object is the page or action refused: shown as text
        model = record.content_type.model_class() if record.content_type_id else None
        if model is WalletTransaction:
            return "transaction"
        if model is Withdrawal:
            reference = getattr(record, "withdrawal_transaction", None)
            if reference and self.allows(permissions.VIEW_TRANSACTIONS):
                return reverse("ops_transactions:detail", args=[reference])
        if model is get_user_model() and not data.get("username"):
            return None
        permission, url = OBJECT_PAGES.get(model, ("", None))
        return url(record.object_id, data) if url and self.allows(permission) else None

    def render_amount(self, value, record):
        currency = record.data.get("currency", "")
        try:
            return format_money(Decimal(value), currency)
        except (InvalidOperation, TransactionError):  # an entry written by another version
            return f"{currency} {value}"

    def render_reason(self, value, record):
        return details(record) or "—"


class AuditLogView(TableListView):
    permission_required = permissions.VIEW_AUDIT_LOG
    page_title = "Audit log"
    header_icon = "history"
    table_class = AuditTable
    filterset_class = AuditFilter
    partial_template_name = "portal/includes/audit_results.html"
    export_filename = "audit-log"
    export_columns = [
        ("When", "timestamp"),
        ("Who", person("user")),
        ("Action", lambda entry: action_label(entry.action)),
        ("Object", "label"),
        ("Object id", "object_id"),
        ("Amount", money("data.amount", currency="data.currency")),
        ("Currency", "data.currency"),
        ("Reference", "data.reference"),
        ("Reason", "data.reason"),
        ("Note", "data.note"),
        ("Username", "user.username"),
        ("Action code", "action"),
        ("Details", details),
        ("IP address", "data.ip"),
    ]

    def get_queryset(self):
        # A withdrawal's entry links to its transaction: the reference, read in the same query.
        withdrawal_transaction = Withdrawal.objects.filter(pk=Cast(OuterRef("object_id"), BigIntegerField())).values(
            "transaction__reference"
        )[:1]
        return (
            ModelLogEntry.objects.filter(action__startswith="stayafrica.")
            .select_related("user", "content_type")
            .annotate(
                withdrawal_transaction=Case(
                    When(
                        content_type=ContentType.objects.get_for_model(Withdrawal),
                        then=Subquery(withdrawal_transaction),
                    ),
                    default=None,
                    output_field=CharField(),
                )
            )
        )
