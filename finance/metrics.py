"""What the money domain tells Prometheus: its counters, and the reads of its scrape-time gauges.

The counters are prometheus-client objects. Under gunicorn (PROMETHEUS_MULTIPROC_DIR set
before the process starts) each worker writes them to its own file in that directory, and
the portal's GET /metrics sums the files (portal/metrics.py); without it they live in this
process's default registry.

  ledger_operations_total{operation,outcome}  every TransactionService operation: outcome
      "ok", the refusal's stable code (finance/errors.py), or "error" (anything unexpected).
  webhook_events_total{provider,outcome}      every webhook delivery to an enabled provider:
      "processed" (applied, flagged or ignored: see the inbox), "duplicate", "invalid_signature"
      (answered 401, or 429 once its source failed too often), "rejected" (a malformed body,
      400), "provider_unavailable" (a payment the provider's verify endpoint could not confirm
      because it did not answer: 503, nothing stored, the provider delivers it again) or
      "error" (an unexpected exception, 500).

The gauges (pending withdrawals, approvals) are read from the database at each scrape, so
every process answers alike; the selectors below are those reads.
"""

import logging
from datetime import datetime
from decimal import Decimal

from django.db.models import Count, Min
from prometheus_client import Counter

from .models import ApprovalRequest, ProviderRefund, Withdrawal
from .money import format_money

# The operations' log: one line per money operation, the fields also as `extra` for a
# structured formatter ("credit_wallet ok TXN-... NGN 10.00").
logger = logging.getLogger("finance")

OK = "ok"
ERROR = "error"

LEDGER_OPERATIONS = Counter(
    "ledger_operations_total",
    "TransactionService operations by outcome: ok, the refusal's error code, or error.",
    ["operation", "outcome"],
)
WEBHOOK_EVENTS = Counter(
    "webhook_events_total",
    "Payment provider webhook deliveries by outcome.",
    ["provider", "outcome"],
)


class WebhookOutcome:
    """The `outcome` label of webhook_events_total."""

    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    INVALID_SIGNATURE = "invalid_signature"
    REJECTED = "rejected"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    ERROR = "error"


def record_operation(
    operation: str,
    outcome: str,
    *,
    reference: str = "",
    amount: Decimal | str | None = None,
    currency: str = "",
    message: str = "",
) -> None:
    """Count one TransactionService operation and log it: INFO when ok, WARNING when refused,
    ERROR (with the traceback, from the caller's `except`) when it failed unexpectedly."""
    LEDGER_OPERATIONS.labels(operation=operation, outcome=outcome).inc()
    amount_text = "" if amount is None else str(amount)
    money = _money_text(amount, currency)
    line = " ".join(part for part in (operation, outcome, reference, money) if part)
    extra = {"reference": reference, "amount": amount_text, "operation": operation, "outcome": outcome}
    if outcome == OK:
        logger.info(line, extra=extra)
    elif outcome == ERROR:
        logger.error(line, extra=extra, exc_info=True)
    else:
        logger.warning("%s: %s", line, message, extra=extra)


def _money_text(amount, currency: str) -> str:
    """ "NGN 10.00" for a Decimal amount; a refused call's raw input as it was given."""
    if isinstance(amount, Decimal) and amount.is_finite() and currency:
        try:
            return format_money(amount, currency)
        except Exception:  # a currency the ledger does not know: the refusal says so
            pass
    return " ".join(str(part) for part in (currency, amount) if part not in (None, ""))


def count_webhook(provider: str, outcome: str) -> None:
    WEBHOOK_EVENTS.labels(provider=provider, outcome=outcome).inc()


def start_counters_at_zero(operations: list[str], providers: list[str]) -> None:
    """Expose each operation's ok and error series, and each enabled provider's outcomes, at 0
    from the start. A labelled series otherwise appears only with its first event, at 1, and
    Prometheus' increase() cannot see that first step: the first unexpected error would never
    fire an alert, and a scrape before any event would lack the series the rules read."""
    for operation in operations:
        for outcome in (OK, ERROR):
            LEDGER_OPERATIONS.labels(operation=operation, outcome=outcome)
    outcomes = [value for name, value in vars(WebhookOutcome).items() if not name.startswith("_")]
    for provider in providers:
        for outcome in outcomes:
            WEBHOOK_EVENTS.labels(provider=provider, outcome=outcome)


# --- the scrape-time reads -----------------------------------------------------------------


def open_withdrawals() -> tuple[int, datetime | None]:
    """How many withdrawals wait to be paid out (pending or processing), and the oldest's creation."""
    row = Withdrawal.objects.filter(status__in=Withdrawal.OPEN_STATUSES).aggregate(
        count=Count("id"), oldest=Min("created_at")
    )
    return row["count"], row["oldest"]


def pending_approvals() -> int:
    """Money actions waiting for a second finance approver."""
    return ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING).count()


def open_refunds() -> dict[tuple[str, str], tuple[int, datetime | None]]:
    """Refunds not yet settled (queued, processing, failed), by (provider, status): how many,
    and when the oldest was created. One aggregate on the (status, created_at) index."""
    rows = (
        ProviderRefund.objects.filter(status__in=ProviderRefund.OPEN_STATUSES)
        .order_by()
        .values("provider", "status")
        .annotate(count=Count("id"), oldest=Min("created_at"))
    )
    return {(row["provider"], row["status"]): (row["count"], row["oldest"]) for row in rows}
