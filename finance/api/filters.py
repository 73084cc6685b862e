"""The API's query filters (django-filter): bad values are a 400, never a database error."""

from datetime import UTC, timedelta

import django_filters
from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField
from drf_spectacular.utils import extend_schema_field

from finance.models import WalletTransaction

# The widest offsets in use anywhere (UTC−12:00 to UTC+14:00); PostgreSQL refuses past ±15:59.
LARGEST_OFFSET = timedelta(hours=14)


class BoundedIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time whose time-zone offset exists on Earth and whose instant exists in UTC."""

    def to_python(self, value):
        if value == "":
            # Sent but empty (?created_before=): not a date-time, so not silently no filter.
            raise ValidationError("Give a date-time, e.g. 2026-01-31T00:00:00Z, or leave the parameter out.")
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


# The same bounds, published in the schema: a date-time (RFC 3339) in the years 2 to 9998
# (so any offset keeps it inside 1 to 9999 in UTC) with an offset between -14:00 and +14:00.
BOUNDED_DATE_TIME_PATTERN = (
    r"^(?:000[2-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-"
    r".*(?:[Zz]|[+-](?:0[0-9]|1[0-3]):[0-5][0-9]|[+-]14:00)$"
)


@extend_schema_field({"type": "string", "format": "date-time", "pattern": BOUNDED_DATE_TIME_PATTERN})
class BoundedIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = BoundedIsoDateTimeField


class GivenChoiceField(django_filters.fields.ChoiceField):
    """A choice that, when its parameter is sent, must be one of the choices: `?type=` is a 400,
    as the schema (an enum) says, not read as "no filter". Leaving the parameter out still is."""

    def clean(self, value):
        if value == "":
            raise ValidationError("Give one of the listed values, or leave the parameter out.", code="invalid")
        return super().clean(value)


class GivenChoiceFilter(django_filters.ChoiceFilter):
    field_class = GivenChoiceField


class TransactionFilter(django_filters.FilterSet):
    type = GivenChoiceFilter(choices=WalletTransaction.Type.choices)
    status = GivenChoiceFilter(choices=WalletTransaction.Status.choices)
    created_after = BoundedIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = BoundedIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = WalletTransaction
        fields = ["type", "status", "created_after", "created_before"]
