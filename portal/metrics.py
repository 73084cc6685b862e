"""Prometheus metrics of the portal: request latency and responses by view, and the exposition
GET /metrics serves (portal/views/metrics.py).

Under gunicorn every worker is a process of its own, so counts live in prometheus-client's
multiprocess mode: with PROMETHEUS_MULTIPROC_DIR set (deploy/gunicorn.conf.py makes one per
gunicorn start when the launcher has not), each worker writes its counters to its own file
there, and a scrape, whichever worker answers it, sums every file. Without it (runserver,
tests in one process) they live in this process's default registry.

The gauges that describe the deployment rather than a process (the withdrawal queue, jobs,
the last ledger check, readiness) are read from the database at scrape time by
DeploymentCollector, so every worker of every app server answers the same.
"""

import time
from datetime import UTC, datetime

from django.conf import settings
from django.db.models import Count, Min
from django.urls import Resolver404, resolve
from django.utils import timezone
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from finance import metrics as finance_metrics
from finance import reconciliation
from finance.models import Withdrawal
from finance.payouts import MANUAL
from finance.providers import is_enabled
from finance.tasks import LEDGER_CHECK
from jobs import selectors as job_selectors

from . import health

# No `_created` series next to each counter: multiprocess mode cannot report them, and the
# exposition stays the same whichever mode produced it.
disable_created_metrics()

REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from the request reaching Django to its response, by view and method.",
    ["view", "method"],
)
RESPONSES = Counter(
    "http_responses_total",
    "Responses by view, method and status code.",
    ["view", "method", "status"],
)

# Any other method is "other": a label value must never be whatever a client sends.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
STATIC = "static"


def view_label(request) -> str:
    """The URL pattern's name (or the view's dotted path) that served the request, never the
    raw path: a path is unbounded, a label must not be. A request answered before URL
    resolution (an HTTPS redirect) is resolved here; static files are "static"; a path that
    resolves to nothing is "unmatched"."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        if request.path_info.startswith(settings.STATIC_URL):
            return STATIC
        try:
            match = resolve(request.path_info, getattr(request, "urlconf", None))
        except Resolver404:
            return UNMATCHED
    return match.view_name


def method_label(method: str | None) -> str:
    return method if method in KNOWN_METHODS else "other"


class RequestMetricsMiddleware:
    """Times each request through everything after it, and counts its response, by view.

    First in MIDDLEWARE, so the time includes the other middleware (sessions, CSRF, axes).
    The view is known only once the URL resolved, hence labelled after the response. A
    streaming response (CSV export) is timed until its first byte is ready, not its last."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        view, method = view_label(request), method_label(request.method)
        REQUEST_DURATION.labels(view=view, method=method).observe(time.perf_counter() - started)
        RESPONSES.labels(view=view, method=method, status=str(response.status_code)).inc()
        return response


class DeploymentCollector:
    """Gauges read from the database (and the readiness checks) at each scrape.

    A handful of aggregate queries, run with the readiness checks in the health-check pool and
    bounded by its timeout: a database that does not answer leaves portal_ready at 0 and the
    database's gauges out of the scrape, instead of a scrape that hangs."""

    def collect(self):
        required = {check.name: check.probe for check in health.REQUIRED}
        results = health.run_bounded({**required, "gauges": read_gauges})
        gauges = results.pop("gauges")
        ready = all(state == health.OK for state in results.values())
        yield GaugeMetricFamily(
            "portal_ready", "1 when the database, the cache and the migrations are ready (/health/ready/).", int(ready)
        )
        if not isinstance(gauges, health.Failed):
            yield from gauges


def payouts_in_flight() -> dict[str, tuple[int, datetime | None]]:
    """Payouts a provider is moving (processing, sent by a provider, not manual), by provider:
    how many, and when the oldest was sent. One aggregate on the (status, payout_sent_at)
    index; the dashboard's card reads it too."""
    rows = (
        Withdrawal.objects.filter(status=Withdrawal.Status.PROCESSING)
        .exclude(payout_method__in=("", MANUAL))
        .order_by()
        .values("payout_method")
        .annotate(count=Count("id"), oldest=Min("payout_sent_at"))
    )
    return {row["payout_method"]: (row["count"], row["oldest"]) for row in rows}


def payout_gauges(now: datetime) -> list:
    """payouts_processing{provider}, payout_oldest_processing_age_seconds{provider}
    and the threshold the PayoutStuckProcessing alert compares the age with. Every provider a
    payout route can use is there at 0 when it moves nothing, so a scrape always has the series."""
    in_flight = payouts_in_flight()
    routed = {name for name in settings.PAYOUT_ROUTES.values() if is_enabled(name)}
    if settings.SANDBOX_PAYMENTS_ENABLED:
        routed.add("sandbox")
    processing = GaugeMetricFamily(
        "payouts_processing",
        "Payouts sent to a provider and waiting for its confirmation, by provider.",
        labels=["provider"],
    )
    oldest_age = GaugeMetricFamily(
        "payout_oldest_processing_age_seconds",
        "Seconds since the oldest payout still processing was sent to the provider; 0 when none is.",
        labels=["provider"],
    )
    for provider in sorted(routed | set(in_flight)):
        count, oldest = in_flight.get(provider, (0, None))
        processing.add_metric([provider], count)
        oldest_age.add_metric([provider], max((now - oldest).total_seconds(), 0.0) if oldest else 0.0)
    stuck_after = GaugeMetricFamily(
        "payout_stuck_after_seconds",
        "How long a payout may stay processing before it counts as stuck (PAYOUT_STUCK_AFTER_MINUTES).",
        settings.PAYOUT_STUCK_AFTER_MINUTES * 60,
    )
    return [processing, oldest_age, stuck_after]


