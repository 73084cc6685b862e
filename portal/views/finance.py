"""Finance staff pages: dashboard, wallets, transactions, withdrawals, refunds, reversals."""

import json
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib import messages
from django.db.models import Count, Min, Q
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.functional import cached_property
from django.views import View
from django_tables2 import RequestConfig
from django_tables2.paginators import LazyPaginator

from finance import approvals, bulk, permissions, refunds, staff_actions
from finance.errors import TransactionError
from finance.models import (
    ApprovalRequest,
    Booking,
    Payment,
    ProviderRefund,
    Wallet,
    WalletTransaction,
    Withdrawal,
    WithdrawalBatchItem,
)
from finance.money import currency_decimals, format_money, parse_typed_amount
from finance.payouts import MANUAL, payout_route, route_for

from .. import selectors
from ..audit_events import record_export
from ..csv_export import column_value, label, money, person, stream_csv
from ..filters import ALL_REFUNDS, OWES, RefundFilter, TransactionFilter, WalletFilter, WithdrawalFilter
from ..metrics import payouts_in_flight
from ..tables import (
    MANUAL_REFUND,
    RefundTable,
    TransactionTable,
    WalletTable,
    WithdrawalTable,
    age_text,
    provider_name,
    refund_problem,
    refund_provider_label,
    refund_status_text,
    with_payout,
)
from ..templatetags.portal_tags import table_body_rows
from .base import KeysFirstPaginator, OperationsView, PermissionRequiredMixin, TableListView, mark_refusal
from .confirmation import Confirmation, ConfirmationMixin, clean_text
from .reconciliation import dashboard_card as reconciliation_dashboard_card


def approval_needed(why: str) -> str:
    """The confirmation's four-eyes sentence: why (`approvals.approval_reason`), and what happens."""
    if not why:
        return ""
    return f"{why} This files a request for a second approver; nothing moves until someone else approves it."


# --- dashboard -------------------------------------------------------------------------------


class DashboardView(OperationsView):
    permission_required = permissions.VIEW_FINANCE_DASHBOARD
    page_title = "Finance dashboard"
    header_icon = "table"
    template_name = "portal/dashboard.html"

    def get_breadcrumbs_items(self):
        return [self.breadcrumbs_items[0], {"url": "", "label": "Operations"}]

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(selectors.dashboard_totals())
        context["webhook_events"] = selectors.flagged_webhook_events()
        context["can_see_stats"] = permissions.allows(self.request.user, permissions.VIEW_MESSAGING_STATS)
        context["payouts"] = payouts_card()
        context["reconciliation"] = reconciliation_card(self.request.user)
        context["refunds"] = refunds_card()
        context["owes_filter"] = OWES
        return context


def reconciliation_card(user) -> dict | None:
    """The dashboard's Reconciliation card (portal.views.reconciliation), for those who may open its page."""
    return reconciliation_dashboard_card() if permissions.allows(user, permissions.VIEW_RECONCILIATION) else None


def payouts_card() -> dict:
    """The dashboard's "Payouts processing" card: how many transfers a provider is moving, and
    how long the oldest has waited; `stuck` once that is past PAYOUT_STUCK_AFTER_MINUTES (the
    PayoutStuckProcessing alert's threshold)."""
    by_provider = payouts_in_flight()
    count = sum(n for n, _ in by_provider.values())
    sent = [oldest for _, oldest in by_provider.values() if oldest is not None]
    oldest = min(sent) if sent else None
    age = timezone.now() - oldest if oldest else None
    stuck_after = timedelta(minutes=settings.PAYOUT_STUCK_AFTER_MINUTES)
    return {
        "count": count,
        "oldest": oldest,
        "age": age_text(age) if age is not None else "",
        "stuck": age is not None and age > stuck_after,
        "stuck_after": age_text(stuck_after),
    }


class LedgerHealthView(PermissionRequiredMixin, View):
    """The check_ledger result, computed on demand (an htmx button on the dashboard)."""

    permission_required = permissions.VIEW_FINANCE_DASHBOARD

    def get(self, request):
        from finance.ledger_checks import run_ledger_checks

        results = run_ledger_checks()
        return render(
            request,
            "portal/includes/ledger_health.html",
            {"results": results, "all_ok": all(r.ok for r in results), "checked": True},
        )


# --- wallets and transactions ---------------------------------------------------------------


class WalletListView(TableListView):
    permission_required = permissions.VIEW_WALLETS
    page_title = "Wallets"
    header_icon = "list-ul"
    table_class = WalletTable
    filterset_class = WalletFilter
    export_filename = "wallets"
    export_columns = [
        ("Owner", person("user")),
        ("Username", "user.username"),
        ("Email", "user.email"),
        ("Currency", "currency"),
        ("Status", label("status")),
        ("Balance", money("balance")),
        ("Held", money("held_balance")),
        ("Available", money("available_balance")),
    ]

    def get_queryset(self):
        return Wallet.objects.select_related("user").order_by("-id")  # newest wallets first


class WalletTransactionsMixin:
    table_class = TransactionTable
    filterset_class = TransactionFilter
    # Deep pages of a million-row ledger: skip keys in an index (txn_created_id, txn_wallet_newest).
    paginator_class = KeysFirstPaginator
    export_columns = [
        ("Date", "created_at"),
        ("Reference", "reference"),
        ("Owner", person("wallet.user")),
        ("Owner username", "wallet.user.username"),
        ("Type", label("type")),
        ("Status", label("status")),
        ("Direction", label("direction")),
        ("Amount", money("amount")),
        ("Currency", "currency"),
        ("Balance after", money("balance_after")),
        ("Description", "description"),
    ]
    export_related = ("wallet__user",)


class WalletDetailView(WalletTransactionsMixin, TableListView):
    permission_required = permissions.VIEW_WALLETS
    header_icon = "list-ul"
    template_name = "portal/wallet_detail.html"

    def dispatch(self, request, pk, *args, **kwargs):
        self.wallet = get_object_or_404(Wallet.objects.select_related("user"), pk=pk)
        self.export_filename = f"wallet-{pk}-transactions"
        return super().dispatch(request, *args, **kwargs)

    def get_page_title(self):
        return f"Wallet: {self.wallet.user} · {self.wallet.currency}"

    def get_breadcrumbs_items(self):
        return [
            *self.breadcrumbs_items,
            {"url": reverse("ops_wallets:index"), "label": "Wallets"},
            {"url": "", "label": self.get_page_title()},
        ]

    def get_queryset(self):
        return self.wallet.transactions.all()

    # One wallet: its owner and currency are in the page's header, not columns or filters.
    def get_table_kwargs(self):
        return {"exclude": ("owner", "currency")}

    def get_filterset(self):
        filterset = super().get_filterset()
        for name in ("owner", "currency"):
            filterset.filters.pop(name)  # before the form is built from them
        return filterset

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["wallet"] = self.wallet
        context["open_withdrawals"] = self.wallet.withdrawals.filter(status__in=Withdrawal.OPEN_STATUSES)
        context["receivables"] = selectors.wallet_receivables(self.wallet)
        return context


