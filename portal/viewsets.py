"""The Operations menu: one ViewSet per section, grouped in a ViewSetGroup.

Each section owns its URLs (under /admin/operations/...) and a menu item that is shown
only to people holding the section's permission; every view checks it again.
"""

from django.urls import path, reverse
from django.utils.functional import cached_property
from wagtail.admin.menu import MenuItem
from wagtail.admin.viewsets.base import ViewSet, ViewSetGroup

from finance import approvals as four_eyes
from finance import permissions

from .views import (
    approvals,
    audit,
    broadcasts,
    dead_letters,
    finance,
    jobs,
    messaging,
    reconciliation,
    transactions,
    webhooks,
)


class PermissionMenuItem(MenuItem):
    """Shown to people holding every one of `permission` (one code or a tuple): the same
    permissions the section's index page asks for."""

    def __init__(self, *args, permission: str | tuple, **kwargs):
        super().__init__(*args, **kwargs)
        self.permissions = (permission,) if isinstance(permission, str) else tuple(permission)

    def is_shown(self, request):
        return permissions.allows(request.user, *self.permissions)


class ApprovalMenuItem(PermissionMenuItem):
    """The Approvals item, with the number of requests waiting for people who can approve them:
    "Approvals (3)", read out as "Approvals: 3 requests waiting". One COUNT on the
    (status, created_at) index per admin page they open; the item itself is shared by every
    request (Wagtail caches menu items), so the count goes only into this request's component."""

    def render_component(self, request):
        component = super().render_component(request)
        if not permissions.allows(request.user, permissions.APPROVE_REQUEST):
            return component
        waiting = four_eyes.waiting_count()
        if waiting:
            noun = "request" if waiting == 1 else "requests"
            component.label = f"{self.label} ({waiting})"
            component.attrs = {**self.attrs, "aria-label": f"{self.label}: {waiting} {noun} waiting"}
        return component


class OperationsSection(ViewSet):
    """A section of the Operations menu: its URLs and a permission-aware menu item."""

    permission_required: str | tuple = ""  # what the index page asks for (its menu item is shown for it)
    routes: list = []  # (route, view, name); the first is the section's index

    @property
    def url_prefix(self):
        return f"operations/{self.name.removeprefix('ops_')}"

    @cached_property
    def menu_url(self):
        return reverse(f"{self.url_namespace}:index")

    def get_urlpatterns(self):
        return [path(route, view, name=name) for route, view, name in self.routes]

    menu_item_class = PermissionMenuItem

    def get_menu_item(self, order=None):
        return self.menu_item_class(
            label=self.menu_label,
            url=self.menu_url,
            name=self.name,
            icon_name=self.menu_icon,
            order=self.get_menu_item_order(order),
            permission=self.permission_required,
        )


class DashboardSection(OperationsSection):
    name = "ops_dashboard"
    menu_label = "Finance dashboard"
    icon = "table"
    permission_required = permissions.VIEW_FINANCE_DASHBOARD
    routes = [
        ("", finance.DashboardView.as_view(), "index"),
        ("ledger-health/", finance.LedgerHealthView.as_view(), "ledger_health"),
    ]


class WalletSection(OperationsSection):
    name = "ops_wallets"
    menu_label = "Wallets"
    icon = "list-ul"
    permission_required = permissions.VIEW_WALLETS
    routes = [
        ("", finance.WalletListView.as_view(), "index"),
        ("<int:pk>/", finance.WalletDetailView.as_view(), "detail"),
    ]


class TransactionSection(OperationsSection):
    name = "ops_transactions"
    menu_label = "Transactions"
    icon = "list-ol"
    permission_required = permissions.VIEW_TRANSACTIONS
    routes = [
        ("", finance.TransactionListView.as_view(), "index"),
        ("<str:reference>/", transactions.TransactionDetailView.as_view(), "detail"),
        ("<str:reference>/reverse/", finance.ReversalView.as_view(), "reverse"),
        ("<str:reference>/reverse/confirm/", finance.ReversalView.as_view(confirming=True), "reverse_confirm"),
    ]


class WithdrawalSection(OperationsSection):
    name = "ops_withdrawals"
    menu_label = "Withdrawals"
    icon = "upload"
    permission_required = permissions.VIEW_WITHDRAWALS
    routes = [
        ("", finance.WithdrawalQueueView.as_view(), "index"),
        ("processing/", finance.WithdrawalQueueView.as_view(tab="processing"), "processing"),
        ("completed/", finance.WithdrawalQueueView.as_view(tab="completed"), "completed"),
        ("failed/", finance.WithdrawalQueueView.as_view(tab="failed"), "failed"),
        ("<int:pk>/row/", finance.WithdrawalRowView.as_view(), "row"),
        ("<int:pk>/<str:action>/confirm/", finance.WithdrawalActionView.as_view(confirming=True), "confirm"),
        ("<int:pk>/<str:action>/", finance.WithdrawalActionView.as_view(), "act"),
        ("bulk/", finance.BulkCompleteView.as_view(), "bulk"),
        ("bulk/confirm/", finance.BulkCompleteView.as_view(confirming=True), "bulk_confirm"),
        ("bulk/<uuid:batch_id>/", finance.BulkProgressView.as_view(), "bulk_progress"),
    ]


