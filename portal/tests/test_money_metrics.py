"""The refunds' and the reconciliation's gauges on /metrics (finance's own tests may not import the
portal: portal/tests/test_layout.py), with the fixtures of the finance tests they extend."""

# The imported fixtures are named again as the tests' parameters, which is how pytest passes them.
# ruff: noqa: F811

from datetime import UTC, datetime, time

from django.utils import timezone

from finance.tests.test_reconciliation_fetch import DAY, keys  # noqa: F401 (fixture)
from finance.tests.test_refunds import (  # noqa: F401 (fixtures)
    _settings,
    bank_booking,
    failed_refund,
    refund,
    testbank,
)
from portal.metrics import refund_gauges
from portal.tests.test_metrics import TOKEN, scrape, value


def test_open_refunds_are_gauged_by_provider_and_status(paid_booking, failed_refund):
    refund(paid_booking)
    families = {family.name: family for family in refund_gauges(timezone.now())}
    counts = {tuple(s.labels.values()): s.value for s in families["refunds_open"].samples}
    assert counts == {("manual", "queued"): 1, ("testbank", "failed"): 1}  # the sandbox is off here
    ages = {s.labels["provider"]: s.value for s in families["refund_oldest_open_age_seconds"].samples}
    assert set(ages) == {"manual", "testbank"} and all(age >= 0 for age in ages.values())


def test_reconciliation_gauges_on_metrics(client, transactional_db, keys, settings, finance_user):
    from finance.reconciliation import import_report
    from testing.recorded_http import recorded

    settings.METRICS_TOKEN = TOKEN
    empty = scrape(client)
    assert value(empty, "reconciliation_unreconciled_day_backlog", provider="paystack") == 0
    assert ("reconciliation_unresolved_lines", (("provider", "mpesa"),)) in empty
    import_report(
        provider="paystack",
        file_name="p.csv",
        content=recorded("reports/paystack_transactions.csv"),
        actor=finance_user,
    )
    samples = scrape(client)
    assert value(samples, "reconciliation_unresolved_lines", provider="paystack") == 3
    day_start = datetime.combine(DAY, time.min, tzinfo=UTC).timestamp()
    assert value(samples, "reconciliation_last_reconciled_day_timestamp", provider="paystack") == day_start
    assert value(samples, "reconciliation_last_reconciled_day_timestamp", provider="stripe") == 0
