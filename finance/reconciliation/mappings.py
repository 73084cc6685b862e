"""How each provider's report reads: one declarative column mapping per provider.

A mapping names the documentation it follows, the columns a file must have, how a row's
date, amount and currency read, which rows are money that moved (the settled statuses),
what kind of record a row is (payment, refund, payout) and which of its columns carry a
reference we can look up. Anything a mapping cannot read refuses the whole file with
InvalidReportError naming the row and the column: a report is matched whole or not at all.
"""

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from finance.errors import TransactionError
from finance.models import ReconciliationLine
from finance.money import from_minor_units, parse_typed_amount

PAYMENT = ReconciliationLine.Kind.PAYMENT
REFUND = ReconciliationLine.Kind.REFUND
PAYOUT = ReconciliationLine.Kind.PAYOUT

# Larger files are refused before they are read: a day's report of a marketplace this size is
# a few hundred kilobytes, and the whole file is matched in one transaction.
MAX_REPORT_BYTES = 20 * 1024 * 1024
# How many lines before the header row a statement may have (M-Pesa's starts with a preamble).
MAX_PREAMBLE_LINES = 20


class InvalidReportError(TransactionError):
    """The file is not a report this provider's column mapping can read: a column it needs is
    missing, or a row cannot be read. Nothing was stored."""

    code = "invalid_report"
    status = 400


@dataclass(frozen=True)
class ReportRow:
    """One row of a provider's report, in our terms."""

    line: int  # the row's line number in the file (1 = the header), or its position in an API answer
    day: date  # the provider's date of the row, as a UTC day
    kind: str  # PAYMENT, REFUND or PAYOUT
    references: tuple[str, ...]  # every reference the row carries, the one to show first
    amount: Decimal  # positive, in the currency's major units
    currency: str
    status: str  # the provider's word for the row's status
    raw: dict = field(default_factory=dict)

    @property
    def reference(self) -> str:
        return self.references[0]


@dataclass(frozen=True)
class ColumnMapping:
    provider: str
    title: str  # what staff read: "Paystack transactions export"
    documentation: str  # the provider's page (and section) the columns follow
    kinds: tuple[str, ...]  # the kinds of record this report lists (missing-at-provider looks at these only)
    required: tuple[str, ...]  # the columns a file must have
    date_column: str
    naive_timezone: str  # the zone of a time written without an offset
    status_column: str
    settled_statuses: frozenset[str]  # lower case; rows in any other status moved no money and are skipped
    kind_of: Callable[[dict], str | None]  # the row's kind, or None for a row that is none of ours (a fee)
    references_of: Callable[[dict, str], list[str]]
    amount_of: Callable[[dict, str], str]  # the row's amount as written, in `amount_unit`
    amount_unit: str = "major"  # "major" (45.00) or "minor" (4500)
    currency_column: str = ""
    fixed_currency: str = ""  # the currency when the file has no column for it (M-Pesa: KES)

    def read(self, content: bytes) -> list[ReportRow]:
        """Every settled row of the file that is one of our kinds, or InvalidReportError."""
        if len(content) > MAX_REPORT_BYTES:
            raise InvalidReportError(
                f"The file is larger than {MAX_REPORT_BYTES // (1024 * 1024)} MB: export one day or a week at a time."
            )
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidReportError(f"The file is not UTF-8 text: upload the {self.title} as CSV.") from None
        records = list(csv.reader(io.StringIO(text, newline="")))
        header_index = self._header_index(records)
        header = [name.strip() for name in records[header_index]]
        rows = []
        for index, values in enumerate(records[header_index + 1 :], start=header_index + 2):
            if not any(value.strip() for value in values):
                continue  # a blank line (statements end with one)
            if len(values) > len(header):
                raise InvalidReportError(f"Row {index} has more values than the header has columns.", row=index)
            record = {name: value.strip() for name, value in zip(header, values, strict=False)}
            row = self.read_row(record, line=index)
            if row is not None:
                rows.append(row)
        return rows

    def _header_index(self, records: list[list[str]]) -> int:
        """The header row: the first of the first lines that names every required column."""
        wanted = {name.lower() for name in self.required}
        for index, values in enumerate(records[: MAX_PREAMBLE_LINES + 1]):
            if wanted <= {value.strip().lower() for value in values}:
                return index
        if not records:
            raise InvalidReportError("The file is empty.")
        present = {value.strip().lower() for value in records[0]}
        missing = [name for name in self.required if name.lower() not in present]
        raise InvalidReportError(
            f"This is not a {self.title}: it has no column {', '.join(repr(name) for name in missing)}.",
            columns=missing,
        )

    def read_row(self, record: dict, *, line: int) -> ReportRow | None:
        """One row in our terms; None when it moved no money or is none of our kinds."""
        record = _case_insensitive(record, self.required)
        status = record.get(self.status_column, "")
        if status.lower() not in self.settled_statuses:
            return None
        kind = self.kind_of(record)
        if kind is None:
            return None
        currency = (record.get(self.currency_column, "") if self.currency_column else self.fixed_currency).upper()
        references = [ref for ref in self.references_of(record, kind) if ref]
        if not references:
            raise InvalidReportError(f"Row {line} has no reference to match it by.", row=line)
        return ReportRow(
            line=line,
            day=self._day(record.get(self.date_column, ""), line),
            kind=kind,
            references=tuple(dict.fromkeys(references)),
            amount=self._amount(self.amount_of(record, kind), currency, line),
            currency=currency,
            status=status,
            raw=record,
        )

    def _day(self, text: str, line: int) -> date:
        try:
            return utc_day(text, self.naive_timezone)
        except ValueError:
            raise InvalidReportError(
                f"Row {line}: {self.date_column!r} is {text!r}, not a date and time.", row=line, column=self.date_column
            ) from None

    def _amount(self, text: str, currency: str, line: int) -> Decimal:
        try:
            return parse_report_amount(text, currency, unit=self.amount_unit)
        except TransactionError as error:
            raise InvalidReportError(f"Row {line}: {error.message}", row=line) from None


