"""Matching a report's rows against the ledger by provider reference.

Each row is looked up by every reference it carries, among the records of its provider:

  payment  Payment.reference (ours, sent as the provider's reference) or Payment.provider_reference
  refund   ProviderRefund.provider_refund_id or refund_reference
  payout   Withdrawal.transfer_reference or provider_transfer_id (payout_method is the provider)

Same amount and currency: matched. Other amount or currency: differs, both kept. No record, or
a record whose money the ledger never moved (a payment not applied, a payout never sent or
failed): missing in the ledger. Then the ledger's records of the report's days and kinds that
no row named are missing at the provider, each on the day of the timestamp that says the money
moved on our side:

  payment  its ledger transaction's created_at: when the ledger applied it (a payment the
           provider took but we never applied is not ours yet, and is found from the row side)
  refund   ProviderRefund.sent_at: the refund exists at the provider from the moment it was
           created there, which is the day its report lists it (settled_at comes later, by
           callback, and may fall on another day)
  payout   Withdrawal.payout_sent_at: when the transfer was sent, the day the provider's report
           lists it (processed_at is the callback's time)

A record already matched by another report's line is not missing here: a payment applied
seconds after midnight is listed on the provider's previous day.
"""

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Q

from finance.models import Payment, ProviderRefund, ReconciliationLine, Withdrawal

from .mappings import PAYMENT, PAYOUT, REFUND, ReportRow

State = ReconciliationLine.State

# The records whose money the ledger moved, by kind: only these can be missing at the provider.
REFUND_SENT = (ProviderRefund.Status.PROCESSING, ProviderRefund.Status.SUCCEEDED)
PAYOUT_SENT = (Withdrawal.Status.PROCESSING, Withdrawal.Status.COMPLETED)
RECORD_FIELD = {PAYMENT: "payment", REFUND: "refund", PAYOUT: "withdrawal"}


def day_bounds(first_day: date, last_day: date) -> tuple[datetime, datetime]:
    """The UTC instants from the start of `first_day` to the end of `last_day`."""
    start = datetime.combine(first_day, time.min, tzinfo=UTC)
    return start, datetime.combine(last_day + timedelta(days=1), time.min, tzinfo=UTC)


def records_by_reference(provider: str, kind: str, references: set[str]) -> dict[str, object]:
    """The provider's records of `kind` any of `references` names, by each reference they answer to."""
    if not references:
        return {}
    if kind == PAYMENT:
        rows = Payment.objects.filter(provider=provider).filter(
            Q(reference__in=references) | Q(provider_reference__in=references)
        )
        keys = ("reference", "provider_reference")
    elif kind == REFUND:
        rows = ProviderRefund.objects.filter(provider=provider).filter(
            Q(provider_refund_id__in=references) | Q(refund_reference__in=references)
        )
        keys = ("provider_refund_id", "refund_reference")
    else:
        rows = Withdrawal.objects.filter(payout_method=provider).filter(
            Q(transfer_reference__in=references) | Q(provider_transfer_id__in=references)
        )
        keys = ("transfer_reference", "provider_transfer_id")
    found = {}
    for record in rows:
        for key in keys:
            value = getattr(record, key)
            if value:
                found.setdefault(value, record)
    return found


def moved_money(kind: str, record) -> bool:
    """Whether the ledger moved this record's money (a refund posts when it is made)."""
    if kind == PAYMENT:
        return record.ledger_transaction_id is not None
    if kind == PAYOUT:
        return record.status in PAYOUT_SENT
    return True


def line_for_row(provider: str, row: ReportRow, record) -> ReconciliationLine:
    line = ReconciliationLine(
        provider=provider,
        day=row.day,
        kind=row.kind,
        provider_reference=row.reference[:100],
        amount=row.amount,
        currency=row.currency,
        provider_status=row.status[:40],
        raw={"line": row.line, **row.raw},
    )
    if record is None:
        line.state = State.MISSING_IN_LEDGER
        return line
    setattr(line, RECORD_FIELD[row.kind], record)
    line.ledger_amount, line.ledger_currency = record.amount, record.currency
    if not moved_money(row.kind, record):
        line.state = State.MISSING_IN_LEDGER
    elif record.amount == row.amount and record.currency == row.currency:
        line.state = State.MATCHED
    else:
        line.state = State.DIFFERS
    return line


def match_rows(provider: str, rows: Iterable[ReportRow]) -> list[ReconciliationLine]:
    """One unsaved line per row, matched against the ledger (a query per kind, whatever the rows)."""
    rows = list(rows)
    found = {
        kind: records_by_reference(provider, kind, {ref for row in rows if row.kind == kind for ref in row.references})
        for kind in (PAYMENT, REFUND, PAYOUT)
    }
    lines = []
    for row in rows:
        record = next((found[row.kind][ref] for ref in row.references if ref in found[row.kind]), None)
        lines.append(line_for_row(provider, row, record))
    return lines


def ledger_records(provider: str, kind: str, first_day: date, last_day: date) -> list[tuple[date, object]]:
    """The provider's records of `kind` whose money the ledger moved on the days, each with its day."""
    start, end = day_bounds(first_day, last_day)
    if kind == PAYMENT:
        rows = Payment.objects.filter(
            provider=provider, ledger_transaction__created_at__gte=start, ledger_transaction__created_at__lt=end
        ).select_related("ledger_transaction")
        return [(p.ledger_transaction.created_at.astimezone(UTC).date(), p) for p in rows]
    if kind == REFUND:
        rows = ProviderRefund.objects.filter(
            provider=provider, status__in=REFUND_SENT, sent_at__gte=start, sent_at__lt=end
        )
        return [(r.sent_at.astimezone(UTC).date(), r) for r in rows]
    rows = Withdrawal.objects.filter(
        payout_method=provider, status__in=PAYOUT_SENT, payout_sent_at__gte=start, payout_sent_at__lt=end
    )
    return [(w.payout_sent_at.astimezone(UTC).date(), w) for w in rows]


def our_reference(kind: str, record) -> str:
    if kind == PAYMENT:
        return record.reference
    if kind == REFUND:
        return record.refund_reference
    return record.transfer_reference or record.reference


def missing_at_provider(
    provider: str, kinds: Iterable[str], first_day: date, last_day: date, lines: list[ReconciliationLine]
) -> list[ReconciliationLine]:
    """Unsaved lines for the ledger's records of the days and kinds that neither `lines` nor
    another report's line (other than a "missing at the provider" one) names."""
    missing = []
    for kind in kinds:
        field = RECORD_FIELD[kind]
        named = {getattr(line, f"{field}_id") for line in lines if getattr(line, f"{field}_id")}
        records = [(day, record) for day, record in ledger_records(provider, kind, first_day, last_day)]
        elsewhere = set(
            ReconciliationLine.objects.filter(**{f"{field}__in": [record.pk for _, record in records]})
            .exclude(state=State.MISSING_AT_PROVIDER)
            .values_list(f"{field}_id", flat=True)
        )
        for day, record in records:
            if record.pk in named or record.pk in elsewhere:
                continue
            missing.append(
                ReconciliationLine(
                    provider=provider,
                    day=day,
                    kind=kind,
                    state=State.MISSING_AT_PROVIDER,
                    provider_reference=our_reference(kind, record)[:100],
                    ledger_amount=record.amount,
                    ledger_currency=record.currency,
                    **{field: record},
                )
            )
    return missing
