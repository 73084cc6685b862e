"""django-filter FilterSets for the portal's lists. Every control has a label."""

import django_filters
from django import forms
from django.conf import settings
from django.db.models import Q
from wagtail.models import ModelLogEntry

from finance.models import Wallet, WalletTransaction

from .services import ACTIONS


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
    balance_min = django_filters.NumberFilter(label="Balance from", field_name="balance", lookup_expr="gte")
    balance_max = django_filters.NumberFilter(label="Balance up to", field_name="balance", lookup_expr="lte")

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
    date_from = django_filters.DateFilter(
        label="From", field_name="created_at", lookup_expr="date__gte", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = django_filters.DateFilter(
        label="To", field_name="created_at", lookup_expr="date__lte", widget=forms.DateInput(attrs={"type": "date"})
    )

    class Meta:
        model = WalletTransaction
        fields = []


class AuditFilter(django_filters.FilterSet):
    user = django_filters.CharFilter(label="User", field_name="user__username", lookup_expr="iexact")
    action = django_filters.ChoiceFilter(
        label="Action", choices=[(k, v[0]) for k, v in ACTIONS.items()], empty_label="Any action"
    )
    object = django_filters.CharFilter(label="Object", method="filter_object")
    date_from = django_filters.DateFilter(
        label="From", field_name="timestamp", lookup_expr="date__gte", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = django_filters.DateFilter(
        label="To", field_name="timestamp", lookup_expr="date__lte", widget=forms.DateInput(attrs={"type": "date"})
    )

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
