"""django-filter FilterSets for the portal's lists. Every control has a label."""

from datetime import datetime, time, timedelta
from decimal import Decimal

import django_filters
from django import forms
from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from django_filters.constants import EMPTY_VALUES
from wagtail.models import ModelLogEntry

from finance.models import Payment, Wallet, WalletTransaction, WebhookEvent, Withdrawal
from finance.money import COLUMN_DECIMALS, COLUMN_DIGITS


def staff_action_choices() -> list[tuple[str, str]]:
    """The staff actions' audit codes (finance's and messaging's), as registered with Wagtail."""
    from wagtail.log_actions import registry

    return [(code, label) for code, label in registry.get_choices() if code.startswith("stayafrica.")]


def _start_of(day):
    """Midnight at the start of `day` in the current time zone (the zone `__date` lookups use)."""
    return timezone.make_aware(datetime.combine(day, time.min))


class DayFromFilter(django_filters.DateFilter):
    """`field__date >= day` written as `field >= midnight starting day`: the same rows, but a range
    an index on the datetime column can serve, where the `__date` cast reads every row."""

    def filter(self, qs, value):
        if value in EMPTY_VALUES:
            return qs
        return qs.filter(**{f"{self.field_name}__gte": _start_of(value)})


class DayToFilter(django_filters.DateFilter):
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


class WalletFilter(django_filters.FilterSet):
    owner = django_filters.CharFilter(
        label="Owner",
        method="filter_owner",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Name, username or email"}),
    )
    currency = django_filters.ChoiceFilter(label="Currency", choices=_currency_choices, empty_label="Any currency")
    status = django_filters.ChoiceFilter(label="Status", choices=Wallet.Status.choices, empty_label="Any status")
    balance_min = BalanceFilter(label="Balance from", field_name="balance", lookup_expr="gte")
    balance_max = BalanceFilter(label="Balance up to", field_name="balance", lookup_expr="lte")

    class Meta:
        model = Wallet
        fields = []

    def filter_owner(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        if "@" in value:
            return queryset.filter(user__email__iexact=value)
        return queryset.filter(
            Q(user__username__istartswith=value)
            | Q(user__last_name__istartswith=value)
            | Q(user__email__istartswith=value)
        )


class TransactionFilter(django_filters.FilterSet):
    reference = django_filters.CharFilter(
        label="Reference",
        field_name="reference",
        lookup_expr="iexact",
        widget=forms.TextInput(attrs={"type": "search"}),
    )
    type = django_filters.ChoiceFilter(label="Type", choices=WalletTransaction.Type.choices, empty_label="Any type")
    status = django_filters.ChoiceFilter(
        label="Status", choices=WalletTransaction.Status.choices, empty_label="Any status"
    )
    date_from = DayFromFilter(label="From", field_name="created_at", widget=forms.DateInput(attrs={"type": "date"}))
    date_to = DayToFilter(label="To", field_name="created_at", widget=forms.DateInput(attrs={"type": "date"}))

    class Meta:
        model = WalletTransaction
        fields = []


class AuditFilter(django_filters.FilterSet):
    user = django_filters.CharFilter(label="User", field_name="user__username", lookup_expr="iexact")
    action = django_filters.ChoiceFilter(label="Action", choices=staff_action_choices, empty_label="Any action")
    object = django_filters.CharFilter(label="Object", method="filter_object")
    date_from = DayFromFilter(label="From", field_name="timestamp", widget=forms.DateInput(attrs={"type": "date"}))
    date_to = DayToFilter(label="To", field_name="timestamp", widget=forms.DateInput(attrs={"type": "date"}))

    class Meta:
        model = ModelLogEntry
        fields = []

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


class WithdrawalFilter(django_filters.FilterSet):
    host = django_filters.CharFilter(
        label="Host",
        method="filter_host",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Name, username or email"}),
    )
    currency = django_filters.ChoiceFilter(label="Currency", choices=_currency_choices, empty_label="Any currency")
    amount_min = BalanceFilter(label="Amount from", field_name="amount", lookup_expr="gte")
    amount_max = BalanceFilter(label="Amount up to", field_name="amount", lookup_expr="lte")
    age = AgeFilter(label="Age", field_name="created_at", choices=AGE_CHOICES, empty_label="Any age")
    requested_from = DayFromFilter(
        label="Requested from", field_name="created_at", widget=forms.DateInput(attrs={"type": "date"})
    )
    requested_to = DayToFilter(
        label="Requested up to", field_name="created_at", widget=forms.DateInput(attrs={"type": "date"})
    )

    class Meta:
        model = Withdrawal
        fields = []
        form = WithdrawalFilterForm

    def filter_host(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        if "@" in value:
            return queryset.filter(wallet__user__email__iexact=value)
        return queryset.filter(
            Q(wallet__user__username__istartswith=value)
            | Q(wallet__user__last_name__istartswith=value)
            | Q(wallet__user__email__istartswith=value)
        )


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


class WebhookEventFilter(django_filters.FilterSet):
    """The webhook inbox. `show` keeps its name (links and bookmarks use ?show=attention|all)."""

    q = django_filters.CharFilter(
        label="Reference",
        method="filter_reference",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Event id, PAY-… or provider reference"}),
    )
    provider = django_filters.ChoiceFilter(label="Provider", choices=_provider_choices, empty_label="Any provider")
    show = WebhookStatusFilter(label="Status", choices=_webhook_status_choices, empty_label=None)
    received_from = DayFromFilter(
        label="Received from", field_name="received_at", widget=forms.DateInput(attrs={"type": "date"})
    )
    received_to = DayToFilter(
        label="Received up to", field_name="received_at", widget=forms.DateInput(attrs={"type": "date"})
    )

    class Meta:
        model = WebhookEvent
        fields = []

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
