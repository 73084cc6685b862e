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

from finance.models import Wallet, WalletTransaction
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


class AuditFilterForm(forms.Form):
    """The audit log's filters: a reversed date range is an error the page shows, not an empty list."""

    def clean(self):
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError("The start date is after the end date.", code="reversed_range")
        return data


class AuditFilter(django_filters.FilterSet):
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
    date_from = DayFromFilter(label="From", field_name="timestamp", widget=forms.DateInput(attrs={"type": "date"}))
    date_to = DayToFilter(label="To", field_name="timestamp", widget=forms.DateInput(attrs={"type": "date"}))

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
