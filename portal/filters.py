"""django-filter FilterSets for the portal's lists. Every control has a label."""

from datetime import datetime, time, timedelta
from decimal import Decimal

import django_filters
from django import forms
from django.conf import settings
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from django_filters.constants import EMPTY_VALUES
from wagtail.models import ModelLogEntry

from finance.models import (
    Payment,
    ProviderRefund,
    ReconciliationLine,
    Wallet,
    WalletTransaction,
    WebhookEvent,
    Withdrawal,
)
from finance.money import COLUMN_DECIMALS, COLUMN_DIGITS


def staff_action_choices() -> list[tuple[str, str]]:
    """The staff actions' audit codes (finance's and messaging's), as registered with Wagtail."""
    from wagtail.log_actions import registry

    return [(code, label) for code, label in registry.get_choices() if code.startswith("stayafrica.")]


def _start_of(day):
    """Midnight at the start of `day` in the current time zone (the zone `__date` lookups use)."""
    return timezone.make_aware(datetime.combine(day, time.min))


class DayFilter(django_filters.DateFilter):
    """A day picked with the browser's date picker."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", forms.DateInput(attrs={"type": "date"}))
        super().__init__(*args, **kwargs)


class DayFromFilter(DayFilter):
    """`field__date >= day` written as `field >= midnight starting day`: the same rows, but a range
    an index on the datetime column can serve, where the `__date` cast reads every row."""

    def filter(self, qs, value):
        if value in EMPTY_VALUES:
            return qs
        return qs.filter(**{f"{self.field_name}__gte": _start_of(value)})


class DayToFilter(DayFilter):
    """`field__date <= day` written as `field < midnight after day` (see DayFromFilter)."""

    def filter(self, qs, value):
        if value in EMPTY_VALUES:
            return qs
        try:
            return qs.filter(**{f"{self.field_name}__lt": _start_of(value + timedelta(days=1))})
        except OverflowError:  # the last representable day: every row is on or before it
            return qs


class ColumnDecimalField(forms.DecimalField):
    """A number the money columns can hold (finance.money's COLUMN_DIGITS and COLUMN_DECIMALS).

    Django's digit count takes zero with any exponent (`0e999999999`) as one digit, which
    PostgreSQL then cannot hold: zero is read as plain zero."""

    def __init__(self, **kwargs):
        super().__init__(max_digits=COLUMN_DIGITS, decimal_places=COLUMN_DECIMALS, **kwargs)

    def to_python(self, value):
        value = super().to_python(value)
        # is_zero(), not `== 0`: comparing a signalling NaN (`sNaN`) raises; validate() refuses it next.
        return Decimal(0) if value is not None and value.is_zero() else value


class BalanceFilter(django_filters.NumberFilter):
    """A balance bound: longer than the column holds is a form error, not a database overflow."""

    field_class = ColumnDecimalField


def _currency_choices():
    return [(c, c) for c in sorted(settings.MINIMUM_WITHDRAWAL)]


def owner_condition(value: str, prefix: str = "") -> Q:
    """People whose username, first name, last name or email starts with `value` (an email in
    full: that address), or whose first and last names start with its two parts ("Amara Oka")."""
    if "@" in value:
        return Q(**{f"{prefix}email__iexact": value})
    condition = (
        Q(**{f"{prefix}username__istartswith": value})
        | Q(**{f"{prefix}first_name__istartswith": value})
        | Q(**{f"{prefix}last_name__istartswith": value})
        | Q(**{f"{prefix}email__istartswith": value})
    )
    first, _, last = value.partition(" ")
    if last.strip():
        condition |= Q(**{f"{prefix}first_name__istartswith": first}) & Q(
            **{f"{prefix}last_name__istartswith": last.strip()}
        )
    return condition


def refuse_reversed_range(form, cleaned: dict, start_name: str, end_name: str) -> None:
    """A start date after the end date is an error on the start field, not an empty list."""
    start, end = cleaned.get(start_name), cleaned.get(end_name)
    if start and end and start > end:
        form.add_error(
            start_name,
            f"“{form.fields[start_name].label}” ({start:%Y-%m-%d}) is after “{form.fields[end_name].label}” "
            f"({end:%Y-%m-%d}).",
        )


class WebhookEventFilterForm(forms.Form):
    def clean(self):
        cleaned = super().clean()
        refuse_reversed_range(self, cleaned, "received_from", "received_to")
        return cleaned


class ActiveFiltersMixin:
    """`active_filters`: the filters a person set, as (label, value shown), for an empty list to say
    which of them matched nothing."""

    @property
    def active_filters(self) -> list[tuple[str, str]]:
        form = self.form
        if not self.is_bound:
            return []
        shown = []
        for name, field in form.fields.items():
            raw = form.data.get(name, "")
            if isinstance(raw, str):
                raw = raw.strip()
            if raw in EMPTY_VALUES:
                continue
            if form.is_valid() and form.cleaned_data.get(name) in EMPTY_VALUES:
                continue  # set, but not applied (a period clears From and To)
            if hasattr(field, "choices"):
                raw = dict((str(k), v) for k, v in field.choices).get(str(raw), raw)
            shown.append((str(form.fields[name].label), str(raw)))
        return shown


OWES = "yes"  # the wallet list's "Owes the platform" value, as the dashboard links to it


class WalletFilterForm(forms.Form):
    """A balance bound compares amounts, so it needs one currency: wallets in different currencies
    are never compared by number."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        currency = (self.data.get("currency") or "").strip()
        if currency in dict(_currency_choices()):
            for name in ("balance_min", "balance_max"):
                self.fields[name].label = f"{self.fields[name].label} ({currency})"

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("currency"):
            for name in ("balance_min", "balance_max"):
                if cleaned.get(name) is not None:
                    self.add_error(name, "Choose a currency to filter by balance.")
        low, high = cleaned.get("balance_min"), cleaned.get("balance_max")
        if low is not None and high is not None and low > high:
            self.add_error("balance_min", f"“Balance from” ({low}) is more than “Balance up to” ({high}).")
        return cleaned


class WalletFilter(ActiveFiltersMixin, django_filters.FilterSet):
    owner = django_filters.CharFilter(
        label="Owner",
        method="filter_owner",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Name, username or email"}),
    )
    currency = django_filters.ChoiceFilter(label="Currency", choices=_currency_choices, empty_label="Any currency")
    status = django_filters.ChoiceFilter(label="Status", choices=Wallet.Status.choices, empty_label="Any status")
    balance_min = BalanceFilter(label="Balance from", field_name="balance", lookup_expr="gte")
    balance_max = BalanceFilter(label="Balance up to", field_name="balance", lookup_expr="lte")
    # Below zero: a refund after the host withdrew; the dashboard's "Owed by hosts" links here.
    owes = django_filters.ChoiceFilter(
        label="Owes the platform",
        choices=[(OWES, "Yes: below zero"), ("no", "No")],
        empty_label="Either",
        method="filter_owes",
    )

    class Meta:
        model = Wallet
        fields = []
        form = WalletFilterForm

    def filter_owner(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(owner_condition(value, "user__"))

    def filter_owes(self, queryset, name, value):
        # Available (balance less held) below zero: only by what the host owes (check_ledger).
        below_zero = Q(balance__lt=F("held_balance"))
        return queryset.filter(below_zero) if value == OWES else queryset.exclude(below_zero)


class Period:
    """The date presets of a list: a range of days in the current time zone (weeks start on Monday)."""

    TODAY, THIS_WEEK, THIS_MONTH, LAST_MONTH = "today", "this_week", "this_month", "last_month"
    choices = [(TODAY, "Today"), (THIS_WEEK, "This week"), (THIS_MONTH, "This month"), (LAST_MONTH, "Last month")]

    @classmethod
    def days(cls, period: str, today=None) -> tuple:
        """(first day, last day) of `period`, both included."""
        today = today or timezone.localdate()
        if period == cls.TODAY:
            return today, today
        if period == cls.THIS_WEEK:
            monday = today - timedelta(days=today.weekday())
            return monday, monday + timedelta(days=6)
        first_of_month = today.replace(day=1)
        if period == cls.THIS_MONTH:
            next_month = (first_of_month + timedelta(days=32)).replace(day=1)
            return first_of_month, next_month - timedelta(days=1)
        if period == cls.LAST_MONTH:
            last_day = first_of_month - timedelta(days=1)
            return last_day.replace(day=1), last_day
        raise ValueError(period)


def _day(day) -> str:
    return day.strftime("%-d %b %Y")


OWNER_WALLETS_LISTED = 1000


class TransactionFilterForm(forms.Form):
    """A period sets the date range and wins over From and To (they say so); From after To is an
    error, not an empty list."""

    def clean(self):
        cleaned = super().clean()
        period = cleaned.get("period")
        if period:
            first, last = Period.days(period)
            self._note("period", f"{_day(first)} – {_day(last)}")
            for name in ("date_from", "date_to"):
                if cleaned.get(name):
                    self._note(name, f"Not applied: the period “{dict(Period.choices)[period]}” sets the dates.")
                cleaned[name] = None
            return cleaned
        refuse_reversed_range(self, cleaned, "date_from", "date_to")
        return cleaned

    def _note(self, name: str, text: str) -> None:
        """A field's help text, set after cleaning (its bound field, made while cleaning, copied the old one)."""
        self.fields[name].help_text = text
        self[name].help_text = text


class TransactionFilter(ActiveFiltersMixin, django_filters.FilterSet):
    reference = django_filters.CharFilter(
        label="Reference",
        method="filter_reference",
        min_length=3,
        # A trigram index (finance migration 0013) serves the substring search from three characters.
        error_messages={"min_length": "Type at least 3 characters of the reference."},
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Part of a reference"}),
    )
    owner = django_filters.CharFilter(
        label="Owner",
        method="filter_owner",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Name, username or email"}),
    )
    currency = django_filters.ChoiceFilter(label="Currency", choices=_currency_choices, empty_label="Any currency")
    type = django_filters.ChoiceFilter(label="Type", choices=WalletTransaction.Type.choices, empty_label="Any type")
    status = django_filters.ChoiceFilter(
        label="Status", choices=WalletTransaction.Status.choices, empty_label="Any status"
    )
    period = django_filters.ChoiceFilter(
        label="Period", choices=Period.choices, empty_label="Any time", method="filter_period"
    )
    # With a period chosen, the form clears these (TransactionFilterForm.clean).
    date_from = DayFromFilter(label="From", field_name="created_at")
    date_to = DayToFilter(label="To", field_name="created_at")

    class Meta:
        model = WalletTransaction
        fields = []
        form = TransactionFilterForm

    def filter_reference(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        # A whole reference (pasted from an email or a statement) is found by the unique index at once;
        # the trigram index would read the long posting lists of its commonest trigrams. References
        # all have one length, so a whole one is no part of another.
        if WalletTransaction.objects.filter(reference=value.upper()).exists():
            return queryset.filter(reference=value.upper())
        return queryset.filter(reference__icontains=value)

    def filter_owner(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        # The owners' wallets first, from the users' prefix indexes (portal migration 0008), as a list
        # the planner can count: the page then reads those wallets' rows (txn_wallet_newest). Asked as
        # a subquery instead, the planner guesses far more matches than a narrow name has and walks
        # the whole ledger newest first looking for them (seconds at 500,000 rows). A prefix so
        # broad that it matches more wallets than OWNER_WALLETS_LISTED is asked as the subquery:
        # then matches are everywhere and the walk finds a page at once.
        from django.contrib.auth import get_user_model

        users = get_user_model().objects.filter(owner_condition(value)).values("pk")
        wallets = Wallet.objects.filter(user__in=users).values_list("pk", flat=True)
        listed = list(wallets[: OWNER_WALLETS_LISTED + 1])
        if len(listed) <= OWNER_WALLETS_LISTED:
            return queryset.filter(wallet__in=listed)
        return queryset.filter(wallet__in=wallets)

    def filter_period(self, queryset, name, value):
        if not value:
            return queryset
        first, last = Period.days(value)
        return queryset.filter(created_at__gte=_start_of(first), created_at__lt=_start_of(last + timedelta(days=1)))


class AuditFilterForm(forms.Form):
    """The audit log's filters: a reversed date range is an error the page shows, not an empty list."""

    def clean(self):
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError("The start date is after the end date.", code="reversed_range")
        return data


class AuditFilter(ActiveFiltersMixin, django_filters.FilterSet):
    # type=search: the shared filter form applies these as you type (filter_form.html).
    user = django_filters.CharFilter(
        label="User",
        field_name="user__username",
        lookup_expr="istartswith",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Username"}),
    )
    action = django_filters.ChoiceFilter(label="Action", choices=staff_action_choices, empty_label="Any action")
    object = django_filters.CharFilter(
        label="Object",
        method="filter_object",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Reference, name or id"}),
    )
    date_from = DayFromFilter(label="From", field_name="timestamp")
    date_to = DayToFilter(label="To", field_name="timestamp")

    class Meta:
        model = ModelLogEntry
        fields = []
        form = AuditFilterForm

    def filter_object(self, queryset, name, value):
        value = value.strip()
        return (
            queryset.filter(Q(label__icontains=value) | Q(object_id=value) | Q(data__reference=value))
            if value
            else queryset
        )


# --- work queues: withdrawals and the webhook inbox ------------------------------------------

AGE_CHOICES = [(str(days), f"Requested over {days} day{'s' if days > 1 else ''} ago") for days in (1, 3, 7)]


class WithdrawalFilterForm(forms.Form):
    """Amounts are compared only within one currency: a bound without one is a field error."""

    def clean(self):
        cleaned = super().clean()
        refuse_reversed_range(self, cleaned, "requested_from", "requested_to")
        if not cleaned.get("currency"):
            for name in ("amount_min", "amount_max"):
                if cleaned.get(name) is not None:
                    self.add_error(name, "Choose a currency first: amounts in different currencies cannot be compared.")
        return cleaned


class AgeFilter(django_filters.ChoiceFilter):
    """Requested more than N days ago: `created_at < now - N days` (the (status, created_at) index)."""

    def filter(self, qs, value):
        if value in EMPTY_VALUES:
            return qs
        return qs.filter(**{f"{self.field_name}__lt": timezone.now() - timedelta(days=int(value))})


def _payout_method_choices():
    """The methods a payout can leave by (finance.payouts.LABELS), manual excepted: a manual
    payout completes at once and is never processing."""
    from finance.payouts import LABELS, MANUAL

    return [(method, label) for method, label in LABELS.items() if method != MANUAL]


class WithdrawalFilter(ActiveFiltersMixin, django_filters.FilterSet):
    host = django_filters.CharFilter(
        label="Host",
        method="filter_host",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Name, username or email"}),
    )
    currency = django_filters.ChoiceFilter(label="Currency", choices=_currency_choices, empty_label="Any currency")
    amount_min = BalanceFilter(label="Amount from", field_name="amount", lookup_expr="gte")
    amount_max = BalanceFilter(label="Amount up to", field_name="amount", lookup_expr="lte")
    age = AgeFilter(label="Age", field_name="created_at", choices=AGE_CHOICES, empty_label="Any age")
    requested_from = DayFromFilter(label="Requested from", field_name="created_at")
    requested_to = DayToFilter(label="Requested up to", field_name="created_at")
    # The processing tab only (the view drops it elsewhere): who is moving the money.
    provider = django_filters.ChoiceFilter(
        label="Provider", field_name="payout_method", choices=_payout_method_choices, empty_label="Any provider"
    )

    class Meta:
        model = Withdrawal
        fields = []
        form = WithdrawalFilterForm

    def filter_host(self, queryset, name, value):
        value = value.strip()
        return queryset.filter(owner_condition(value, "wallet__user__")) if value else queryset


def _provider_choices():
    from finance.providers import PROVIDERS

    return [(name, name.capitalize() if name != "mpesa" else "M-Pesa") for name in sorted(PROVIDERS)]


# The inbox's landing view: what staff must look at (flagged or rejected).
NEEDS_ATTENTION = "attention"
ALL_EVENTS = "all"


def _webhook_status_choices():
    return [
        (NEEDS_ATTENTION, "Needs attention (flagged or rejected)"),
        (ALL_EVENTS, "Any status"),
        *WebhookEvent.Outcome.choices,
    ]


class WebhookStatusFilter(django_filters.ChoiceFilter):
    def filter(self, qs, value):
        if value in EMPTY_VALUES or value == ALL_EVENTS:
            return qs
        if value == NEEDS_ATTENTION:
            return qs.filter(outcome__in=WebhookEvent.NEEDS_ATTENTION)
        return qs.filter(outcome=value)


class WebhookEventFilter(ActiveFiltersMixin, django_filters.FilterSet):
    """The webhook inbox. `show` keeps its name (links and bookmarks use ?show=attention|all)."""

    q = django_filters.CharFilter(
        label="Reference",
        method="filter_reference",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Event id, PAY-… or provider reference"}),
    )
    provider = django_filters.ChoiceFilter(label="Provider", choices=_provider_choices, empty_label="Any provider")
    show = WebhookStatusFilter(label="Status", choices=_webhook_status_choices, empty_label=None)
    received_from = DayFromFilter(label="Received from", field_name="received_at")
    received_to = DayToFilter(label="Received up to", field_name="received_at")

    class Meta:
        model = WebhookEvent
        fields = []
        form = WebhookEventFilterForm

    def filter_reference(self, queryset, name, value):
        """Exact matches on indexed columns: the event id, the payment's reference (PAY-…, any
        case) or the provider's reference for the payment."""
        value = value.strip()
        if not value:
            return queryset
        # The payments first (two unique indexes), so the events' condition is an OR of two indexed
        # columns (event id, payment id) rather than an OR across a join, which no index serves.
        payments = Payment.objects.filter(Q(reference=value.upper()) | Q(provider_reference=value))
        payment_ids = list(payments.values_list("pk", flat=True)[:20])
        return queryset.filter(Q(event_id=value) | Q(payment_id__in=payment_ids))


# --- reconciliation (portal/views/reconciliation.py) -------------------------------------------


class ReconciliationDayFilterForm(forms.Form):
    def clean(self):
        cleaned = super().clean()
        refuse_reversed_range(self, cleaned, "day_from", "day_to")
        return cleaned


def _unresolved_here():
    """Lines of the same provider and day still needing a person (a subquery on the outer line)."""
    return ReconciliationLine.objects.filter(
        provider=OuterRef("provider"),
        day=OuterRef("day"),
        state__in=ReconciliationLine.UNRESOLVED_STATES,
        resolved_at__isnull=True,
    )


class ReconciliationDayFilter(ActiveFiltersMixin, django_filters.FilterSet):
    """The reconciliation index: lines filtered, then summed per provider and day (the view)."""

    provider = django_filters.ChoiceFilter(label="Provider", choices=_provider_choices, empty_label="Any provider")
    day_from = DayFilter(label="Days from", field_name="day", lookup_expr="gte")
    day_to = DayFilter(label="Days up to", field_name="day", lookup_expr="lte")
    unresolved = django_filters.BooleanFilter(
        label="With unresolved lines only",
        method="filter_unresolved",
        widget=forms.CheckboxInput,
    )

    class Meta:
        model = ReconciliationLine
        fields = []
        form = ReconciliationDayFilterForm

    def filter_unresolved(self, queryset, name, value):
        """Whole days (every line, for their counts) that still have a difference to resolve."""
        return queryset.filter(Exists(_unresolved_here())) if value else queryset


UNRESOLVED = "unresolved"


def _line_state_choices():
    return [(UNRESOLVED, "Unresolved differences"), *ReconciliationLine.State.choices]


class LineStateFilter(django_filters.ChoiceFilter):
    def filter(self, qs, value):
        if value in EMPTY_VALUES:
            return qs
        if value == UNRESOLVED:
            return qs.filter(state__in=ReconciliationLine.UNRESOLVED_STATES, resolved_at__isnull=True)
        return qs.filter(state=value)


class ReconciliationLineFilter(ActiveFiltersMixin, django_filters.FilterSet):
    """One provider's day: its lines by state."""

    state = LineStateFilter(label="State", choices=_line_state_choices, empty_label="Every line")
    q = django_filters.CharFilter(
        label="Reference",
        field_name="provider_reference",
        lookup_expr="iexact",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "The reference on the report"}),
    )

    class Meta:
        model = ReconciliationLine
        fields = []


# --- refunds at the provider (the Refunds page's "Refunds made") ------------------------------

ALL_REFUNDS = "all"


def _refund_show_conditions() -> dict:
    """Each view of "Refunds made": (label, condition). "manual" refunds are paid by hand."""
    Status, by_hand = ProviderRefund.Status, Q(provider="manual")
    return {
        ALL_REFUNDS: ("All refunds", Q()),
        "failed": ("Failed", Q(status=Status.FAILED)),
        "in_progress": ("In progress", Q(status__in=(Status.QUEUED, Status.PROCESSING)) & ~by_hand),
        "refunded": ("Refunded", Q(status=Status.SUCCEEDED)),
        "by_hand": ("To refund by hand", by_hand & Q(status__in=ProviderRefund.OPEN_STATUSES)),
    }


class RefundShowFilter(django_filters.ChoiceFilter):
    def filter(self, qs, value):
        if value in EMPTY_VALUES:
            return qs
        return qs.filter(_refund_show_conditions()[value][1])


def _refund_provider_choices():
    return [*_provider_choices(), ("manual", "By hand")]


class RefundFilter(ActiveFiltersMixin, django_filters.FilterSet):
    """ "Refunds made". `show` names the views (?show=failed in links from the dashboard)."""

    show = RefundShowFilter(
        label="Show",
        choices=lambda: [(name, label) for name, (label, _) in _refund_show_conditions().items()],
        empty_label=None,
    )
    provider = django_filters.ChoiceFilter(
        label="Provider", choices=_refund_provider_choices, empty_label="Any provider"
    )
    refund = django_filters.CharFilter(
        label="Booking or guest",
        method="filter_refund",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Booking number, guest or reference"}),
    )

    class Meta:
        model = ProviderRefund
        fields = []

    def filter_refund(self, queryset, name, value):
        """A booking number (#42), a guest's username, or a refund's or transaction's reference."""
        value = value.strip().lstrip("#")
        if not value:
            return queryset
        condition = (
            Q(payment__booking__guest__username__iexact=value)
            | Q(refund_reference__iexact=value)
            | Q(transaction__reference__iexact=value)
            | Q(provider_refund_id=value)
        )
        if value.isdigit():
            condition |= Q(payment__booking_id=int(value))
        return queryset.filter(condition)