class TransactionListView(WalletTransactionsMixin, TableListView):
    permission_required = permissions.VIEW_TRANSACTIONS
    page_title = "Transactions"
    header_icon = "list-ol"
    export_filename = "transactions"

    def get_queryset(self):
        # The owner column: the page's rows come with their wallet and user in one query.
        return WalletTransaction.objects.select_related("wallet__user")


# --- reversals -------------------------------------------------------------------------------


class ReversalView(ConfirmationMixin, OperationsView):
    """Request the reversal of a transaction: always a four-eyes request."""

    permission_required = permissions.REVERSE_TRANSACTION
    header_icon = "undo"
    template_name = "portal/reversal.html"
    confirmation_action = "transaction.reverse"

    def dispatch(self, request, reference, *args, **kwargs):
        self.txn = get_object_or_404(WalletTransaction.objects.select_related("wallet__user"), reference=reference)
        return super().dispatch(request, *args, **kwargs)

    def get_page_title(self):
        return f"Reverse {self.txn.reference}"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        wallet = self.txn.wallet
        context.update(txn=self.txn, wallet=wallet, balance_after=wallet.balance - self.txn.signed_amount)
        if "confirmation" not in context:
            try:  # say so before anyone types a reason for a reversal that cannot be requested
                staff_actions.check_reversible(self.txn)
            except TransactionError as refusal:
                context.update(refusal=refusal.message, pending_approval=refusal.details.get("approval"))
        return context

    def get_confirmation_params(self):
        staff_actions.check_reversible(self.txn)  # first: a reason cannot make it reversible
        reason = staff_actions.clean_reversal_reason(clean_text(self.request.POST.get("reason")))
        return {"amount": str(self.txn.amount), "currency": self.txn.currency, "reason": reason}

    def get_confirmation_target(self):
        return self.txn.pk

    def describe_confirmation(self, params):
        txn, wallet = self.txn, self.txn.wallet
        return Confirmation(
            label="Confirm reversal request",
            question=f"Request the reversal of {txn.reference}?",
            effects=[
                f"{txn.get_type_display()} of {format_money(txn.amount, txn.currency)} "
                f"({txn.get_direction_display().lower()}) on {date_format(txn.created_at, 'Y-m-d H:i')}"
                f"{' — ' + txn.description if txn.description else ''}.",
                f"Once approved, the opposite entries are posted: {wallet.user}'s balance goes from "
                f"{format_money(wallet.balance, wallet.currency)} to "
                f"{format_money(wallet.balance - txn.signed_amount, wallet.currency)}.",
            ],
            quote=params["reason"],
            quote_label="Reason",
            approval="A reversal always needs a second finance approver: this files the request; "
            "nothing moves until someone else approves it.",
            yes="Yes, request reversal",
            url=reverse("ops_transactions:reverse", args=[txn.reference]),
            fields=[("reason", params["reason"])],
            cancel_url=reverse("ops_wallets:detail", args=[wallet.pk]),
        )

    def render_confirmation(self, confirmation, status):
        return self.render_to_response(self.get_context_data(confirmation=confirmation), status=status)

    def render_invalid(self, error):
        context = self.get_context_data(reason=self.request.POST.get("reason", ""), error=error.message)
        return self.render_to_response(context, status=400)

    def perform(self, params, key):
        try:
            outcome = staff_actions.request_reversal(
                txn=self.txn, reason=params["reason"], actor=self.request.user, idempotency_key=key
            )
        except TransactionError as error:
            return self.render_invalid(error)
        messages.success(
            self.request,
            f"Reversal of {self.txn.reference} requested. A second finance approver must approve it "
            f"(request #{outcome.approval.pk}).",
        )
        return redirect("ops_approvals:index")


# --- withdrawals -----------------------------------------------------------------------------

# What each action on a withdrawal row needs.
WITHDRAWAL_ACTIONS = {"complete": permissions.COMPLETE_WITHDRAWAL, "fail": permissions.FAIL_WITHDRAWAL}


# The queue's tabs: name -> (label, statuses, order). Pending withdrawals (waiting for staff) oldest
# first, who has waited longest comes first; payouts a provider is moving oldest sent first; the
# history newest first, by when it was processed.
WITHDRAWAL_TABS = {
    "open": ("Pending", (Withdrawal.Status.PENDING,), ("created_at", "id")),
    "processing": ("Processing", (Withdrawal.Status.PROCESSING,), ("sent", "id")),
    "completed": ("Completed", (Withdrawal.Status.COMPLETED,), ("-processed_at", "-id")),
    "failed": ("Failed", (Withdrawal.Status.FAILED,), ("-processed_at", "-id")),
}
WITHDRAWAL_SELECT_RELATED = ("wallet__user", "bank_account", "transaction")


