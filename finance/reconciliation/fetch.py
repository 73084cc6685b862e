"""The periodic fetch: yesterday's transactions through each provider's API, reconciled.

Where a provider lists its transactions through its API, the job asks for the last whole UTC
day and reconciles the answer as a report (source "api") with the provider's mapping rules:

  paystack     GET /transaction?from=&to=&status=success (https://paystack.com/docs/api/transaction/#list):
               payments, amounts in subunits, paged by meta.pageCount
  flutterwave  GET /transactions?from=&to=&status=successful
               (https://developer.flutterwave.com/v3.0/reference/get-all-transactions): payments,
               amounts in major units, paged by meta.page_info.total_pages
  stripe       GET /v1/balance_transactions?created[gte]=&created[lt]=&expand[]=data.source
               (https://docs.stripe.com/api/balance_transactions/list): charges and refunds,
               amounts in the smallest unit, paged by has_more / starting_after

M-Pesa has no such API: its statement is uploaded. A provider is fetched only when it is
enabled and its secret key is set, and only for a day no report covers yet. The provider's
HTTP runs outside any transaction (through its client class); the answer is then stored in
one transaction like an upload.
"""

import logging
from datetime import UTC, date, datetime, time, timedelta

from django.utils import timezone

from finance.models import ReconciliationReport
from finance.providers import PROVIDERS, is_enabled
from finance.providers.base import ProviderUnavailableError, expect
from jobs.policy import job
from jobs.worker import describe

from . import store_report
from .mappings import MAPPINGS, PAYMENT, STRIPE_KINDS, InvalidReportError, ReportRow, parse_report_amount

logger = logging.getLogger("finance.reconciliation")

# Pages asked for per provider and day before giving up (a day of this marketplace is a few pages).
MAX_PAGES = 50
PER_PAGE = 100


def _rows(provider: str, items: list[dict], read) -> list[ReportRow]:
    """Each item of an API answer read by `read` (a row or None to skip); an item we cannot read
    means the provider's answer is not what its documentation promises: the run fails, nothing stored."""
    rows = []
    for position, item in enumerate(items, start=1):
        try:
            row = read(item, position)
        except (InvalidReportError, KeyError, TypeError, ValueError) as error:
            logger.warning("%s answered an unreadable transaction %s: %s", provider, position, error)
            raise ProviderUnavailableError(f"{provider} answered with a transaction we cannot read.") from None
        if row is not None:
            rows.append(row)
    return rows


