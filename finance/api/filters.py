"""The API's query filters (django-filter): bad values are a 400, never a database error."""

from datetime import UTC, timedelta

import django_filters
from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField

from finance.models import WalletTransaction

# The widest offsets in use anywhere (UTC−12:00 to UTC+14:00); PostgreSQL refuses past ±15:59.
LARGEST_OFFSET = timedelta(hours=14)


class BoundedIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time whose time-zone offset exists on Earth and whose instant exists in UTC."""

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is None:
            return None
        offset = parsed.utcoffset()
        if offset is not None and abs(offset) > LARGEST_OFFSET:
            raise ValidationError("The time-zone offset must be between -14:00 and +14:00.", code="invalid")
        try:
            parsed.astimezone(UTC)
        except OverflowError:
            raise ValidationError("The date is outside the years 1 to 9999 in UTC.", code="invalid") from None
        return parsed


class BoundedIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = BoundedIsoDateTimeField


class TransactionFilter(django_filters.FilterSet):
    created_after = BoundedIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = BoundedIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = WalletTransaction
        fields = ["type", "status", "created_after", "created_before"]
