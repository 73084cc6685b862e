"""Reconciliation of the ledger against the providers' own reports (issue 18).

A report comes in two ways: finance uploads a provider's CSV (`import_report`), or the periodic
job fetches a day through the provider's API (`fetch.fetch_provider_reports`). Either way its
rows are read by the provider's column mapping (`mappings.MAPPINGS`), matched against the
ledger by provider reference (`matching`), and stored as lines: matched, differs, missing in
the ledger, missing at the provider. Finance resolves each difference with a note
(`resolve_line`, audited); `export_unresolved` gives the open ones as CSV rows.

Reading a report again for days already read replaces those days' lines (of the kinds it
lists): the provider's latest word is what counts. A resolution is kept: a new line for the
same difference (same reference, state and amounts) comes in resolved, with the earlier note;
a resolved difference that no longer appears is gone from the page, and its resolution stays
in the audit log.
"""

import hashlib
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from wagtail.log_actions import log

from finance import permissions
from finance.errors import InvalidStateError, require_reason
from finance.models import Payment, ProviderRefund, ReconciliationLine, ReconciliationReport, Withdrawal
from finance.money import quantum

from .mappings import MAPPINGS, PAYMENT, PAYOUT, REFUND, InvalidReportError, ReportRow
from .matching import PAYOUT_SENT, RECORD_FIELD, REFUND_SENT, match_rows, missing_at_provider

__all__ = [
    "MAPPINGS",
    "EXPORT_COLUMNS",
    "InvalidReportError",
    "import_report",
    "resolve_line",
    "day_summaries",
    "export_unresolved",
    "last_reconciled_days",
    "unreconciled_days",
    "RECONCILED_PROVIDERS",
]

State = ReconciliationLine.State
# Providers whose reports are reconciled (the sandbox has no reports: it is offline).
RECONCILED_PROVIDERS = tuple(MAPPINGS)
# How far back unreconciled_days looks for days with ledger activity and no report. Older days
# are out of the metric: the alert has long fired for them by then.
LOOKBACK_DAYS = 90

IMPORT_ACTION = "stayafrica.reconciliation.import"
RESOLVE_ACTION = "stayafrica.reconciliation.resolve"


# --- reading a report -------------------------------------------------------------------------


def import_report(*, provider: str, file_name: str, content: bytes, actor) -> ReconciliationReport:
    """Read a provider's CSV report (its column mapping: MAPPINGS), match each line against the
    ledger by provider reference, add the ledger's records of the covered days the report lacks
    ("missing at the provider"), audit the upload, and return the report.

    Refuses a file it cannot read with InvalidReportError (400, nothing stored), and an actor
    without finance.reconcile with PermissionDeniedError. The same file again (by its SHA-256)
    is not read twice: the first report is returned, with `duplicate = True` set on it."""
    permissions.require(actor, permissions.RECONCILE)
    mapping = MAPPINGS.get(provider)
    if mapping is None:
        raise InvalidReportError(f"There is no report mapping for provider {provider!r}.", field="provider")
    checksum = hashlib.sha256(content).hexdigest()
    earlier = ReconciliationReport.objects.filter(provider=provider, checksum=checksum).first()
    if earlier is not None:
        earlier.duplicate = True
        return earlier
    rows = mapping.read(content)
    if not rows:
        raise InvalidReportError(
            f"The file has no settled {', '.join(mapping.kinds)} lines to match: is it the {mapping.title}?"
        )
    return store_report(
        provider=provider,
        source=ReconciliationReport.Source.UPLOAD,
        rows=rows,
        first_day=min(row.day for row in rows),
        last_day=max(row.day for row in rows),
        kinds=mapping.kinds,
        file_name=file_name,
        checksum=checksum,
        actor=actor,
    )