class WithdrawalQueueView(TableListView):
    """The withdrawal queue, one route per tab (`tab`): Pending (waiting for staff, with the row
    actions and bulk sending), Processing (payouts a provider is moving: provider, references,
    how long, the last error), Completed and Failed (who processed it, when, and why it
    failed). Each tab has the same filters (Processing also the provider); the tab is in the
    path, so filtering keeps it."""

    permission_required = permissions.VIEW_WITHDRAWALS
    page_title = "Withdrawal queue"
    header_icon = "upload"
    template_name = "portal/withdrawals.html"
    partial_template_name = "portal/includes/withdrawal_results.html"
    table_class = WithdrawalTable
    filterset_class = WithdrawalFilter
    tab = "open"
    export_columns = [
        ("Reference", "reference"),
        ("Requested", "created_at"),
        ("Host", person("wallet.user")),
        ("Host username", "wallet.user.username"),
        ("Bank account", "bank_account"),
        ("Amount", money("amount")),
        ("Currency", "currency"),
        ("Status", label("status")),
        ("Processed", "processed_at"),
        ("Processed by", person("processed_by")),
        ("Failure reason", "failure_reason"),
        ("Payout method", lambda w: route_for(w.payout_method).label if w.payout_method else ""),
        ("Transfer reference", "transfer_reference"),
        ("Provider's transfer id", "provider_transfer_id"),
        ("Sent", "payout_sent_at"),
        ("Last checked", "payout_checked_at"),
        ("Last provider error", "payout_error"),
    ]

    @property
    def export_filename(self) -> str:
        return "withdrawals" if self.tab == "open" else f"withdrawals-{self.tab}"

    def get_queryset(self):
        _, statuses, _ = WITHDRAWAL_TABS[self.tab]
        related = (
            (*WITHDRAWAL_SELECT_RELATED, "processed_by")
            if self.tab in ("completed", "failed")
            else WITHDRAWAL_SELECT_RELATED
        )
        return Withdrawal.objects.filter(status__in=statuses).select_related(*related)

    def get_filterset(self):
        filterset = super().get_filterset()
        if self.tab != "processing":
            filterset.filters.pop("provider")  # before the form is built from it
        return filterset

    def get_table_kwargs(self):
        _, _, order = WITHDRAWAL_TABS[self.tab]
        controls = withdrawal_controls(self.request.user)
        if self.tab == "open":
            hidden = [column for column in ("select", "actions") if not controls[f"can_{column}"]]
            return {"exclude": (*WithdrawalTable.HISTORY_COLUMNS, *WithdrawalTable.PAYOUT_COLUMNS, *hidden)}
        if self.tab == "processing":
            hidden = () if controls["can_actions"] else ("actions",)
            # How long each has waited comes right after the reference: it is why one opens this tab.
            exclude = ("select", "available", "status", "created_at", *WithdrawalTable.HISTORY_COLUMNS, *hidden)
            sequence = ("reference", "sent", "host", "amount", "provider", "transfer_reference", "...")
            return {"exclude": exclude, "order_by": order, "sequence": sequence}
        exclude = (*WithdrawalTable.OPEN_COLUMNS, *WithdrawalTable.PAYOUT_COLUMNS)
        if self.tab != "failed":
            exclude = (*exclude, "failure_reason")
        return {"exclude": exclude, "order_by": order}

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["tab"] = self.tab
        context["tabs"] = [
            {"name": name, "label": label, "url": reverse(f"ops_withdrawals:{name if name != 'open' else 'index'}")}
            for name, (label, _, _) in WITHDRAWAL_TABS.items()
        ]
        if self.tab == "open":
            context.update(withdrawal_controls(self.request.user))
            # Bulk completions running or finished lately, whoever started them, followed live.
            context["batches"] = [batch_context(batch, seen=batch.done) for batch in bulk.recent_batches()]
            # What the selected total is written with (static/portal/portal.js): each currency's decimals.
            context["currency_decimals"] = {c: currency_decimals(c) for c in settings.MINIMUM_WITHDRAWAL}
        return context


def withdrawal_controls(user) -> dict:
    """Which of the open tab's controls `user` may use: the selection (and "Send selected
    payouts…") needs the completion permission; the Actions column, either action's."""
    may = {action: permissions.allows(user, needed) for action, needed in WITHDRAWAL_ACTIONS.items()}
    return {"can_select": may["complete"], "can_actions": any(may.values())}


class WithdrawalMixin(PermissionRequiredMixin):
    def get_withdrawal(self, pk):
        return get_object_or_404(Withdrawal.objects.select_related(*WITHDRAWAL_SELECT_RELATED), pk=pk)

    def row(self, request, withdrawal, *, message=None, level="success", status=200, extra=None):
        """The withdrawal's row, re-rendered in place, and a Wagtail message (its own w-messages:add event)."""
        response = render(
            request,
            "portal/includes/withdrawal_row.html",
            {"w": with_payout(withdrawal), **withdrawal_controls(request.user), **(extra or {})},
            status=status,
        )
        if message:
            response["HX-Trigger"] = json.dumps({"w-messages:add": {"text": message, "type": level, "clear": True}})
        return response

    def render_refusal(self, message):
        """In the row's Actions cell: the row was on a page that showed this person its controls."""
        extra = {"refusal": message, "can_select": True, "can_actions": True}
        return self.row(self.request, self.get_withdrawal(self.kwargs["pk"]), extra=extra, status=403)


class WithdrawalRowView(WithdrawalMixin, View):
    """The row as it stands (Cancel puts it back; `?focus=` names the button that gets the focus)."""

    permission_required = permissions.VIEW_WITHDRAWALS

    def get(self, request, pk):
        focus = request.GET.get("focus")
        return self.row(request, self.get_withdrawal(pk), extra={"focus": focus if focus in WITHDRAWAL_ACTIONS else ""})


