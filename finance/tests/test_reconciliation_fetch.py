"""The periodic fetch of yesterday's transactions through the providers' APIs (answered from
recorded payloads), and the reconciliation gauges GET /metrics serves."""

from datetime import UTC, date, datetime, time, timedelta

import pytest
from django.utils import timezone

from finance.models import ReconciliationLine, ReconciliationReport
from finance.reconciliation.fetch import fetch_day, fetch_provider_reports
from testing.recorded_http import answer, ok, session_with

State = ReconciliationLine.State
DAY = date(2026, 3, 2)
PAYSTACK = "https://api.paystack.co/transaction"
FLUTTERWAVE = "https://api.flutterwave.com/v3/transactions"
STRIPE = "https://api.stripe.com/v1/balance_transactions"


@pytest.fixture
def keys(settings):
    settings.PAYMENT_PROVIDERS = {"paystack": ["NG"], "flutterwave": ["NG"], "stripe": ["*"], "mpesa": ["KE"]}
    settings.PAYSTACK_API_URL = "https://api.paystack.co"
    settings.FLUTTERWAVE_API_URL = "https://api.flutterwave.com/v3"
    settings.PAYSTACK_SECRET_KEY = "sk_test_paystack"
    settings.FLUTTERWAVE_SECRET_KEY = "FLWSECK_TEST-flutterwave"
    settings.STRIPE_SECRET_KEY = "sk_test_stripe"


def test_paystack_lists_the_days_successful_transactions_and_they_are_reconciled(db, keys):
    session, sent = session_with({("GET", PAYSTACK): ok("paystack_transactions_list.json")})
    report = fetch_day("paystack", DAY, session=session)
    [request] = sent.sent
    assert request.query["from"] == ["2026-03-02T00:00:00Z"] and request.query["to"] == ["2026-03-03T00:00:00Z"]
    assert request.query["status"] == ["success"]
    assert request.headers["Authorization"] == "Bearer sk_test_paystack"
    assert (report.source, report.first_day, report.last_day) == ("api", DAY, DAY)
    assert {line.provider_reference: line.state for line in report.lines.all()} == {
        "PAY-RECON0000000001": State.MISSING_IN_LEDGER,
        "PAY-RECON0000000002": State.MISSING_IN_LEDGER,
    }
    assert str(report.lines.get(provider_reference="PAY-RECON0000000002").amount) == "1200.0000"


def test_flutterwave_lists_the_days_transactions_in_major_units(db, keys):
    session, sent = session_with({("GET", FLUTTERWAVE): ok("flutterwave_transactions_list.json")})
    report = fetch_day("flutterwave", DAY, session=session)
    assert sent.sent[0].query["from"] == sent.sent[0].query["to"] == ["2026-03-02"]
    [line] = report.lines.all()
    assert (line.provider_reference, str(line.amount), line.currency) == ("PAY-RECON0000000011", "1000.0000", "NGN")


def test_stripe_lists_balance_transactions_created_that_day_charges_and_refunds_only(db, keys):
    session, sent = session_with({("GET", STRIPE): ok("stripe_balance_transactions_list.json")})
    report = fetch_day("stripe", DAY, session=session)
    query = sent.sent[0].query
    start = int(datetime.combine(DAY, time.min, tzinfo=UTC).timestamp())
    assert query["created[gte]"] == [str(start)] and query["created[lt]"] == [str(start + 86400)]
    assert query["expand[]"] == ["data.source"] and sent.sent[0].headers["Authorization"].startswith("Basic ")
    assert sorted((line.kind, line.provider_reference, str(line.amount)) for line in report.lines.all()) == [
        ("payment", "pi_3RecOn0000000001", "45.0000"),
        ("refund", "re_3RecOn0000000002", "20.0000"),
    ]


def test_a_provider_that_fails_stores_nothing(db, keys):
    session, _ = session_with({("GET", PAYSTACK): answer(500, {"status": False, "message": "Server error"})})
    from finance.providers.base import ProviderUnavailableError

    with pytest.raises(ProviderUnavailableError):
        fetch_day("paystack", DAY, session=session)
    assert not ReconciliationReport.objects.exists()


def test_the_periodic_job_fetches_yesterday_once_for_each_provider_with_a_key(db, keys, settings, provider_http):
    settings.STRIPE_SECRET_KEY = ""  # no key: not asked
    provider_http.answers[("GET", PAYSTACK)] = ok("paystack_transactions_list.json")
    provider_http.answers[("GET", FLUTTERWAVE)] = answer(503, {"status": "error", "message": "down"})

    outcome = fetch_provider_reports.call()

    yesterday = timezone.now().astimezone(UTC).date() - timedelta(days=1)
    assert outcome["paystack"] == "0 lines"  # the recorded transactions are of another day
    assert outcome["flutterwave"].startswith("failed")
    assert "stripe" not in outcome and "mpesa" not in outcome
    assert list(ReconciliationReport.objects.values_list("provider", "first_day")) == [("paystack", yesterday)]
    assert fetch_provider_reports.call()["paystack"] == "already reconciled"
