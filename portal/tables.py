"""django-tables2 tables. Rendered by portal/includes/table.html (Wagtail's listing look)."""

import django_tables2 as tables
from django.template.defaultfilters import date as date_filter
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.timezone import template_localtime

from finance import permissions, refunds, staff_actions
from finance.models import ReconciliationLine, ReconciliationReport, Wallet, WalletTransaction, Withdrawal
from finance.money import format_money
from finance.payouts import MANUAL, payout_route, route_for

from .links import transaction_link, url_for
from .templatetags.portal_tags import balance_html

# Amounts in different currencies are never compared: a sort by an amount orders by currency first,
# so each currency's rows stay together (and with a currency chosen, only that one is listed).
CURRENCY_FIRST_HINT = (
    "Sorted by currency first, then by {what}: amounts in different currencies are never compared. "
    "Choose a currency to see one currency only."
)


class CurrencyFirstHintMixin:
    """`hint`: a sentence under the table's header when it is sorted by an amount across currencies."""

    amount_columns: dict[str, str] = {}  # column name -> what the hint calls it

    @property
    def hint(self) -> str:
        request = getattr(self, "request", None)
        if request is None or request.GET.get("currency") or "currency" in (self.exclude or ()):
            return ""  # one currency listed (chosen, or one wallet's page)
        for alias in self.order_by or ():
            name = alias.lstrip("-")
            if name in self.amount_columns:
                return CURRENCY_FIRST_HINT.format(what=self.amount_columns[name])
        return ""


class MoneyColumn(tables.Column):
    """An amount in its row's currency; `balance=True`: a wallet balance, red and "−NGN …" below zero."""

    def __init__(self, *args, currency_field="currency", balance=False, **kwargs):
        self.currency_field = currency_field
        self.balance = balance
        kwargs.setdefault("attrs", {"td": {"class": "ops-num"}, "th": {"class": "ops-num"}})
        super().__init__(*args, **kwargs)

    def render(self, value, record):
        currency = getattr(record, self.currency_field)
        return balance_html(value, currency) if self.balance else format_money(value, currency)


class DateTimeColumn(tables.DateTimeColumn):
    """django-tables2's DateTimeColumn, without its per-cell template: the same `date` filter on the
    value in the current time zone, called directly (a Template render per row was a large share
    of a list page's time)."""

    def __init__(self, format, *args, **kwargs):
        super().__init__(format, *args, **kwargs)
        self.date_format = format

    def render(self, value):
        return date_filter(template_localtime(value), self.date_format) or self.default


class WalletTable(CurrencyFirstHintMixin, tables.Table):
    owner = tables.Column(accessor="user__username", verbose_name="Owner", order_by=("user__username",))
    currency = tables.Column()
    status = tables.Column()
    balance = MoneyColumn(order_by=("currency", "balance", "id"), balance=True)
    held_balance = MoneyColumn(verbose_name="Held", order_by=("currency", "held_balance", "id"))
    available = MoneyColumn(accessor="available_balance", verbose_name="Available", orderable=False, balance=True)

    class Meta:
        model = Wallet
        fields = ("owner", "currency", "status", "balance", "held_balance", "available")
        order_by = ("-id",)

    amount_columns = {"balance": "balance", "held_balance": "held amount"}

    def render_owner(self, value, record):
        url = reverse("ops_wallets:detail", args=[record.pk])
        return format_html('<a href="{}">{}</a><br><small>{}</small>', url, record.user, record.user.email)


