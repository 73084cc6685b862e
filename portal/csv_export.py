"""Streamed CSV downloads a spreadsheet reads cleanly, with spreadsheet formulas neutralised.

Every export of the portal goes through `stream_csv`, which

- writes a UTF-8 byte-order mark first, so spreadsheet programs read accents ("Adéwálé Òkè")
  as UTF-8 rather than in the machine's legacy code page;
- names the file with today's local date: `transactions-2026-11-30.csv`;
- writes each cell by one rule (`cell`): a datetime as ISO 8601 in the current time zone, to the
  second, with its offset (`2026-11-30T14:05:09+00:00`); a date as ISO 8601; a Decimal in plain
  notation; None as an empty cell; then `neutralise` against CSV injection;
- streams: rows are read lazily while the response is sent, never held in memory.

Money needs its currency to be written at the currency's precision: export columns say so with
`money("amount")` (see `TableListView.export_columns`). Choices are written as their labels with
`label("status")`, people as the portal shows them with `person("user")`.
"""

import csv
import re
from collections.abc import Callable, Iterable
from datetime import date, datetime
from decimal import Decimal

from django.http import StreamingHttpResponse
from django.utils import timezone

from finance.errors import TransactionError
from finance.money import round_money

BOM = "\ufeff"
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def neutralise(value) -> str:
    """A cell a spreadsheet will show as text, never run as a formula (OWASP CSV injection)."""
    text = "" if value is None else str(value)
    if PLAIN_NUMBER.fullmatch(text):  # a negative amount is a number, not a formula
        return text
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def iso_datetime(value: datetime) -> str:
    """ISO 8601 in the current time zone, whole seconds, with the offset: 2026-11-30T14:05:09+00:00."""
    if timezone.is_aware(value):
        value = timezone.localtime(value)
    return value.replace(microsecond=0).isoformat()


def cell(value) -> str:
    """One value as every export writes it (before `neutralise`)."""
    if value is None:
        return ""
    if isinstance(value, datetime):  # before date: a datetime is a date too
        return iso_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        return format(value, "f")  # never 1E+3
    return str(value)


def dated_filename(base: str) -> str:
    """`base` with today's local date: dated_filename("transactions") == "transactions-2026-11-30.csv".
    A trailing ".csv" on `base` is dropped first, so a caller may pass either."""
    base = base.removesuffix(".csv")
    return f"{base}-{timezone.localdate().isoformat()}.csv"


# --- export columns --------------------------------------------------------------------------
# An export column is (header, path) or (header, callable(obj) -> value). A path is read
# attribute by attribute ("wallet.user.email"); a dict is read by key ("data.amount").


def resolve(obj, path: str):
    """The value at `path` on `obj` ("" where any step is missing); callables are called."""
    for part in path.split("."):
        if obj is None or obj == "":
            return ""
        obj = obj.get(part, "") if isinstance(obj, dict) else getattr(obj, part, "")
        if callable(obj):
            obj = obj()
    return obj


def column_value(obj, spec: str | Callable):
    return spec(obj) if callable(spec) else resolve(obj, spec)


def money(path: str, *, currency: str = "currency") -> Callable:
    """An export column: the amount at `path` at its currency's precision, the currency read at the
    `currency` path: NGN 1500 → "1500.00", TND 1.5 → "1.500", UGX 1500 → "1500"."""

    def value(obj) -> str:
        amount, code = resolve(obj, path), resolve(obj, currency)
        if amount in ("", None):
            return ""
        try:
            return format(round_money(Decimal(str(amount)), str(code)), "f")
        except (ArithmeticError, ValueError, TransactionError):  # not a number, or an unknown currency
            return str(amount)

    return value


def label(path: str) -> Callable:
    """An export column: a choice field written as its label ("Booking payout", not "booking_payout")."""
    *parents, field = path.split(".")

    def value(obj) -> str:
        owner = resolve(obj, ".".join(parents)) if parents else obj
        display = getattr(owner, f"get_{field}_display", None)
        return display() if display else resolve(owner, field)

    return value


def person(path: str) -> Callable:
    """An export column: a user as the portal's tables show them (`str(user)`: the full name, or the
    username when there is none)."""

    def value(obj) -> str:
        user = resolve(obj, path)
        return str(user) if user not in ("", None) else ""

    return value


# --- the response ----------------------------------------------------------------------------


class _Echo:
    def write(self, value):
        return value


def stream_csv(
    filename: str,
    header: list[str],
    rows: Iterable,
    *,
    on_finish: Callable[[int, bool], None] | None = None,
) -> StreamingHttpResponse:
    """`rows` is any iterable of sequences; it is consumed lazily while the response streams.

    `filename` is the export's base name ("transactions"); today's date is added. `on_finish(rows,
    complete)` is called once the stream ends, with the number of data rows sent and whether the
    whole file was sent (False when the client went away or reading the rows failed)."""
    writer = csv.writer(_Echo())

    def generate():
        sent, complete = 0, False
        try:
            yield BOM + writer.writerow([neutralise(h) for h in header])
            for row in rows:
                line = writer.writerow([neutralise(cell(value)) for value in row])
                sent += 1  # handed to the server (counted before the yield: the client may go away there)
                yield line
            complete = True
        finally:
            if on_finish is not None:
                on_finish(sent, complete)

    response = StreamingHttpResponse(generate(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{dated_filename(filename)}"'
    return response