def reconciliation_gauges(now: datetime) -> list:
    """reconciliation_unreconciled_day_backlog{provider}, reconciliation_unresolved_lines{provider} and
    reconciliation_last_reconciled_day_timestamp{provider} (the start of the last day a report
    covered, UTC; 0 when none has). Every reconciled provider that is enabled, or has lines, is
    there, at 0 when all is well, so a scrape always has the series the alert reads."""
    unreconciled = reconciliation.unreconciled_days(now)
    unresolved = reconciliation.unresolved_counts()
    last_days = reconciliation.last_reconciled_days()
    providers = {name for name in reconciliation.RECONCILED_PROVIDERS if is_enabled(name)}
    providers |= {name for name, days in unreconciled.items() if days} | set(unresolved) | set(last_days)
    days = GaugeMetricFamily(
        "reconciliation_unreconciled_day_backlog",
        "Days with ledger activity for the provider, ended more than RECONCILIATION_GRACE_HOURS ago, no report read.",
        labels=["provider"],
    )
    lines = GaugeMetricFamily(
        "reconciliation_unresolved_lines",
        "Reconciliation differences (differs, missing in the ledger or at the provider) not yet resolved.",
        labels=["provider"],
    )
    last = GaugeMetricFamily(
        "reconciliation_last_reconciled_day_timestamp",
        "Unix time of the start (UTC) of the last day a provider report covered; 0 if none has.",
        labels=["provider"],
    )
    for provider in sorted(providers):
        days.add_metric([provider], len(unreconciled.get(provider, [])))
        lines.add_metric([provider], unresolved.get(provider, 0))
        day = last_days.get(provider)
        last.add_metric([provider], datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() if day else 0)
    return [days, lines, last]


def refund_gauges(now: datetime) -> list:
    """refunds_open{provider,status} and refund_oldest_open_age_seconds{provider}: refunds owed
    to guests and not yet paid (queued, processing at the provider, failed)."""
    open_refunds = finance_metrics.open_refunds()
    count = GaugeMetricFamily(
        "refunds_open", "Refunds not yet paid to the guest, by provider and status.", labels=["provider", "status"]
    )
    oldest_age = GaugeMetricFamily(
        "refund_oldest_open_age_seconds",
        "Seconds since the oldest refund not yet paid to the guest was made, by provider; 0 when none is.",
        labels=["provider"],
    )
    oldest_by_provider: dict[str, datetime] = {}
    for (provider, status), (number, oldest) in sorted(open_refunds.items()):
        count.add_metric([provider, status], number)
        if oldest and (provider not in oldest_by_provider or oldest < oldest_by_provider[provider]):
            oldest_by_provider[provider] = oldest
    for provider, oldest in sorted(oldest_by_provider.items()):
        oldest_age.add_metric([provider], max((now - oldest).total_seconds(), 0.0))
    return [count, oldest_age]


def read_gauges() -> list:
    """The deployment's state, as metric families (built here, in the pool thread)."""
    count, oldest = finance_metrics.open_withdrawals()
    now = timezone.now()
    oldest_age = (now - oldest).total_seconds() if oldest else 0.0
    check = job_selectors.last_check(LEDGER_CHECK)
    return [
        *payout_gauges(now),
        *reconciliation_gauges(now),
        *refund_gauges(now),
        GaugeMetricFamily("withdrawals_pending", "Withdrawals waiting to be paid out (pending or processing).", count),
        GaugeMetricFamily(
            "withdrawals_pending_oldest_age_seconds",
            "Age of the oldest withdrawal waiting to be paid out; 0 when none waits.",
            max(oldest_age, 0.0),
        ),
        GaugeMetricFamily(
            "approvals_pending",
            "Money actions waiting for a second finance approver.",
            finance_metrics.pending_approvals(),
        ),
        GaugeMetricFamily(
            "jobs_queue_depth", "Background jobs ready to run and not yet taken.", job_selectors.queue_depth()
        ),
        CounterMetricFamily(
            "jobs_failed_total",
            "Background jobs that failed for good (until staff retry them).",
            job_selectors.count_failed(),
        ),
        GaugeMetricFamily(
            "ledger_check_ok",
            "1 when the last periodic ledger check passed; 0 when it failed or has never run.",
            int(bool(check and check.ok)),
        ),
        GaugeMetricFamily(
            "ledger_check_last_run_timestamp_seconds",
            "Unix time of the last periodic ledger check; 0 if it has never run.",
            check.ran_at.timestamp() if check else 0,
        ),
    ]


def scrape_registry() -> CollectorRegistry:
    """A registry for one scrape: every worker's counters (or this process's), and the gauges."""
    registry = CollectorRegistry()
    if settings.PROMETHEUS_MULTIPROC_DIR:
        MultiProcessCollector(registry, path=settings.PROMETHEUS_MULTIPROC_DIR)
    else:
        registry.register(REGISTRY)
    registry.register(DeploymentCollector())
    return registry


def exposition() -> bytes:
    return generate_latest(scrape_registry())