class WithdrawalActionView(ConfirmationMixin, WithdrawalMixin, View):
    """Complete or fail one withdrawal inside its row: the confirmation (with the effect) replaces
    the row's actions, and the action answers with the updated row. Failing asks the reason first,
    so the confirmation can show it."""

    def has_permission(self, user):
        needed = WITHDRAWAL_ACTIONS.get(self.kwargs.get("action"))
        return needed is not None and permissions.allows(user, needed)

    @property
    def refused_action(self):
        action = self.kwargs.get("action")
        return f"{action} withdrawals" if action in WITHDRAWAL_ACTIONS else "do this to withdrawals"

    def dispatch(self, request, *args, **kwargs):
        self.action = kwargs["action"]
        self.confirmation_action = f"withdrawal.{self.action}"
        return super().dispatch(request, *args, **kwargs)

    def get(self, request, *args, **kwargs):
        if (refused := self.refuse_in_flight()) is not None:
            return refused
        if self.confirming and self.action == "fail":
            return self.row(request, self.withdrawal, extra={"asking_reason": True})
        return super().get(request, *args, **kwargs)

    def post(self, request, *args, **kwargs):
        if (refused := self.refuse_in_flight()) is not None:
            return refused
        return super().post(request, *args, **kwargs)

    def refuse_in_flight(self):
        """A payout a provider is moving has no staff action: only the provider's answer (its
        callback, or the periodic query) settles it. The row says so, with a 409; the service
        refuses it too (error code transfer_in_flight), should two people race."""
        w = self.withdrawal
        if not w.transfer_in_flight:
            return None
        who = provider_name(w.payout_method)
        message = f"{w.reference} is with {who} ({w.transfer_reference}): only {who}'s answer can settle it now."
        return self.row(
            self.request, w, extra={"refusal": message, "can_select": True, "can_actions": True}, status=409
        )

    @cached_property
    def withdrawal(self):
        return self.get_withdrawal(self.kwargs["pk"])

    def get_confirmation_params(self):
        w = self.withdrawal
        params = {"amount": str(w.amount), "currency": w.currency}
        if self.action == "fail":
            params["reason"] = staff_actions.clean_failure_reason(clean_text(self.request.POST.get("reason")))
        return params

    def get_confirmation_target(self):
        return self.withdrawal.pk

    def describe_confirmation(self, params):
        w = self.withdrawal
        wallet, currency = w.wallet, w.currency
        amount = format_money(w.amount, currency)
        common = {
            "label": f"Confirm {self.action} {w.reference}",
            "url": reverse("ops_withdrawals:act", args=[w.pk, self.action]),
            "cancel_get": f"{reverse('ops_withdrawals:row', args=[w.pk])}?focus={self.action}",
            "target": f"#withdrawal-{w.pk}",
            "small": True,
            "id": f"confirm-{self.action}-{w.pk}",
        }
        if self.action == "complete":
            route = payout_route(w.bank_account)
            account = f"{wallet.user}'s {w.bank_account}"
            balance = f"{format_money(wallet.balance, currency)} to {format_money(wallet.balance - w.amount, currency)}"
            if route.is_manual:
                question, yes = f"Mark {w.reference} as paid?", "Yes, mark as paid"
                common["label"] = f"Confirm mark {w.reference} as paid"  # the group's name, as its button says
                effects = [
                    f"Record that {amount} was paid to {account} by other means "
                    "(no provider pays this account: nothing is sent from here).",
                    f"The wallet balance goes from {balance}; the hold is released.",
                ]
            else:
                who = provider_name(route.method)
                question, yes = f"Send payout {w.reference}?", "Yes, send payout"
                common["label"] = f"Confirm send payout {w.reference}"
                effects = [
                    f"Send {amount} to {account} by {route.label}. The money stays held until {who} confirms it.",
                    f"Once {who} confirms, the wallet balance goes from {balance}; "
                    "if the transfer fails, the hold is released back to the host.",
                ]
            return Confirmation(
                question=question,
                effects=effects,
                approval=approval_needed(
                    approvals.approval_reason(
                        kind=ApprovalRequest.Kind.WITHDRAWAL, amount=w.amount, currency=currency, wallet=wallet
                    )
                ),
                yes=yes,
                **common,
            )
        return Confirmation(
            question=f"Fail {w.reference}?",
            effects=[
                f"Nothing is paid out: {amount} returns to {wallet.user}'s available balance "
                f"({format_money(wallet.available_balance + w.amount, currency)} after)."
            ],
            quote=params["reason"],
            quote_label="Reason (the host is told)",
            fields=[("reason", params["reason"])],
            danger=True,
            yes="Yes, fail it",
            **common,
        )

    def render_confirmation(self, confirmation, status):
        return self.row(self.request, self.withdrawal, extra={"confirmation": confirmation}, status=status)

    def render_invalid(self, error):
        return self.row(
            self.request,
            self.withdrawal,
            extra={"asking_reason": True, "error": error.message, "reason": self.request.POST.get("reason", "")},
            status=400,
        )

    def perform(self, params, key):
        withdrawal = self.withdrawal
        message, level = self.act(withdrawal, params, key)
        return self.row(self.request, self.get_withdrawal(withdrawal.pk), message=message, level=level)

    def act(self, withdrawal, params, key) -> tuple[str, str]:
        """Run the staff action; return the message for the row's answer and its level."""
        try:
            if self.action == "complete":
                outcome = staff_actions.complete_withdrawal(
                    withdrawal=withdrawal, actor=self.request.user, idempotency_key=key
                )
            else:
                outcome = staff_actions.fail_withdrawal(
                    withdrawal=withdrawal, actor=self.request.user, reason=params["reason"], idempotency_key=key
                )
        except TransactionError as error:
            return f"{withdrawal.reference}: {error.message}", "error"
        if outcome.needs_approval:
            return (
                f"{withdrawal.reference} needs a second approver (request #{outcome.approval.pk}): "
                f"{outcome.approval.approval_reason}",
                "warning",
            )
        done = outcome.result
        if done.transfer_in_flight:
            return (
                f"{done.reference}: {format_money(done.amount, done.currency)} sent to "
                f"{provider_name(done.payout_method)} — waiting for its confirmation ({done.transfer_reference}).",
                "success",
            )
        verb = "completed" if self.action == "complete" else "failed"
        return f"Withdrawal {done.reference} {verb}: {format_money(done.amount, done.currency)}.", "success"


class BulkPermissionMixin(PermissionRequiredMixin):
    """A refusal answered in place with a 403 and a sentence: these views answer htmx requests
    (the progress polls every second), where Wagtail's redirect to the dashboard would land
    the whole dashboard inside the progress box."""

    def dispatch(self, request, *args, **kwargs):
        if not self.has_permission(request.user):
            refusal = self.refusal_message()
            response = render(request, "portal/includes/bulk_progress.html", {"empty": refusal}, status=403)
            return mark_refusal(response)
        return super().dispatch(request, *args, **kwargs)