class TransactionTable(CurrencyFirstHintMixin, tables.Table):
    # Ties on created_at broken by id, as in the model's ordering: pages stay stable, and the order
    # is that of the (created_at, id) and (wallet, -created_at, -id) indexes.
    created_at = DateTimeColumn(verbose_name="Date", format="Y-m-d H:i", order_by=("created_at", "id"))
    reference = tables.Column()
    # The wallet's owner (select_related("wallet__user") in the views: no query per row).
    owner = tables.Column(accessor="wallet__user", verbose_name="Owner", orderable=False)
    currency = tables.Column(orderable=False)
    type = tables.Column()
    status = tables.Column()
    # Currency first (index txn_currency_amount): amounts in different currencies are never compared.
    amount = tables.Column(
        attrs={"td": {"class": "ops-num"}, "th": {"class": "ops-num"}}, order_by=("currency", "amount", "id")
    )
    # A running balance of one wallet: not comparable across wallets, so not a sort key.
    balance_after = MoneyColumn(verbose_name="Balance after", orderable=False)
    # Rendered by render_actions, not a TemplateColumn: a TemplateColumn renders a template with
    # every context processor once per row, the biggest cost of the list's page.
    actions = tables.Column(empty_values=(), verbose_name="Actions", orderable=False)

    class Meta:
        model = WalletTransaction
        fields = (
            "created_at",
            "reference",
            "owner",
            "currency",
            "type",
            "status",
            "amount",
            "balance_after",
            "actions",
        )
        order_by = ("-created_at",)

    amount_columns = {"amount": "amount"}

    def render_reference(self, value, record):
        request = getattr(self, "request", None)
        return transaction_link(value, user=request.user) if request is not None else value

    def render_owner(self, value, record):
        return format_html('<a href="{}">{}</a>', url_for("ops_wallets:detail", record.wallet_id), value)

    def render_amount(self, value, record):
        sign = "+" if record.direction == "in" else "−"
        return f"{sign}{format_money(value, record.currency)}"

    def render_actions(self, record):
        state = self.reversal_states.get(record.pk)
        if state is not None and state.pending is not None:
            label = f"Reversal pending #{state.pending}"
            if not self.can_see_approvals:
                return format_html('<span class="status-tag">{}</span>\n', label)
            return format_html(
                '<a class="status-tag" href="{}#approval-{}" aria-label="{} (reversal of {})">{}</a>\n',
                reverse("ops_approvals:index"),
                state.pending,
                label,
                record.reference,
                label,
            )
        if state is not None and state.reversible and self.can_reverse:
            return format_html(
                '\n<a class="button button-small button-secondary" href="{}" aria-label="Reverse {}">Reverse</a>\n\n',
                url_for("ops_transactions:reverse", record.reference),
                record.reference,
            )
        if record.status == "reversed":
            return mark_safe('<span class="status-tag">Reversed</span>\n')
        return "—\n"

    @cached_property
    def reversal_states(self) -> dict:
        """Reverse, or the pending request, for each row of the page: one query for the page
        (staff_actions.reversal_states), built on the first row rendered."""
        page = getattr(self, "page", None)
        rows = page.object_list if page is not None else self.rows
        return staff_actions.reversal_states([row.record for row in rows])

    @cached_property
    def can_reverse(self) -> bool:
        request = getattr(self, "request", None)
        return request is not None and permissions.allows(request.user, permissions.REVERSE_TRANSACTION)

    @cached_property
    def can_see_approvals(self) -> bool:
        request = getattr(self, "request", None)
        return request is not None and permissions.allows(request.user, permissions.VIEW_APPROVALS)


# How staff name each payout method in a sentence ("Sent to Paystack", "Waiting for M-Pesa").
PROVIDER_NAMES = {
    "paystack": "Paystack",
    "flutterwave": "Flutterwave",
    "mpesa": "M-Pesa",
    "stripe": "Stripe",
    "sandbox": "the sandbox",
}


def provider_name(method: str) -> str:
    return PROVIDER_NAMES.get(method, method)