def _day_range(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


# --- Paystack ---------------------------------------------------------------------------------


def fetch_paystack(day: date, *, session=None) -> list[ReportRow]:
    client = PROVIDERS["paystack"].client(session)
    start, end = _day_range(day)
    items, page = [], 1
    while page <= MAX_PAGES:
        status, body = client.call(
            "GET",
            "/transaction",
            params={
                "from": start.isoformat().replace("+00:00", "Z"),
                "to": end.isoformat().replace("+00:00", "Z"),
                "status": "success",
                "perPage": PER_PAGE,
                "page": page,
            },
        )
        if status >= 400 or body.get("status") is not True:
            raise client.unavailable(f"answered {status} to GET /transaction", body.get("message", ""))
        items += expect(body, "data")
        if page >= int((body.get("meta") or {}).get("pageCount") or 1):
            break
        page += 1
    mapping = MAPPINGS["paystack"]

    def read(item, position):
        row = mapping.read_row({name: str(item.get(name) or "") for name in ("id", *mapping.required)}, line=position)
        return row if row is not None and row.day == day else None

    return _rows("paystack", items, read)


# --- Flutterwave ------------------------------------------------------------------------------


def fetch_flutterwave(day: date, *, session=None) -> list[ReportRow]:
    client = PROVIDERS["flutterwave"].client(session)
    items, page = [], 1
    while page <= MAX_PAGES:
        status, body = client.call(
            "GET",
            "/transactions",
            params={"from": day.isoformat(), "to": day.isoformat(), "status": "successful", "page": page},
        )
        if status >= 400 or body.get("status") != "success":
            raise client.unavailable(f"answered {status} to GET /transactions", body.get("message", ""))
        items += expect(body, "data")
        pages = ((body.get("meta") or {}).get("page_info") or {}).get("total_pages") or 1
        if page >= int(pages):
            break
        page += 1
    mapping = MAPPINGS["flutterwave"]

    def read(item, position):
        record = {name: str(item.get(name) or "") for name in ("flw_ref", "id", *mapping.required)}
        row = mapping.read_row(record, line=position)
        return row if row is not None and row.day == day else None

    return _rows("flutterwave", items, read)


# --- Stripe -----------------------------------------------------------------------------------


def fetch_stripe(day: date, *, session=None) -> list[ReportRow]:
    client = PROVIDERS["stripe"].client(session)
    start, end = _day_range(day)
    items, after = [], None
    for _ in range(MAX_PAGES):
        params = {
            "created[gte]": int(start.timestamp()),
            "created[lt]": int(end.timestamp()),
            "limit": PER_PAGE,
            "expand[]": "data.source",
        }
        if after:
            params["starting_after"] = after
        body = client.get("/balance_transactions", params=params, auth=(client.secret, ""))
        page = expect(body, "data")
        items += page
        if not body.get("has_more") or not page:
            break
        after = page[-1]["id"]

    def read(item, position):
        kind = STRIPE_KINDS.get(str(item.get("reporting_category") or "").lower())
        if kind is None:
            return None
        currency = str(item["currency"]).upper()
        source = item.get("source") or {}
        if isinstance(source, str):
            source = {"id": source}
        if kind == PAYMENT:
            references = [
                source.get("payment_intent") or "",
                (source.get("metadata") or {}).get("payment_reference", ""),
            ]
        else:
            references = [source.get("id") or ""]
        references = [ref for ref in references if ref]
        if not references:
            raise InvalidReportError(f"balance transaction {item.get('id')} names no payment or refund")
        moment = datetime.fromtimestamp(int(item["created"]), tz=UTC)
        return ReportRow(
            line=position,
            day=moment.date(),
            kind=kind,
            references=tuple(references),
            amount=parse_report_amount(str(item["amount"]), currency, unit="minor"),
            currency=currency,
            status=str(item.get("status") or ""),
            raw={
                "id": item.get("id"),
                "reporting_category": item.get("reporting_category"),
                "source": source.get("id"),
            },
        )

    return _rows("stripe", items, read)


FETCHERS = {"paystack": fetch_paystack, "flutterwave": fetch_flutterwave, "stripe": fetch_stripe}


def can_fetch(provider: str) -> bool:
    """Whether the job may ask `provider`: it has a listing API, it is enabled, its key is set."""
    return provider in FETCHERS and is_enabled(provider) and bool(PROVIDERS[provider].secret())


def is_covered(provider: str, day: date) -> bool:
    return ReconciliationReport.objects.filter(provider=provider, first_day__lte=day, last_day__gte=day).exists()


def fetch_day(provider: str, day: date, *, session=None) -> ReconciliationReport:
    """Fetch `provider`'s transactions of `day` through its API and reconcile them as a report.
    ProviderUnavailableError when the provider does not answer as documented (nothing stored)."""
    if provider not in FETCHERS:
        raise InvalidReportError(f"{provider} has no API that lists its transactions: upload its report.")
    rows = FETCHERS[provider](day, session=session)  # provider HTTP, outside any transaction
    return store_report(
        provider=provider,
        source=ReconciliationReport.Source.API,
        rows=rows,
        first_day=day,
        last_day=day,
        kinds=MAPPINGS[provider].kinds,
        file_name=f"{provider} API {day.isoformat()}",
    )


@job(label="Fetch provider reports", max_attempts=1, keep_result=False)
def fetch_provider_reports() -> dict:
    """Reconcile yesterday (UTC) for each provider the job may ask and no report covers yet.
    One provider down does not stop the others; it is asked again at the next run (hourly)."""
    yesterday = timezone.now().astimezone(UTC).date() - timedelta(days=1)
    outcome = {}
    for provider in FETCHERS:
        if not can_fetch(provider):
            continue
        if is_covered(provider, yesterday):
            outcome[provider] = "already reconciled"
            continue
        try:
            report = fetch_day(provider, yesterday)
        except Exception as error:
            logger.warning("reconciliation: fetching %s for %s failed: %s", provider, yesterday, describe(error))
            outcome[provider] = f"failed: {describe(error)}"
            continue
        outcome[provider] = f"{report.line_count} lines"
    return outcome
