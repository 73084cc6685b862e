"""Reconciliation of the ledger against the providers' own reports.

(Issue 18; the matching engine lands here. The prep commit only fixes the names the portal calls.)
"""

from datetime import date

from .models import ReconciliationLine, ReconciliationReport


def import_report(*, provider: str, file_name: str, content: bytes, actor) -> ReconciliationReport:
    """Read a provider's CSV report (its column mapping: finance.reconciliation's MAPPINGS),
    match each line against the ledger by provider reference, add the ledger's records of the
    covered days the report lacks ("missing at the provider"), audit the upload, and return
    the report. Refuses a file it cannot read with InvalidReportError (a 4xx, nothing stored)."""
    raise NotImplementedError


def resolve_line(*, line: ReconciliationLine, note: str, actor) -> ReconciliationLine:
    """Mark a difference resolved with the staff member's note (required), audited."""
    raise NotImplementedError


def day_summaries(*, provider: str = "", first_day: date | None = None, last_day: date | None = None) -> list[dict]:
    """Per provider and day: counts and totals of each state, unresolved count."""
    raise NotImplementedError