def _case_insensitive(record: dict, required: tuple[str, ...]) -> dict:
    """The record keyed by the mapping's spelling of each column, however the file capitalised it."""
    by_lower = {name.lower(): name for name in required}
    return {by_lower.get(name.lower(), name): value for name, value in record.items()}


# Formats of a time written without ISO 8601 (M-Pesa's statement writes day first).
DAY_FIRST_FORMATS = ("%d-%m-%Y %H:%M:%S", "%d/%m/%Y %H:%M:%S", "%d-%m-%Y %H:%M", "%d/%m/%Y %H:%M")


def utc_day(text: str, naive_timezone: str = "UTC") -> date:
    """The UTC day of a time as a report writes it: ISO 8601 with or without an offset, a
    date alone, or day-first; a time without an offset is in `naive_timezone`. ValueError if none."""
    text = text.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        for pattern in DAY_FIRST_FORMATS:
            try:
                moment = datetime.strptime(text, pattern)
                break
            except ValueError:
                continue
        else:
            raise
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(naive_timezone))
    return moment.astimezone(UTC).date()


def parse_report_amount(text, currency: str, *, unit: str = "major") -> Decimal:
    """An amount as a report writes it, positive, exact, in `currency`'s major units: a refund
    or a withdrawal may be written negative ("-45.00"); thousands may be grouped ("1,500.00")."""
    text = str(text).strip()
    if text.startswith("-"):
        text = text[1:].strip()
    if unit == "minor":
        if not text.isascii() or not text.isdigit():
            raise InvalidReportError(f"the amount {text!r} is not a whole number of minor units.")
        return from_minor_units(int(text), currency)
    return parse_typed_amount(text, currency)


# --- the providers' mappings ------------------------------------------------------------------


def _first(*columns: str) -> Callable[[dict, str], str]:
    return lambda record, kind: next((record[name] for name in columns if record.get(name)), "")


def _columns(*columns: str) -> Callable[[dict, str], list[str]]:
    return lambda record, kind: [record.get(name, "") for name in columns]


PAYSTACK = ColumnMapping(
    provider="paystack",
    title="Paystack transactions export",
    documentation=(
        "https://paystack.com/docs/api/transaction/#list (Transaction API, 'List Transactions': the "
        "transaction object's reference, amount in the currency's subunit, currency, status, paid_at)"
    ),
    kinds=(PAYMENT,),
    required=("reference", "amount", "currency", "status", "paid_at"),
    date_column="paid_at",
    naive_timezone="Africa/Lagos",
    status_column="status",
    settled_statuses=frozenset({"success"}),
    kind_of=lambda record: PAYMENT,
    # `reference` is ours (Payment.reference, sent at initialize); `id` is Paystack's own.
    references_of=_columns("reference", "id"),
    amount_of=_first("amount"),
    amount_unit="minor",
    currency_column="currency",
)