class BulkCompleteView(ConfirmationMixin, BulkPermissionMixin, WithdrawalMixin, View):
    """Bulk sending ("Send selected payouts…"): confirm the selection, saying which provider
    pays how many and how many are marked as paid by hand, then a background job sends each
    (finance.bulk, through staff_actions.complete_withdrawal) while the answer, a progress
    bar, follows it (BulkProgressView).

    The batch's id is the confirmation's idempotency key: a double submit starts one batch."""

    permission_required = permissions.COMPLETE_WITHDRAWAL
    refused_action = "complete withdrawals"
    confirmation_action = "withdrawal.bulk_complete"

    def get_confirmation_params(self):
        ids = {int(i) for i in self.request.POST.getlist("ids") if i.isdigit()}
        self.selected = list(
            Withdrawal.objects.filter(pk__in=ids, status=Withdrawal.Status.PENDING)
            .select_related("wallet__user", "bank_account")
            .order_by("created_at", "id")
        )
        if not self.selected:
            raise TransactionError("Select at least one pending withdrawal first.")
        return {"ids": sorted(w.pk for w in self.selected), "totals": self.totals()}

    def totals(self):
        totals = {}
        for w in self.selected:
            totals[w.currency] = totals.get(w.currency, Decimal(0)) + w.amount
        return [format_money(v, k) for k, v in sorted(totals.items())]

    def get_confirmation_target(self):
        return "selection"

    def describe_confirmation(self, params):
        count = len(self.selected)
        hosts = sorted({str(w.wallet.user) for w in self.selected})
        above = self.count_needing_approval()
        approval = ""
        if above:
            approval = (
                f"{above} of them {pluralize(above, 'needs,need')} a second approver (no threshold for the "
                "currency, or what was moved for the host would pass it): "
                f"{pluralize(above, 'it becomes a request,they become requests')}."
            )
        return Confirmation(
            label="Confirm sending payouts",
            question=f"Send {count} payout{pluralize(count)}?",
            effects=[
                f"Total {', '.join(params['totals'])} goes out to the bank account{pluralize(len(hosts))} "
                f"of {', '.join(hosts)}.",
                self.routes_sentence(),
                "Each is sent in turn in the background; the rows update as they go, and closing "
                "this page does not stop it.",
            ],
            approval=approval,
            yes=f"Yes, send {pluralize(count, 'it,them')}",
            url=reverse("ops_withdrawals:bulk"),
            fields=[("ids", pk) for pk in params["ids"]],
            target="#bulk-progress",
            swap="innerHTML",
            cancel_focus="#bulk-complete",
            small=True,
        )

    def routes_sentence(self) -> str:
        """How the selection leaves: "2 by Paystack transfer (held until Paystack confirms), 1 by
        M-Pesa B2C (…); 1 marked as paid (manual: paid by other means, completed at once)."."""
        by_method: dict[str, int] = {}
        for w in self.selected:
            method = payout_route(w.bank_account).method
            by_method[method] = by_method.get(method, 0) + 1
        manual = by_method.pop(MANUAL, 0)
        parts = [
            f"{n} by {route_for(method).label} (held until {provider_name(method)} confirms)"
            for method, n in sorted(by_method.items())
        ]
        if manual:
            parts.append(f"{manual} marked as paid (manual: paid by other means, completed at once)")
        return "; ".join(parts) + "."

    def count_needing_approval(self) -> int:
        """How many of the selection will become requests, taken in order as the job runs them:
        each one completed adds to what its host's wallet has moved in the window."""
        moved, above = {}, 0
        for w in self.selected:
            if w.wallet_id not in moved:
                moved[w.wallet_id] = approvals.moved_without_approval(w.wallet)
            why = approvals.approval_reason(
                kind=ApprovalRequest.Kind.WITHDRAWAL,
                amount=w.amount,
                currency=w.currency,
                wallet=w.wallet,
                already=moved[w.wallet_id],
            )
            if why:
                above += 1
            else:
                moved[w.wallet_id] += w.amount
        return above

    def render_confirmation(self, confirmation, status):
        return render(self.request, "portal/includes/bulk_progress.html", {"confirmation": confirmation}, status=status)

    def render_invalid(self, error):
        return render(self.request, "portal/includes/bulk_progress.html", {"empty": error.message}, status=400)

    def perform(self, params, key):
        try:
            batch = bulk.start_batch(withdrawal_ids=params["ids"], actor=self.request.user, idempotency_key=key)
        except TransactionError as error:
            return self.render_invalid(error)
        return render_batch(self.request, bulk.get_batch(batch.pk), seen=0)


class BulkProgressView(BulkPermissionMixin, View):
    """A bulk completion's progress, polled by htmx (about once a second) until it is finished:
    read from the database, so everyone who can see the queue sees the same, and closing the
    tab stops nothing. `?seen=n`: the poller has already shown the first n finished items; the
    rows of those finished since come along, swapped in place (out of band)."""

    permission_required = permissions.VIEW_WITHDRAWALS

    def get(self, request, batch_id):
        try:
            batch = bulk.get_batch(batch_id)
        except TransactionError:
            raise Http404 from None
        seen = request.GET.get("seen", "")
        return render_batch(request, batch, seen=int(seen) if seen.isdigit() else batch.done)


def render_batch(request, batch, *, seen: int):
    # The rows it finished come along (includes/withdrawal_row.html), with the controls this person may use.
    context = {"b": batch_context(batch, seen=seen), **withdrawal_controls(request.user)}
    return render(request, "portal/includes/bulk_progress.html", context)


# A bulk send's outcomes, in the order its summary names them, each with its words there
# (finance.models.WithdrawalBatchItem.Outcome: "sent" is a payout a provider now moves).
BATCH_OUTCOME_WORDS = (
    ("sent", "sent to the provider"),
    (WithdrawalBatchItem.Outcome.COMPLETED, "completed"),
    (WithdrawalBatchItem.Outcome.NEEDS_APPROVAL, "need a second approver"),
    (WithdrawalBatchItem.Outcome.ERROR, "not done"),
)


def batch_context(batch, *, seen: int) -> dict:
    """What a batch's progress shows: counts by outcome, the rows finished since `seen`, and,
    once it is finished, what became of each withdrawal (item.get_outcome_display) and why."""
    finished = not batch.is_active
    # Nothing finished since `seen` (the queue page passes the batch's own count): no query.
    updated = (
        [with_payout(item.withdrawal) for item in bulk.finished_items(batch, after=seen)] if seen < batch.done else []
    )
    items = bulk.finished_items(batch) if finished else []
    counts = {}
    for item in items:
        counts[item.outcome] = counts.get(item.outcome, 0) + 1
    summary = [
        f"{counts[outcome]} of {batch.total} {words}" for outcome, words in BATCH_OUTCOME_WORDS if counts.get(outcome)
    ]
    return {
        "batch": batch,
        "percent": int(100 * batch.done / batch.total) if batch.total else 100,
        "finished": finished,
        "updated": updated,
        "seen": seen + len(updated),
        "summary": ", ".join(summary) or f"0 of {batch.total} done",
        "items": sorted(items, key=lambda item: item.position),
    }


# --- refunds ---------------------------------------------------------------------------------


# Reading the Refunds page (the refunds made, a booking's figures): whoever may see bookings and payments.
VIEW_REFUNDS = ("finance.view_booking", "finance.view_payment")
REFUND_RELATED = ("transaction", "payment__booking__guest")


def refunds_waiting():
    """The refunds waiting for a second approver, newest first."""
    waiting = (
        ApprovalRequest.objects.filter(kind=ApprovalRequest.Kind.REFUND, status=ApprovalRequest.Status.PENDING)
        .select_related("booking__guest", "requested_by")
        .order_by("-created_at", "-id")
    )
    return list(waiting)