class RefundSection(OperationsSection):
    name = "ops_refunds"
    menu_label = "Refunds"
    icon = "redirect"
    permission_required = finance.VIEW_REFUNDS  # reading it; the refund form needs REFUND_BOOKING too
    routes = [
        ("", finance.RefundView.as_view(), "index"),
        ("confirm/", finance.RefundView.as_view(confirming=True), "confirm"),
        ("<int:pk>/row/", finance.RefundRowView.as_view(), "row"),
        ("<int:pk>/<str:action>/confirm/", finance.RefundActionView.as_view(confirming=True), "confirm_action"),
        ("<int:pk>/<str:action>/", finance.RefundActionView.as_view(), "act"),
    ]


class ApprovalSection(OperationsSection):
    name = "ops_approvals"
    menu_label = "Approvals"
    icon = "tick-inverse"
    permission_required = permissions.VIEW_APPROVALS
    menu_item_class = ApprovalMenuItem
    routes = [
        ("", approvals.ApprovalQueueView.as_view(), "index"),
        ("<int:pk>/<str:decision>/", approvals.ApprovalDecisionView.as_view(), "decide"),
        ("<int:pk>/<str:decision>/confirm/", approvals.ApprovalDecisionView.as_view(confirming=True), "confirm"),
    ]


class WebhookSection(OperationsSection):
    name = "ops_webhooks"
    menu_label = "Webhook inbox"
    icon = "warning"
    permission_required = permissions.VIEW_WEBHOOKS
    routes = [
        ("", webhooks.WebhookInboxView.as_view(), "index"),
        ("<int:pk>/replay/", webhooks.WebhookReplayView.as_view(), "replay"),
        ("<int:pk>/replay/confirm/", webhooks.WebhookReplayView.as_view(confirming=True), "confirm"),
    ]


class ReconciliationSection(OperationsSection):
    name = "ops_reconciliation"
    menu_label = "Reconciliation"
    icon = "doc-full"
    permission_required = permissions.VIEW_RECONCILIATION  # to read; uploading and resolving need RECONCILE
    routes = [
        ("", reconciliation.ReconciliationIndexView.as_view(), "index"),
        ("upload/", reconciliation.ReportUploadView.as_view(), "upload"),
        ("unresolved/export/", reconciliation.ExportUnresolvedView.as_view(), "export"),
        ("lines/<int:pk>/", reconciliation.LineResolutionView.as_view(), "line"),
        ("lines/<int:pk>/resolve/", reconciliation.ResolveLineView.as_view(), "resolve"),
        ("lines/<int:pk>/resolve/confirm/", reconciliation.ResolveLineView.as_view(confirming=True), "confirm"),
        ("<str:provider>/<str:day>/", reconciliation.ReconciliationDayView.as_view(), "day"),
    ]


class BroadcastSection(OperationsSection):
    name = "ops_broadcasts"
    menu_label = "Broadcasts"
    icon = "mail"
    permission_required = permissions.VIEW_BROADCASTS  # to read; sending needs SEND_BROADCAST (the views)
    routes = [
        ("", broadcasts.BroadcastPageView.as_view(), "index"),
        ("confirm/", broadcasts.BroadcastPageView.as_view(confirming=True), "confirm"),
        ("preview/", broadcasts.RecipientPreviewView.as_view(), "preview"),
        ("users/", broadcasts.UserSearchView.as_view(), "users"),
        ("<uuid:pk>/", broadcasts.BroadcastDetailView.as_view(), "detail"),
        ("<uuid:pk>/progress/", broadcasts.BroadcastProgressView.as_view(), "progress"),
    ]


class StatsSection(OperationsSection):
    name = "ops_stats"
    menu_label = "Messaging stats"
    icon = "pick"
    permission_required = permissions.VIEW_MESSAGING_STATS
    routes = [
        ("", messaging.StatsPageView.as_view(), "index"),
        ("panel/", messaging.StatsPanelView.as_view(), "panel"),
    ]


class UndeliverableSection(OperationsSection):
    name = "ops_undeliverable"
    menu_label = "Undeliverable messages"
    icon = "circle-xmark"
    permission_required = permissions.VIEW_DEAD_LETTERS
    routes = [("", dead_letters.DeadLetterListView.as_view(), "index")]


class JobSection(OperationsSection):
    name = "ops_jobs"
    menu_label = "Background jobs"
    icon = "resubmit"
    permission_required = permissions.VIEW_JOBS
    routes = [
        ("", jobs.JobListView.as_view(), "index"),
        ("<uuid:pk>/retry/", jobs.JobRetryView.as_view(), "retry"),
        ("<uuid:pk>/retry/confirm/", jobs.JobRetryView.as_view(confirming=True), "confirm"),
    ]


class AuditSection(OperationsSection):
    name = "ops_audit"
    menu_label = "Audit log"
    icon = "history"
    permission_required = permissions.VIEW_AUDIT_LOG
    routes = [("", audit.AuditLogView.as_view(), "index")]


class OperationsGroup(ViewSetGroup):
    menu_label = "Operations"
    menu_icon = "cogs"
    menu_order = 150
    items = [
        DashboardSection,
        WalletSection,
        TransactionSection,
        WithdrawalSection,
        RefundSection,
        ApprovalSection,
        WebhookSection,
        ReconciliationSection,
        BroadcastSection,
        StatsSection,
        UndeliverableSection,
        JobSection,
        AuditSection,
    ]