FLUTTERWAVE = ColumnMapping(
    provider="flutterwave",
    title="Flutterwave transactions export",
    documentation=(
        "https://developer.flutterwave.com/v3.0/reference/get-all-transactions (v3 'Get all transactions': "
        "tx_ref, flw_ref, id, amount in major units, currency, status, created_at)"
    ),
    kinds=(PAYMENT,),
    required=("tx_ref", "amount", "currency", "status", "created_at"),
    date_column="created_at",
    naive_timezone="UTC",
    status_column="status",
    settled_statuses=frozenset({"successful"}),
    kind_of=lambda record: PAYMENT,
    # `tx_ref` is ours (Payment.reference, sent at checkout); `flw_ref` and `id` are Flutterwave's.
    references_of=_columns("tx_ref", "flw_ref", "id"),
    amount_of=_first("amount"),
    currency_column="currency",
)

# Stripe's reporting categories (https://docs.stripe.com/reports/reporting-categories) that are
# ours: a charge is a guest's payment, a refund a refund. Fees, payouts to our own bank account
# and adjustments are Stripe's side of the balance: skipped.
STRIPE_KINDS = {"charge": PAYMENT, "refund": REFUND}

STRIPE = ColumnMapping(
    provider="stripe",
    title="Stripe itemized balance change report",
    documentation=(
        "https://docs.stripe.com/reports/report-types/balance (report balance_change_from_activity.itemized.3, "
        "columns balance_transaction_id, created_utc, currency, gross, reporting_category, source_id, "
        "payment_intent_id; amounts in major units, refunds negative)"
    ),
    kinds=(PAYMENT, REFUND),
    required=("balance_transaction_id", "created_utc", "currency", "gross", "reporting_category", "source_id"),
    date_column="created_utc",
    naive_timezone="UTC",
    # The itemized report lists only balance changes that happened: it has no status column,
    # so the category stands in for it (every row of an ours category is settled).
    status_column="reporting_category",
    settled_statuses=frozenset(STRIPE_KINDS) | {"fee", "payout", "adjustment", "other_adjustment"},
    kind_of=lambda record: STRIPE_KINDS.get(record.get("reporting_category", "").lower()),
    # A charge: its PaymentIntent (Payment.provider_reference) first, then our reference where the
    # report was run with the payment_metadata[payment_reference] column. A refund: its re_ id.
    references_of=lambda record, kind: (
        [record.get("payment_intent_id", ""), record.get("payment_metadata[payment_reference]", "")]
        if kind == PAYMENT
        else [record.get("source_id", "")]
    ),
    amount_of=_first("gross"),
    currency_column="currency",
)


def _mpesa_kind(record: dict) -> str | None:
    details = record.get("Details", "").lower()
    if details.startswith("reversal") or record.get("Reason Type", "").lower() == "reversal":
        return REFUND
    if record.get("Paid In", "").strip("-0. "):
        return PAYMENT
    if record.get("Withdrawn", "").strip("-0. "):
        return PAYOUT
    return None


MPESA = ColumnMapping(
    provider="mpesa",
    title="M-Pesa organisation statement",
    documentation=(
        "Safaricom M-PESA Org Portal, 'Organisation statement' download (columns Receipt No., Completion "
        "Time, Details, Transaction Status, Paid In, Withdrawn, A/C No.): the layout Safaricom's business "
        "portal exports; Safaricom publishes no specification of it"
    ),
    kinds=(PAYMENT, REFUND, PAYOUT),
    required=("Receipt No.", "Completion Time", "Details", "Transaction Status", "Paid In", "Withdrawn"),
    date_column="Completion Time",
    naive_timezone="Africa/Nairobi",
    status_column="Transaction Status",
    settled_statuses=frozenset({"completed"}),
    kind_of=_mpesa_kind,
    # A payment: the A/C No. is the AccountReference of our STK push (Payment.reference). A payout or
    # a reversal: the receipt, which is the provider's id of the transfer or refund where we keep it.
    references_of=lambda record, kind: (
        [record.get("A/C No.", ""), record.get("Receipt No.", "")]
        if kind == PAYMENT
        else [record.get("Receipt No.", "")]
    ),
    amount_of=lambda record, kind: (
        record.get("Paid In", "") if kind == PAYMENT else record.get("Withdrawn") or record.get("Paid In", "")
    ),
    fixed_currency="KES",
)

MAPPINGS: dict[str, ColumnMapping] = {mapping.provider: mapping for mapping in (PAYSTACK, FLUTTERWAVE, STRIPE, MPESA)}