REFUND_EXPORT_COLUMNS = [
    ("Created", "created_at"),
    ("Refund reference", "refund_reference"),
    ("Transaction", "transaction.reference"),
    ("Booking", "payment.booking_id"),
    ("Guest", person("payment.booking.guest")),
    ("Payment", "payment.reference"),
    ("Provider", lambda r: refund_provider_label(r.provider)),
    ("Refunded to guest", money("amount")),
    ("Host's share", money("transaction.amount")),
    ("Currency", "currency"),
    ("Status", refund_status_text),
    ("Attempt", "attempt"),
    ("Sent", "sent_at"),
    ("Settled", "settled_at"),
    ("Provider's refund id", "provider_refund_id"),
    ("Failure reason", "failure_reason"),
    ("Last send error", "last_error"),
]


def refunds_card() -> dict:
    """The dashboard's "Refunds" card: failed refunds (red when any: the guest is still owed),
    those a provider is still moving, and how long the oldest open one has waited."""
    Status = ProviderRefund.Status
    figures = ProviderRefund.objects.filter(status__in=ProviderRefund.OPEN_STATUSES).aggregate(  # one query
        failed=Count("id", filter=Q(status=Status.FAILED)),
        moving=Count("id", filter=Q(status__in=(Status.QUEUED, Status.PROCESSING))),
        oldest=Min("created_at"),
    )
    oldest = figures["oldest"]
    age = timezone.now() - oldest if oldest else None
    return {
        "failed": figures["failed"],
        "processing": figures["moving"],
        "oldest": oldest,
        "age": age_text(age) if age is not None else "",
        "stuck": age is not None and age > timedelta(minutes=settings.REFUND_STUCK_AFTER_MINUTES),
    }


def refund_destination(payment: Payment, split, *, host) -> str:
    """Where the refund's money goes, and where it comes from: "NGN 12,000.00 goes back to the
    guest's card or account by Paystack; the host gives back NGN 10,800.00 and platform revenue
    NGN 1,200.00." A provider that cannot send refunds leaves it to finance, by hand."""
    currency, guest = payment.currency, payment.booking.guest
    amount = format_money(split.guest_refund, currency)
    if refunds.refund_route(payment) != refunds.MANUAL:
        goes = f"{amount} goes back to {guest}'s card or account by {provider_name(payment.provider)}"
    else:
        goes = (
            f"{amount} is owed back to {guest}: {provider_name(payment.provider)} cannot send it from here, "
            "so finance pays it by other means and marks it refunded on this page"
        )
    return (
        f"{goes}; the host {host} gives back {format_money(split.host_debit, currency)} and platform revenue "
        f"{format_money(split.commission_back, currency)}."
    )


def host_wallet_effect(effect: staff_actions.RefundEffect, wallet: Wallet, *, host) -> list[str]:
    """What the host's share does to their wallet (`staff_actions.refund_effect`); when their
    available balance does not cover it, that the wallet goes negative and by how much,
    recovered from their next payouts."""
    currency, debit = wallet.currency, effect.split.host_debit
    balance = (
        f"{host}'s wallet balance goes from {format_money(wallet.balance, currency)} to "
        f"{format_money(wallet.balance - debit, currency)}."
    )
    if effect.new_receivable <= 0:
        return [balance]
    return [
        balance,
        f"Their available balance ({format_money(effect.available_before, currency)}) does not cover their share: "
        f"their wallet goes negative by {format_money(effect.new_receivable, currency)} (available "
        f"{format_money(effect.available_after, currency)}), recovered from their next payouts before they can "
        "withdraw again.",
    ]