def age_text(delta) -> str:
    """A waiting time as staff read it: "3 h 12 min", "2 d 4 h", "12 min", "under 1 min"."""
    minutes = max(int(delta.total_seconds() // 60), 0)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else "under 1 min"


def with_payout(w: Withdrawal) -> Withdrawal:
    """`w` with what its row says about its payout: `route` (finance.payouts.payout_route, for a
    pending one: "Send payout" or "Mark as paid") and `provider` (who is moving it, once sent)."""
    w.route = payout_route(w.bank_account) if w.status == Withdrawal.Status.PENDING else None
    w.provider = provider_name(w.payout_method) if w.transfer_in_flight else ""
    return w


class WithdrawalTable(tables.Table):
    """Every tab of the withdrawal queue (portal.views.finance.WithdrawalQueueView): the pending
    tab excludes the history's and the payouts' columns, the processing tab the history's
    and the selection, the history tabs the open tabs' (OPEN_COLUMNS) and the payouts'. The
    pending tab's row is also rendered alone by includes/withdrawal_row.html: keep the two
    in step."""

    OPEN_COLUMNS = ("select", "available", "actions")
    HISTORY_COLUMNS = ("processed_at", "processed_by", "failure_reason")
    PAYOUT_COLUMNS = ("provider", "transfer_reference", "provider_transfer_id", "sent", "payout_error", "checked")

    # The header's select-all checkbox is added by static/portal/portal.js (th[data-select-all]).
    select = tables.TemplateColumn(
        template_name="portal/includes/withdrawal_select.html",
        verbose_name="Select",
        orderable=False,
        attrs={"th": {"data-select-all": ""}},
    )
    reference = tables.Column(verbose_name="Reference")
    created_at = DateTimeColumn(verbose_name="Requested", format="Y-m-d H:i")
    host = tables.Column(accessor="wallet__user__username", verbose_name="Host", order_by=("wallet__user__username",))
    bank_account = tables.Column(verbose_name="Bank account", orderable=False)
    amount = MoneyColumn()
    available = MoneyColumn(accessor="wallet__available_balance", verbose_name="Wallet available", orderable=False)
    status = tables.Column()
    # The processing tab: who moves the money, under which references, for how long, and how it went.
    provider = tables.Column(accessor="payout_method", verbose_name="Provider", order_by=("payout_method", "id"))
    transfer_reference = tables.Column(verbose_name="Transfer reference", orderable=False)
    provider_transfer_id = tables.Column(verbose_name="Provider's id", orderable=False)
    sent = tables.Column(
        accessor="payout_sent_at", verbose_name="Waiting", empty_values=(), order_by=("payout_sent_at", "id")
    )
    payout_error = tables.Column(verbose_name="Last provider error", orderable=False)
    checked = DateTimeColumn(
        accessor="payout_checked_at", verbose_name="Last checked", format="Y-m-d H:i", orderable=False
    )
    processed_at = DateTimeColumn(verbose_name="When", format="Y-m-d H:i", order_by=("processed_at", "id"))
    processed_by = tables.Column(verbose_name="By", order_by=("processed_by__username",))
    failure_reason = tables.Column(verbose_name="Reason", orderable=False)
    actions = tables.TemplateColumn(
        template_name="portal/includes/withdrawal_actions.html", verbose_name="Actions", orderable=False
    )

    class Meta:
        model = Withdrawal
        fields = (
            "select",
            "reference",
            "created_at",
            "host",
            "bank_account",
            "amount",
            "available",
            "status",
            "provider",
            "transfer_reference",
            "provider_transfer_id",
            "sent",
            "payout_error",
            "checked",
            "processed_at",
            "processed_by",
            "failure_reason",
            "actions",
        )
        order_by = ("created_at",)
        row_attrs = {"id": lambda record: f"withdrawal-{record.pk}"}

    def render_reference(self, value, record):
        """The WD reference, and under it its ledger transaction, linked for those who may open it."""
        txn = transaction_link(record.transaction.reference, user=self.request.user)
        return format_html('<span class="ops-ref">{}</span><br><small>{}</small>', value, txn)

    def render_host(self, value, record):
        url = reverse("ops_wallets:detail", args=[record.wallet_id])
        return format_html('<a href="{}">{}</a>', url, record.wallet.user)

    def render_provider(self, value, record):
        return route_for(value or MANUAL).label

    def render_transfer_reference(self, value):
        return format_html('<span class="ops-ref">{}</span>', value)

    def render_sent(self, value, record):
        """How long the provider has had it ("3 h 12 min"), the exact time in the tooltip."""
        if value is None:
            return "—"
        exact = date_filter(template_localtime(value), "Y-m-d H:i:s T")
        return format_html('<span title="Sent {}">{}</span>', exact, age_text(timezone.now() - value))

    def render_payout_error(self, value):
        return format_html('<span class="ops-payout-error">{}</span>', value)

    def render_actions(self, **kwargs):
        """The actions' template, with the row's payout route and provider (`with_payout`)."""
        with_payout(kwargs["record"])
        return kwargs["bound_column"].column.render(**kwargs)


# --- reconciliation (portal/views/reconciliation.py) -------------------------------------------


def money_totals(totals: dict) -> str:
    """{"NGN": Decimal, "USD": Decimal} as "NGN 1,500.00 · USD 20.00" (currencies never added up)."""
    return " · ".join(format_money(amount, currency) for currency, amount in sorted(totals.items()))


class StateColumn(tables.Column):
    """One state's count on a provider's day, with its total per currency under it."""

    def __init__(self, state, *args, **kwargs):
        self.state = state
        kwargs.setdefault("attrs", {"td": {"class": "ops-num"}, "th": {"class": "ops-num"}})
        super().__init__(*args, accessor="counts", orderable=False, empty_values=(), **kwargs)

    def render(self, value, record):
        count = record["counts"].get(self.state, 0)
        if not count:
            return "0"
        return format_html("{}<br><small>{}</small>", count, money_totals(record["totals"].get(self.state, {})))


class ReconciliationDayTable(tables.Table):
    """Per provider and day (rows: finance.reconciliation.day_summaries, by portal.views.reconciliation.summarise)."""

    day = tables.Column(verbose_name="Day", orderable=False)
    provider = tables.Column(verbose_name="Provider", orderable=False)
    source = tables.Column(accessor="sources", verbose_name="Source", orderable=False)
    matched = StateColumn(ReconciliationLine.State.MATCHED, verbose_name="Matched")
    differs = StateColumn(ReconciliationLine.State.DIFFERS, verbose_name="Amount or currency differs")
    missing_in_ledger = StateColumn(ReconciliationLine.State.MISSING_IN_LEDGER, verbose_name="Missing in the ledger")
    missing_at_provider = StateColumn(
        ReconciliationLine.State.MISSING_AT_PROVIDER, verbose_name="Missing at the provider"
    )
    unresolved = tables.Column(verbose_name="Unresolved", orderable=False, attrs={"td": {"class": "ops-num"}})

    class Meta:
        row_attrs = {"id": lambda record: f"day-{record['provider']}-{record['day'].isoformat()}"}

    def render_day(self, value, record):
        return format_html('<a href="{}">{}</a>', record["url"], value.isoformat())

    def render_provider(self, value):
        return provider_name(value)

    def render_source(self, value):
        return ", ".join(ReconciliationReport.Source(source).label for source in sorted(value))

    def render_unresolved(self, value):
        if value:
            return format_html('<strong class="ops-bad">{}</strong>', value)
        return format_html('<span class="w-status w-status--primary">{}</span>', "All resolved")


def _side(amount, currency) -> str:
    return format_money(amount, currency) if amount is not None and currency else "—"


class ReconciliationLineTable(tables.Table):
    """One provider's day, line by line; `resolution` is the cell htmx re-renders in place."""

    provider_reference = tables.Column(verbose_name="Reference", orderable=False)
    kind = tables.Column(verbose_name="Kind", orderable=False)
    state = tables.Column(verbose_name="State", orderable=False)
    provider_side = tables.Column(
        verbose_name="Provider says",
        accessor="amount",
        orderable=False,
        empty_values=(),
        attrs={"td": {"class": "ops-num"}},
    )
    ledger_side = tables.Column(
        verbose_name="Ledger says",
        accessor="ledger_amount",
        orderable=False,
        empty_values=(),
        attrs={"td": {"class": "ops-num"}},
    )
    provider_status = tables.Column(verbose_name="Provider status", orderable=False)
    # The same template the resolve views answer with (htmx swaps this cell's contents).
    resolution = tables.Column(verbose_name="Resolution", orderable=False, empty_values=())

    class Meta:
        model = ReconciliationLine
        fields = ()
        sequence = (
            "provider_reference",
            "kind",
            "state",
            "provider_side",
            "ledger_side",
            "provider_status",
            "resolution",
        )
        row_attrs = {"id": lambda record: f"line-{record.pk}"}

    def render_provider_reference(self, value, record):
        user = self.request.user
        parts = [format_html('<span class="ops-ref">{}</span>', value)]
        if record.payment_id:
            payment = record.payment
            if payment.reference != value:  # the report named it by the provider's own reference
                parts.append(format_html("Payment {}", payment.reference))
            if payment.ledger_transaction_id:
                parts.append(transaction_link(payment.ledger_transaction.reference, user=user))
        if record.withdrawal_id:
            parts.append(format_html("Payout {}", record.withdrawal.reference))
            parts.append(transaction_link(record.withdrawal.transaction.reference, user=user))
        if record.refund_id:
            refund = record.refund
            if permissions.allows(user, "finance.view_booking", "finance.view_payment"):  # the refunds page
                url = f"{reverse('ops_refunds:index')}?booking={refund.payment.booking_id}"
                parts.append(format_html('Refund <a href="{}">{}</a>', url, refund.refund_reference))
            else:
                parts.append(format_html("Refund {}", refund.refund_reference))
            parts.append(transaction_link(refund.transaction.reference, user=user))
        return format_html_join(mark_safe("<br>"), "{}", ((part,) for part in parts))

    def render_state(self, value, record):
        tag = "w-status--primary" if record.state == ReconciliationLine.State.MATCHED else ""
        detail = ""
        if record.state == ReconciliationLine.State.DIFFERS:
            detail = "currency differs" if record.currency != record.ledger_currency else "amount differs"
            detail = format_html("<br><small>{}</small>", detail)
        return format_html('<span class="w-status {}">{}</span>{}', tag, record.get_state_display(), detail)

    def render_resolution(self, record):
        return render_to_string(
            "portal/includes/reconciliation_resolution.html",
            {"line": record, "can_resolve": self.can_resolve},
            request=self.request,
        )

    @cached_property
    def can_resolve(self) -> bool:
        return permissions.allows(self.request.user, permissions.RECONCILE)

    def render_provider_side(self, record):
        return _side(record.amount, record.currency)

    def render_ledger_side(self, record):
        return _side(record.ledger_amount, record.ledger_currency)


# --- refunds at the provider (portal.views.finance.RefundView) --------------------------------

MANUAL_REFUND = refunds.MANUAL  # ProviderRefund.provider when no provider refunds through an API


def refund_provider_label(provider: str) -> str:
    """The Provider column: "Paystack", "Sandbox", or "By hand" for a manual refund."""
    if provider == MANUAL_REFUND:
        return "By hand"
    return refunds.LABELS.get(provider, provider)


def refund_status_text(refund) -> str:
    """A refund's status as staff read it: "Processing at Paystack", "Refunded", "To refund by hand"."""
    status = refund.status
    if status == refund.Status.PROCESSING:
        return f"Processing at {provider_name(refund.provider)}"
    if status == refund.Status.QUEUED and refund.provider == MANUAL_REFUND:
        return "To refund by hand"
    if status == refund.Status.CANCELLED:
        return "Cancelled"
    return refund.get_status_display()


def refund_problem(refund) -> str:
    """What went wrong: the provider's reason for failing it, else the last error while sending."""
    return refund.failure_reason or refund.last_error


class RefundTable(tables.Table):
    """ "Refunds made" on the Refunds page: each refund's journey at the provider. A row is also
    rendered alone (RefundRowView) after a row action: `row_extra` then carries what its
    Actions cell shows instead of its buttons (a confirmation, the note's field, a refusal)."""

    # Seven columns, so the status, the provider's reason and the row's buttons fit a laptop's
    # width: the host's share sits under the amount, the provider's details under the status.
    created_at = DateTimeColumn(verbose_name="Date", format="Y-m-d H:i", order_by=("created_at", "id"))
    reference = tables.Column(accessor="refund_reference", verbose_name="Reference", orderable=False)
    booking = tables.Column(accessor="payment__booking_id", verbose_name="Booking", orderable=False)
    amount = MoneyColumn(verbose_name="Refunded to guest", order_by=("currency", "amount", "id"))
    provider = tables.Column(verbose_name="Provider", order_by=("provider", "id"))
    status = tables.Column(verbose_name="Status", order_by=("status", "id"))
    actions = tables.Column(empty_values=(), verbose_name="Actions", orderable=False)

    class Meta:
        order_by = ("-created_at",)
        row_attrs = {
            "id": lambda record: f"refund-{record.pk}",
            "class": lambda record: "" if record.is_open else "ops-done",
        }

    def __init__(self, *args, row_extra=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.row_extra = row_extra or {}

    def render_reference(self, value, record):
        txn = transaction_link(record.transaction.reference, user=self.request.user)
        return format_html(
            '<div class="ops-stack"><span class="ops-ref">{}</span><br><small>{}</small></div>', value, txn
        )

    def render_booking(self, value, record):
        url = f"{reverse('ops_refunds:index')}?booking={value}"
        return format_html(
            '<div class="ops-stack"><a href="{}">Booking #{}</a><br><small>guest {}</small></div>',
            url,
            value,
            record.payment.booking.guest,
        )

    def render_provider(self, value):
        return refund_provider_label(value)

    def render_amount(self, value, record):
        return format_html(
            '<div class="ops-stack">{}<br><small>host\'s share {}</small></div>',
            format_money(value, record.currency),
            format_money(record.transaction.amount, record.currency),
        )

    def render_status(self, record):
        css = {"failed": " ops-status-failed", "succeeded": " ops-status-done"}.get(record.status, "")
        parts = [format_html('<span class="status-tag{}">{}</span>', css, refund_status_text(record))]
        problem = refund_problem(record)
        if problem and record.failure_reason:
            parts.append(format_html('<span class="ops-refusal">{}</span>', problem))
        elif problem:
            parts.append(format_html('<span class="ops-payout-error">Last send error: {}</span>', problem))
        when = [
            format_html("{} {}", label, date_filter(template_localtime(moment), "Y-m-d H:i"))
            for label, moment in (("sent", record.sent_at), ("settled", record.settled_at))
            if moment
        ]
        if record.provider_refund_id:
            when.append(format_html('id <span class="ops-ref">{}</span>', record.provider_refund_id))
        if when:
            parts.append(format_html("<small>{}</small>", format_html_join(" · ", "{}", ((w,) for w in when))))
        # One block, so a phone card shows it beside its label as one value (portal.css: .ops-stack).
        return format_html(
            '<div class="ops-stack">{}</div>', format_html_join(mark_safe("<br>"), "{}", ((part,) for part in parts))
        )

    def render_actions(self, record):
        failed = record.status == record.Status.FAILED
        by_hand = record.provider == MANUAL_REFUND
        context = {
            "refund": record,
            "can_act": self.can_act,
            "can_retry": failed and not by_hand,
            "can_mark": record.is_open and (failed or by_hand),
            **self.row_extra,
        }
        return render_to_string("portal/includes/refund_actions.html", context, request=self.request)

    @cached_property
    def can_act(self) -> bool:
        return permissions.allows(self.request.user, permissions.RETRY_REFUND)