def store_report(
    *,
    provider: str,
    source: str,
    rows: list[ReportRow],
    first_day: date,
    last_day: date,
    kinds: tuple[str, ...],
    file_name: str = "",
    checksum: str = "",
    actor=None,
) -> ReconciliationReport:
    """Match `rows` (read from a file or an API answer) and store the report with its lines, in
    one transaction, audited. Reports of one provider are stored one at a time (a lock per
    provider), so two uploads of overlapping days cannot interleave their replacements."""
    with transaction.atomic():
        _lock_provider(provider)
        if checksum:
            earlier = ReconciliationReport.objects.filter(provider=provider, checksum=checksum).first()
            if earlier is not None:  # the same file, uploaded at the same moment by someone else
                earlier.duplicate = True
                return earlier
        resolutions = _remove_lines_of(provider, kinds, first_day, last_day)
        report = ReconciliationReport.objects.create(
            provider=provider,
            source=source,
            file_name=file_name[:255],
            first_day=first_day,
            last_day=last_day,
            uploaded_by=actor if getattr(actor, "pk", None) else None,
            checksum=checksum,
        )
        lines = match_rows(provider, rows)
        lines += missing_at_provider(provider, kinds, first_day, last_day, lines)
        for line in lines:
            line.report = report
            _carry_resolution(line, resolutions)
        ReconciliationLine.objects.bulk_create(lines)
        _clear_found_elsewhere(provider, lines)
        report.line_count = len(lines)
        report.save(update_fields=["line_count"])
        counts = {state: sum(1 for line in lines if line.state == state) for state in State.values}
        log(
            report,
            IMPORT_ACTION,
            user=actor if getattr(actor, "pk", None) else None,
            title=str(report),
            data={
                "provider": provider,
                "source": source,
                "file_name": file_name,
                "first_day": first_day.isoformat(),
                "last_day": last_day.isoformat(),
                "lines": len(lines),
                **counts,
            },
        )
    report.duplicate = False
    return report