class RefundView(ConfirmationMixin, OperationsView):
    """Find a booking, see what was paid and refunded, refund part or all with a reason.

    Readable by whoever may see bookings and payments (VIEW_REFUNDS): the refunds made and
    those waiting for approval, a booking's figures. The form, its review and the refund
    itself need REFUND_BOOKING too.

    The review refuses whatever "Yes" would refuse (`staff_actions.check_refund`: more than
    is left of the payment, or a host share the host's wallet cannot give back now), and
    shows every figure that moves (`refund_split`, the figures the service posts)."""

    permission_required = VIEW_REFUNDS
    page_title = "Refunds"
    header_icon = "redirect"
    template_name = "portal/refunds.html"
    partial_template_name = "portal/includes/refund_results.html"
    confirmation_action = "booking.refund"
    per_page = 25

    def get(self, request, *args, **kwargs):
        if not self.confirming:
            if request.GET.get("export") == "csv":
                return self.export_refunds()
            if request.htmx and request.htmx.target == "results" and not request.htmx.boosted:
                return render(request, self.partial_template_name, self.refunds_made())
        return super().get(request, *args, **kwargs)

    @cached_property
    def refund_filterset(self):
        data = self.request.GET.copy() if self.request.method == "GET" else {}
        data.setdefault("show", ALL_REFUNDS)
        queryset = ProviderRefund.objects.select_related(*REFUND_RELATED)
        return RefundFilter(data, queryset=queryset, request=self.request)

    def refund_table(self, queryset) -> RefundTable:
        table = RefundTable(queryset, exclude=() if self.can_act_on_refunds else ("actions",))
        table.request = self.request
        return table

    @cached_property
    def can_act_on_refunds(self) -> bool:
        return permissions.allows(self.request.user, permissions.RETRY_REFUND)

    def refunds_made(self) -> dict:
        """ "Refunds made": each refund at the provider, filtered, newest first, a page at a time."""
        filterset = self.refund_filterset
        queryset = filterset.qs if filterset.is_valid() else filterset.queryset.none()
        table = self.refund_table(queryset)
        RequestConfig(self.request, paginate={"per_page": self.per_page, "paginator_class": LazyPaginator}).configure(
            table
        )
        shown = len(table.page.object_list)
        first = (table.page.number - 1) * self.per_page + 1
        return {
            "table": table,
            "filterset": filterset,
            "results_url": reverse("ops_refunds:index"),
            "first_index": first,
            "last_index": first + shown - 1,
            "table_id": "refunds-made",
            "can_act_on_refunds": self.can_act_on_refunds,
        }

    def export_refunds(self):
        filterset = self.refund_filterset
        queryset = filterset.qs if filterset.is_valid() else filterset.queryset.none()
        rows = queryset.order_by("-created_at", "-id")
        return stream_csv(
            "refunds",
            [header for header, _ in REFUND_EXPORT_COLUMNS],
            ([column_value(r, spec) for _, spec in REFUND_EXPORT_COLUMNS] for r in rows.iterator(chunk_size=2000)),
            on_finish=lambda n, complete: record_export(self.request, list_name="Refunds", rows=n, complete=complete),
        )

    def is_reading(self) -> bool:
        return self.request.method in ("GET", "HEAD") and not self.confirming

    def has_permission(self, user) -> bool:
        reading = permissions.allows(user, *VIEW_REFUNDS)
        return reading and (self.is_reading() or permissions.allows(user, permissions.REFUND_BOOKING))

    @property
    def refused_action(self) -> str:
        return "" if self.is_reading() else "refund bookings"

    def find_bookings(self, query):
        query = query.strip().lstrip("#")
        if not query:
            return Booking.objects.none()
        condition = Q(payments__reference__iexact=query) | Q(guest__username__iexact=query)
        if query.isdigit():
            condition |= Q(pk=int(query))
        return (
            Booking.objects.filter(condition)
            .select_related("guest", "rental_property__host")
            .distinct()
            .order_by("-pk")[:20]
        )

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        query = self.request.GET.get("q", "")
        context["query"] = query
        context["results"] = self.find_bookings(query) if query else None
        context["can_refund"] = permissions.allows(self.request.user, permissions.REFUND_BOOKING)
        context["refunds_waiting"] = refunds_waiting()
        context.update(self.refunds_made())
        booking_id = self.request.GET.get("booking") or kwargs.get("booking_id")
        if booking_id and str(booking_id).isdigit():
            booking = get_object_or_404(Booking.objects.select_related("guest", "rental_property__host"), pk=booking_id)
            payment = (
                Payment.objects.select_related("booking", "ledger_transaction__wallet__user")
                .refundable_for(booking)
                .first()
            )
            context["booking"] = booking
            context["payment"] = payment
            if payment:
                refundable = payment.refundable_amount
                context["refundable"] = refundable
                if refundable > 0:
                    # What the host's wallet can give back now may limit it further.
                    wallet = payment.ledger_transaction.wallet
                    limit = staff_actions.refund_limit(payment, wallet) if wallet.is_active else Decimal(0)
                    context["refund_limit"] = limit
                    context["host_wallet"] = wallet
        return context

    def get_confirmation_params(self):
        booking_id = self.request.POST.get("booking", "")
        if not booking_id.isdigit():
            raise Http404
        self.booking = get_object_or_404(
            Booking.objects.select_related("guest", "rental_property__host"), pk=booking_id
        )
        # As people type it ("50,000", "NGN 1,234.50"); the API keeps the strict parse_amount.
        amount = parse_typed_amount(self.request.POST.get("amount", ""), self.booking.currency)
        reason = staff_actions.clean_refund_reason(clean_text(self.request.POST.get("reason")))
        self.payment, self.split = staff_actions.check_refund(self.booking, amount)
        self.effect = staff_actions.refund_effect(self.payment, self.payment.ledger_transaction.wallet, amount)
        return {"amount": str(amount), "currency": self.booking.currency, "reason": reason}

    def get_confirmation_target(self):
        return self.booking.pk

    def describe_confirmation(self, params):
        booking, currency = self.booking, self.booking.currency
        amount = Decimal(params["amount"])
        split, wallet = self.split, self.payment.ledger_transaction.wallet
        host = booking.rental_property.host
        left = self.payment.refundable_amount - amount
        return Confirmation(
            label="Confirm refund",
            question=f"Refund {format_money(amount, currency)} to {booking.guest}?",
            effects=[
                f"Booking #{booking.pk} · {booking.rental_property}.",
                refund_destination(self.payment, split, host=host),
                *host_wallet_effect(self.effect, wallet, host=host),
                "This refunds the full remaining amount."
                if not left
                else f"Afterwards {format_money(left, currency)} can still be refunded.",
            ],
            quote=params["reason"],
            quote_label="Reason",
            # Past the threshold, or past the negative-balance limit (refund_effect says which).
            approval=approval_needed(self.effect.approval_reason),
            yes="Yes, refund",
            url=reverse("ops_refunds:index"),
            fields=[("booking", booking.pk), ("amount", params["amount"]), ("reason", params["reason"])],
            cancel_url=f"{reverse('ops_refunds:index')}?booking={booking.pk}",
        )

    def render_confirmation(self, confirmation, status):
        context = self.get_context_data(booking_id=self.booking.pk, confirmation=confirmation)
        return self.render_to_response(context, status=status)

    def render_invalid(self, error):
        post = self.request.POST
        context = self.get_context_data(
            booking_id=post.get("booking", ""), amount=post.get("amount", ""), reason=post.get("reason", "")
        )
        context["error"] = error.message
        context["error_field"] = error.details.get("field", "amount")
        return self.render_to_response(context, status=400)

    def perform(self, params, key):
        booking, amount = self.booking, Decimal(params["amount"])
        try:
            outcome = staff_actions.refund_booking(
                booking=booking, amount=amount, reason=params["reason"], actor=self.request.user, idempotency_key=key
            )
        except TransactionError as error:
            return self.render_invalid(error)
        if outcome.needs_approval:
            messages.warning(
                self.request,
                f"The refund of {format_money(amount, booking.currency)} needs a second approver: "
                f"request #{outcome.approval.pk} waits for one. {outcome.approval.approval_reason}",
            )
        else:
            messages.success(
                self.request,
                f"Refunded {format_money(amount, booking.currency)} for booking #{booking.pk} "
                f"({outcome.result.reference}).",
            )
        # The booking again, with an empty amount: nothing is armed for a second refund.
        return redirect(f"{reverse('ops_refunds:index')}?booking={booking.pk}")


# --- a refund's row actions: retry it, or mark it refunded by hand ---------------------------

# What each row action is called, in the row's buttons and its messages.
REFUND_ACTIONS = {"retry": "Retry refund", "mark": "Mark as refunded"}


def refund_action_refusal(refund: ProviderRefund, action: str) -> str:
    """Why `action` cannot be done to `refund` now, in words for its row ("" when it can). The
    staff actions refuse the same (InvalidStateError), should two people race."""
    Status = ProviderRefund.Status
    who = provider_name(refund.provider)
    if refund.status == Status.SUCCEEDED:
        return f"{refund.refund_reference} is already refunded: nothing is left to do."
    if refund.status == Status.CANCELLED:
        return f"{refund.refund_reference} was cancelled (its refund was reversed): nothing is owed to the guest."
    if action == "retry":
        if refund.provider == MANUAL_REFUND:
            return f"{refund.refund_reference} is refunded by hand: no provider can send it. Mark it as refunded."
        if refund.status != Status.FAILED:
            again = f" (attempt {refund.attempt})" if refund.attempt > 1 else ""
            state = refund_status_text(refund).lower()
            return f"{refund.refund_reference}{again} is {state}, not failed: only {who}'s answer settles it now."
        return ""
    if refund.provider != MANUAL_REFUND and refund.status != Status.FAILED:
        return f"{refund.refund_reference} is {refund_status_text(refund).lower()}: wait for {who}'s answer."
    return ""


class RefundRowMixin(PermissionRequiredMixin):
    permission_required = VIEW_REFUNDS

    def get_refund(self, pk) -> ProviderRefund:
        return get_object_or_404(ProviderRefund.objects.select_related(*REFUND_RELATED), pk=pk)

    def row(self, refund, *, extra=None, status=200, message="", level="success"):
        """The refund's row, rendered by the page's own table, and a Wagtail message."""
        extra = extra or {}
        # A refusal is shown in the Actions cell even to someone without the buttons' permission.
        shown = permissions.allows(self.request.user, permissions.RETRY_REFUND) or "refusal" in extra
        table = RefundTable([refund], row_extra=extra, exclude=() if shown else ("actions",))
        table.request = self.request
        response = HttpResponse(table_body_rows(table), status=status)
        if message:
            response["HX-Trigger"] = json.dumps({"w-messages:add": {"text": message, "type": level, "clear": True}})
        return response

    def render_refusal(self, message):
        """A permission refusal, in the row's Actions cell (the row showed this person its buttons)."""
        return self.row(self.get_refund(self.kwargs["pk"]), extra={"refusal": message, "can_act": True}, status=403)


class RefundRowView(RefundRowMixin, View):
    """The row as it stands (Cancel puts it back; `?focus=` names the button that gets the focus)."""

    def get(self, request, pk):
        focus = request.GET.get("focus")
        return self.row(self.get_refund(pk), extra={"focus": focus if focus in REFUND_ACTIONS else ""})


class RefundActionView(ConfirmationMixin, RefundRowMixin, View):
    """Retry a failed refund, or mark one refunded by hand, inside its row: the confirmation
    replaces the row's buttons and the action answers with the updated row. Marking asks for a
    note first, so the confirmation can show it."""

    permission_required = permissions.RETRY_REFUND
    refused_action = "retry refunds or mark them refunded"

    def dispatch(self, request, *args, **kwargs):
        if kwargs["action"] not in REFUND_ACTIONS:
            raise Http404
        self.action = kwargs["action"]
        self.confirmation_action = f"refund.{self.action}"
        return super().dispatch(request, *args, **kwargs)

    @cached_property
    def refund(self) -> ProviderRefund:
        return self.get_refund(self.kwargs["pk"])

    def refused(self):
        """The row with why it cannot be done (409), or None."""
        why = refund_action_refusal(self.refund, self.action)
        return self.row(self.refund, extra={"refusal": why}, status=409) if why else None

    def get(self, request, *args, **kwargs):
        if (refused := self.refused()) is not None:
            return refused
        if self.confirming and self.action == "mark":
            return self.row(self.refund, extra={"asking_note": True})
        return super().get(request, *args, **kwargs)

    def post(self, request, *args, **kwargs):
        if (refused := self.refused()) is not None:
            return refused
        return super().post(request, *args, **kwargs)

    def get_confirmation_params(self):
        r = self.refund
        params = {"amount": str(r.amount), "currency": r.currency, "attempt": r.attempt}
        if self.action == "mark":
            params["note"] = staff_actions.clean_refunded_note(clean_text(self.request.POST.get("note")))
        return params

    def get_confirmation_target(self):
        return self.refund.pk

    def describe_confirmation(self, params):
        r = self.refund
        amount, guest = format_money(r.amount, r.currency), r.payment.booking.guest
        who = provider_name(r.provider)
        common = {
            "url": reverse("ops_refunds:act", args=[r.pk, self.action]),
            "cancel_get": f"{reverse('ops_refunds:row', args=[r.pk])}?focus={self.action}",
            "target": f"#refund-{r.pk}",
            "small": True,
            "id": f"confirm-{self.action}-{r.pk}",
        }
        booking = f"Booking #{r.payment.booking_id} · guest {guest} · {r.refund_reference}."
        if self.action == "retry":
            return Confirmation(
                label=f"Confirm retry refund {r.refund_reference}",
                question=f"Send {amount} back to the guest by {who} again?",
                effects=[
                    booking,
                    f"{who} refused it: {refund_problem(r) or 'no reason given'}.",
                    f"A new refund (attempt {r.attempt + 1}) is sent to {who} under a new reference; "
                    "this row shows how it goes.",
                ],
                yes="Yes, retry refund",
                **common,
            )
        provider_call = (
            "No provider is asked to send it: it was refunded by hand."
            if r.provider == MANUAL_REFUND
            else f"No call is made to {who}: nothing is sent from here."
        )
        return Confirmation(
            label=f"Confirm mark {r.refund_reference} as refunded",
            question=f"Mark {amount} as refunded to {guest}?",
            effects=[
                booking,
                f"Record that the guest got {amount} back by other means. {provider_call}",
                "The refund is settled: it leaves what the platform owes guests.",
            ],
            quote=params["note"],
            quote_label="How the guest was paid",
            fields=[("note", params["note"])],
            yes="Yes, mark as refunded",
            **common,
        )

    def render_confirmation(self, confirmation, status):
        return self.row(self.refund, extra={"confirmation": confirmation}, status=status)

    def render_invalid(self, error):
        extra = {"asking_note": True, "error": error.message, "note": self.request.POST.get("note", "")}
        return self.row(self.refund, extra=extra, status=400)

    def perform(self, params, key):
        refund, actor = self.refund, self.request.user
        try:
            if self.action == "retry":
                done = staff_actions.retry_refund(refund=refund, actor=actor, idempotency_key=key)
                message = (
                    f"{format_money(done.amount, done.currency)} sent back to {provider_name(done.provider)} "
                    f"again ({done.refund_reference}): waiting for its answer."
                )
            else:
                done = staff_actions.mark_refunded(refund=refund, actor=actor, note=params["note"], idempotency_key=key)
                message = f"{done.refund_reference} marked as refunded: {format_money(done.amount, done.currency)}."
        except TransactionError as error:
            message = f"{refund.refund_reference}: {error.message}"
            return self.row(self.get_refund(refund.pk), message=message, level="error")
        return self.row(self.get_refund(refund.pk), message=message)