def _lock_provider(provider: str) -> None:
    """Serialise imports of one provider's reports (PostgreSQL: a transaction-scoped advisory
    lock). SQLite, make run's embedded default, lets one writer in at a time anyway."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"reconciliation:{provider}"])


def _difference_key(line: ReconciliationLine) -> tuple:
    return (line.kind, line.provider_reference, line.state, line.amount, line.currency, line.ledger_amount)


def _remove_lines_of(provider: str, kinds, first_day: date, last_day: date) -> dict[tuple, ReconciliationLine]:
    """Delete the earlier lines of these days and kinds (the new report replaces them); return
    their resolutions by difference, to carry onto the same differences found again."""
    earlier = ReconciliationLine.objects.filter(
        provider=provider, kind__in=kinds, day__gte=first_day, day__lte=last_day
    ).select_for_update()
    resolutions = {_difference_key(line): line for line in earlier if line.resolved_at is not None}
    earlier.delete()
    return resolutions


def _carry_resolution(line: ReconciliationLine, resolutions: dict) -> None:
    resolved = resolutions.get(_difference_key(line))
    if resolved is not None and line.state != State.MATCHED:
        line.resolved_at, line.resolved_by_id = resolved.resolved_at, resolved.resolved_by_id
        line.resolution_note = resolved.resolution_note


def _clear_found_elsewhere(provider: str, lines: list[ReconciliationLine]) -> None:
    """A record this report found was "missing at the provider" on another day's report (the
    provider listed it on the next or previous day): that open line is answered, so it goes."""
    for kind, field in RECORD_FIELD.items():
        found = [
            getattr(line, f"{field}_id")
            for line in lines
            if line.kind == kind and line.state != State.MISSING_AT_PROVIDER and getattr(line, f"{field}_id")
        ]
        if found:
            ReconciliationLine.objects.filter(
                provider=provider, state=State.MISSING_AT_PROVIDER, resolved_at__isnull=True, **{f"{field}__in": found}
            ).delete()


# --- resolving --------------------------------------------------------------------------------


def clean_resolution_note(note: str | None) -> str:
    return require_reason(note, "Say how the difference was resolved; the note goes in the audit log.", field="note")


def resolve_line(*, line: ReconciliationLine, note: str, actor) -> ReconciliationLine:
    """Mark a difference resolved with the staff member's note (required), audited, in one
    transaction. A matched line, or one already resolved, is refused (InvalidStateError, 409)."""
    permissions.require(actor, permissions.RECONCILE)
    note = clean_resolution_note(note)
    with transaction.atomic():
        locked = ReconciliationLine.objects.select_for_update().filter(pk=line.pk).first()
        if locked is None:
            raise InvalidStateError("This line is gone: a newer report for its day replaced it.")
        if locked.state == State.MATCHED:
            raise InvalidStateError("A matched line has nothing to resolve.")
        if locked.resolved_at is not None:
            who = locked.resolved_by.get_username() if locked.resolved_by else "someone"
            raise InvalidStateError(f"This difference was already resolved by {who}.")
        locked.resolved_at = timezone.now()
        locked.resolved_by = actor
        locked.resolution_note = note
        locked.save(update_fields=["resolved_at", "resolved_by", "resolution_note"])
        log(
            locked,
            RESOLVE_ACTION,
            user=actor,
            title=str(locked),
            data={
                "provider": locked.provider,
                "day": locked.day.isoformat(),
                "kind": locked.kind,
                "reference": locked.provider_reference,
                "state": locked.state,
                "amount": _money_text(locked.amount, locked.currency),
                "currency": locked.currency,
                "ledger_amount": _money_text(locked.ledger_amount, locked.ledger_currency),
                "ledger_currency": locked.ledger_currency,
                "note": note,
            },
        )
    return locked


def _money_text(amount: Decimal | None, currency: str) -> str:
    if amount is None:
        return ""
    try:
        return str(amount.quantize(quantum(currency)))
    except Exception:  # a currency the ledger does not know (a provider's odd row): as stored
        return str(amount)


# --- reading the lines ------------------------------------------------------------------------


def _lines(provider: str = "", first_day: date | None = None, last_day: date | None = None):
    lines = ReconciliationLine.objects.all()
    if provider:
        lines = lines.filter(provider=provider)
    if first_day:
        lines = lines.filter(day__gte=first_day)
    if last_day:
        lines = lines.filter(day__lte=last_day)
    return lines


def day_summaries(*, provider: str = "", first_day: date | None = None, last_day: date | None = None) -> list[dict]:
    """Per provider and day, newest day first: how many lines, the count and the totals of each
    state (totals per currency: the provider's amount, or the ledger's for "missing at the
    provider"), and how many differences are still unresolved.

    [{"provider": "paystack", "day": date, "lines": 12, "unresolved": 2,
      "counts": {"matched": 10, "differs": 1, "missing_in_ledger": 0, "missing_at_provider": 1},
      "totals": {"matched": {"NGN": Decimal("45000.00")}, "differs": {...}, ...}}, ...]"""
    summaries: dict[tuple, dict] = {}
    rows = (
        _lines(provider, first_day, last_day)
        .values("provider", "day", "state", "currency", "ledger_currency")
        .annotate(
            count=Count("id"),
            unresolved=Count("id", filter=Q(resolved_at__isnull=True) & ~Q(state=State.MATCHED)),
            amount=Sum("amount"),
            ledger_amount=Sum("ledger_amount"),
        )
        .order_by()
    )
    for row in rows:
        key = (row["provider"], row["day"])
        summary = summaries.setdefault(
            key,
            {
                "provider": row["provider"],
                "day": row["day"],
                "lines": 0,
                "unresolved": 0,
                "counts": dict.fromkeys(State.values, 0),
                "totals": {state: {} for state in State.values},
            },
        )
        state = row["state"]
        summary["lines"] += row["count"]
        summary["unresolved"] += row["unresolved"]
        summary["counts"][state] += row["count"]
        if state == State.MISSING_AT_PROVIDER:
            currency, amount = row["ledger_currency"], row["ledger_amount"]
        else:
            currency, amount = row["currency"], row["amount"]
        if currency and amount is not None:
            totals = summary["totals"][state]
            totals[currency] = totals.get(currency, Decimal(0)) + amount
    return sorted(summaries.values(), key=lambda s: (-s["day"].toordinal(), s["provider"]))


# The columns of the unresolved-lines CSV, in order.
EXPORT_COLUMNS = (
    "provider",
    "day",
    "kind",
    "reference",
    "state",
    "provider_amount",
    "provider_currency",
    "provider_status",
    "ledger_amount",
    "ledger_currency",
    "ledger_record",
    "report",
)


def export_unresolved(*, provider: str = "", first_day: date | None = None, last_day: date | None = None) -> list[dict]:
    """The unresolved differences, oldest day first, as rows for a CSV (keys: EXPORT_COLUMNS;
    amounts as text at the currency's precision, blank where that side has none)."""
    lines = (
        _lines(provider, first_day, last_day)
        .filter(state__in=ReconciliationLine.UNRESOLVED_STATES, resolved_at__isnull=True)
        .select_related("payment", "refund", "withdrawal")
        .order_by("day", "provider", "id")
    )
    return [
        {
            "provider": line.provider,
            "day": line.day.isoformat(),
            "kind": line.kind,
            "reference": line.provider_reference,
            "state": line.get_state_display(),
            "provider_amount": _money_text(line.amount, line.currency),
            "provider_currency": line.currency,
            "provider_status": line.provider_status,
            "ledger_amount": _money_text(line.ledger_amount, line.ledger_currency),
            "ledger_currency": line.ledger_currency,
            "ledger_record": _ledger_record(line),
            "report": line.report_id,
        }
        for line in lines
    ]


def _ledger_record(line: ReconciliationLine) -> str:
    """Our own reference of the record the line matched (what staff look up in the portal)."""
    if line.payment_id:
        return line.payment.reference
    if line.refund_id:
        return line.refund.refund_reference
    if line.withdrawal_id:
        return line.withdrawal.reference
    return ""


def unresolved_counts() -> dict[str, int]:
    """Unresolved differences per provider (the metric, and the dashboard's count)."""
    rows = (
        ReconciliationLine.objects.filter(state__in=ReconciliationLine.UNRESOLVED_STATES, resolved_at__isnull=True)
        .order_by()
        .values("provider")
        .annotate(count=Count("id"))
    )
    return {row["provider"]: row["count"] for row in rows}


def last_reconciled_days() -> dict[str, date]:
    """Per provider: the last day a report covered (providers without a report are absent)."""
    rows = ReconciliationReport.objects.order_by().values("provider").annotate(last=Max("last_day"))
    return {row["provider"]: row["last"] for row in rows}


def unreconciled_days(now: datetime | None = None) -> dict[str, list[date]]:
    """Per reconciled provider: the days (oldest first, within LOOKBACK_DAYS) that ended more
    than RECONCILIATION_GRACE_HOURS before `now`, had ledger activity for that provider (a
    payment applied, a refund sent, a payout sent) and that no report covers. Every provider in
    RECONCILED_PROVIDERS is a key, with [] when all is reconciled."""
    now = now or timezone.now()
    cutoff = now - timedelta(hours=settings.RECONCILIATION_GRACE_HOURS)
    # The last day that ended before the cutoff (a day ends at the next midnight, UTC), and
    # the first the look-back reaches.
    cutoff = cutoff.astimezone(UTC)
    last = cutoff.date() - timedelta(days=1 if cutoff.time() > time.min else 2)
    first = last - timedelta(days=LOOKBACK_DAYS - 1)
    active = _activity_days(first, last)
    covered = _covered_days(first, last)
    return {
        provider: sorted(active.get(provider, set()) - covered.get(provider, set()))
        for provider in RECONCILED_PROVIDERS
    }


def _activity_days(first: date, last: date) -> dict[str, set[date]]:
    start = datetime.combine(first, time.min, tzinfo=UTC)
    end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
    days: dict[str, set[date]] = defaultdict(set)
    sources = (
        (
            PAYMENT,
            Payment.objects.filter(ledger_transaction__isnull=False),
            "provider",
            "ledger_transaction__created_at",
        ),
        (REFUND, ProviderRefund.objects.filter(status__in=REFUND_SENT), "provider", "sent_at"),
        (PAYOUT, Withdrawal.objects.filter(status__in=PAYOUT_SENT), "payout_method", "payout_sent_at"),
    )
    for kind, queryset, provider_field, moment in sources:
        # Only the kinds of record the provider's report lists: a day when Paystack only sent a
        # refund can never be covered by its (payments-only) report, so it is not waited for.
        providers = [name for name in RECONCILED_PROVIDERS if kind in MAPPINGS[name].kinds]
        rows = (
            queryset.filter(**{f"{provider_field}__in": providers, f"{moment}__gte": start, f"{moment}__lt": end})
            .annotate(day=TruncDate(moment, tzinfo=UTC))
            .order_by()
            .values_list(provider_field, "day")
            .distinct()
        )
        for provider, day in rows:
            days[provider].add(day)
    return days


def _covered_days(first: date, last: date) -> dict[str, set[date]]:
    covered: dict[str, set[date]] = defaultdict(set)
    reports = ReconciliationReport.objects.filter(first_day__lte=last, last_day__gte=first).values_list(
        "provider", "first_day", "last_day"
    )
    for provider, report_first, report_last in reports:
        day = max(report_first, first)
        while day <= min(report_last, last):
            covered[provider].add(day)
            day += timedelta(days=1)
    return covered
