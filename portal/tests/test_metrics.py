"""GET /metrics: what Prometheus reads, asked as Prometheus asks (Bearer METRICS_TOKEN).

In this process the counters live in the default registry; the last tests start the real
production gunicorn (multiprocess mode) and check what its scrapes sum, and that promtool
finds nothing wrong with them. The gauges are read in the health-check threads, with
connections of their own: the rows they must see are committed (`transactional_db`)."""

import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from finance.errors import InsufficientBalanceError
from finance.models import ApprovalRequest, Withdrawal
from finance.services import TransactionService
from finance.tasks import check_ledger
from testing import jobs as test_jobs
from testing.alert_rules import PORTAL_METRICS
from testing.production_secrets import PRODUCTION_SECRETS
from testing.waiting import wait_until
from testing.web_server import Gunicorn, workers_that_served

TOKEN = "a-token-for-prometheus"

# The names the alert rules use (the shared contract), as the exposition names them: a
# histogram by its family name.
CONTRACT = sorted(name.removesuffix("_bucket") for name in PORTAL_METRICS)


@pytest.fixture(autouse=True)
def _token(settings):
    settings.METRICS_TOKEN = TOKEN


def scrape(client) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of one authorised scrape."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content[:500]
    return parse(response.content.decode())


def parse(text: str) -> dict[tuple, float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# --- who may read it ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not-the-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "],
    ids=["none", "wrong token", "other scheme", "longer", "empty"],
)
def test_without_the_token_it_is_a_json_401(client, authorization):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}

    response = client.get("/metrics", **headers)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"ledger_operations" not in response.content


def test_other_methods_get_a_json_405(client):
    response = client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_the_path_is_exactly_metrics_without_a_redirect(client, db):
    assert client.get("/metrics/", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 404


# --- what it says ---------------------------------------------------------------------------


def test_every_metric_of_the_contract_is_there(client, db, funded_wallet):
    client.get("/health/live/")
    APIClient().post("/api/payments/webhooks/paystack/", b"{}", content_type="application/json")

    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "no-cache" in response["Cache-Control"]
    names = {name for name, _ in parse(response.content.decode())}
    families = {family.name for family in text_string_to_metric_families(response.content.decode())}
    missing = [name for name in CONTRACT if name not in names and name not in families]
    assert not missing, missing


def test_requests_are_counted_by_view_method_and_status_never_by_raw_path(client, db):
    before = scrape(client)

    client.get("/health/live/")
    client.post("/health/live/")
    client.get("/wp-login.php")  # resolves to nothing

    after = scrape(client)
    live_ok = {"view": "health_live", "method": "GET", "status": "200"}
    assert value(after, "http_responses_total", **live_ok) == value(before, "http_responses_total", **live_ok) + 1
    refused = {"view": "health_live", "method": "POST", "status": "405"}
    assert value(after, "http_responses_total", **refused) == value(before, "http_responses_total", **refused) + 1
    unmatched = {"view": "unmatched", "method": "GET", "status": "404"}
    assert value(after, "http_responses_total", **unmatched) == value(before, "http_responses_total", **unmatched) + 1
    timed = value(after, "http_request_duration_seconds_count", view="health_live", method="GET")
    assert timed == value(before, "http_request_duration_seconds_count", view="health_live", method="GET") + 1
    assert not any("wp-login" in str(labels) for _, labels in after)


def test_a_refused_debit_shows_under_its_error_code(client, funded_wallet):
    labels = {"operation": "debit_wallet", "outcome": "insufficient_balance"}
    before = value(scrape(client), "ledger_operations_total", **labels)

    with pytest.raises(InsufficientBalanceError):
        TransactionService.debit_wallet(funded_wallet, Decimal("999999.00"))

    assert value(scrape(client), "ledger_operations_total", **labels) == before + 1


def test_a_webhook_with_a_bad_signature_shows_as_invalid_signature(client, db, settings):
    settings.WEBHOOK_FAILED_VERIFICATION_LIMIT = 100
    labels = {"provider": "paystack", "outcome": "invalid_signature"}
    before = value(scrape(client), "webhook_events_total", **labels)

    status = APIClient().generic(
        "POST",
        "/api/payments/webhooks/paystack/",
        b'{"event": "charge.success"}',
        content_type="application/json",
        HTTP_X_PAYSTACK_SIGNATURE="0" * 128,
    )

    assert status.status_code == 401
    assert value(scrape(client), "webhook_events_total", **labels) == before + 1


def test_the_gauges_describe_the_deployment_as_the_database_holds_it(
    client, transactional_db, funded_wallet, bank_account, finance_user
):
    before_check = timezone.now().timestamp()
    empty = scrape(client)
    waiting = TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("2000.00"))
    TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("1000.00"))
    two_hours_ago = timezone.now() - timedelta(hours=2)
    Withdrawal.objects.filter(pk=waiting.pk).update(created_at=two_hours_ago)
    ApprovalRequest.objects.create(
        kind=ApprovalRequest.Kind.WITHDRAWAL,
        requested_by=finance_user,
        amount=waiting.amount,
        currency=waiting.currency,
        withdrawal=waiting,
        idempotency_key="approval-1",
    )
    for _ in range(3):
        test_jobs.tick.enqueue()
    failed = test_jobs.fail_permanently.enqueue()
    test_jobs.run_ready_jobs()  # runs the three ticks and fails the fourth for good
    test_jobs.tick.enqueue()
    check_ledger.call()

    samples = scrape(client)

    assert value(empty, "withdrawals_pending") == 0
    assert value(empty, "withdrawals_pending_oldest_age_seconds") == 0
    assert value(empty, "ledger_check_ok") == 0  # never ran: no evidence the ledger is sound
    assert value(empty, "ledger_check_last_run_timestamp_seconds") == 0
    assert value(samples, "withdrawals_pending") == 2
    assert 2 * 3600 <= value(samples, "withdrawals_pending_oldest_age_seconds") < 2 * 3600 + 120
    assert value(samples, "approvals_pending") == 1
    assert value(samples, "jobs_queue_depth") == 1
    assert value(samples, "jobs_failed_total") == 1, failed
    assert value(samples, "ledger_check_ok") == 1
    assert before_check <= value(samples, "ledger_check_last_run_timestamp_seconds") <= timezone.now().timestamp()
    assert value(samples, "portal_ready") == 1


def test_portal_ready_is_0_while_a_migration_is_pending(client, transactional_db):
    recorder = MigrationRecorder.Migration.objects
    latest = recorder.filter(app="jobs").order_by("-applied").first()
    latest.delete()
    try:
        samples = scrape(client)
    finally:
        recorder.create(app=latest.app, name=latest.name)

    assert value(samples, "portal_ready") == 0
    assert value(scrape(client), "portal_ready") == 1


# --- the production server: several workers, one answer --------------------------------------


@pytest.fixture
def database(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        yield


def test_a_scrape_sums_what_every_gunicorn_worker_counted_and_promtool_finds_nothing_wrong(database):
    token = PRODUCTION_SECRETS["METRICS_TOKEN"]
    sent = 0
    # Started once /metrics answers (401): the requests counted below are only the test's own.
    with Gunicorn(workers=2, ready_path="/metrics") as server, ThreadPoolExecutor(max_workers=8) as clients:

        def live(_):
            # A connection of its own each time, so the kernel hands them to either worker.
            return requests.get(server.url + "/health/live/", headers={"Connection": "close"}, timeout=30).status_code

        def both_workers_served() -> bool:
            nonlocal sent
            statuses = list(clients.map(live, range(20)))
            assert statuses == [200] * 20
            sent += 20
            return len(workers_that_served(server, "GET", "/health/live/")) >= 2

        assert wait_until(both_workers_served, seconds=120, interval=0), server.log()[-3000:]
        # Prometheus asks each app server directly, over plain HTTP: no redirect to HTTPS.
        scrapes = [
            requests.get(server.url + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30)
            for _ in range(4)
        ]
        refused = requests.get(server.url + "/metrics", timeout=30)

    assert [scrape.status_code for scrape in scrapes] == [200] * 4
    assert refused.status_code == 401
    live_ok = {"view": "health_live", "method": "GET", "status": "200"}
    # Whichever worker answered a scrape, it reports every worker's requests.
    assert [value(parse(scrape.text), "http_responses_total", **live_ok) for scrape in scrapes] == [sent] * 4
    samples = parse(scrapes[-1].text)
    assert value(samples, "http_request_duration_seconds_count", view="health_live", method="GET") == sent
    assert value(samples, "portal_ready") == 1
    promtool = subprocess.run(
        ["/usr/bin/promtool", "check", "metrics"], input=scrapes[-1].text, capture_output=True, text=True, timeout=60
    )
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr
    assert promtool.stdout.strip() == promtool.stderr.strip() == ""


def test_payouts_processing_by_provider_their_oldest_age_and_the_stuck_threshold(
    client, transactional_db, funded_wallet, bank_account, settings
):
    settings.PAYMENT_PROVIDERS = ["paystack", "flutterwave", "mpesa"]
    settings.SANDBOX_PAYMENTS_ENABLED = False
    settings.PAYOUT_STUCK_AFTER_MINUTES = 90
    empty = scrape(client)
    sent = {}
    for amount, provider, ago in (("1000", "paystack", 3), ("2000", "paystack", 1), ("1500", "mpesa", 0.5)):
        w = TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal(amount))
        Withdrawal.objects.filter(pk=w.pk).update(
            status=Withdrawal.Status.PROCESSING,
            payout_method=provider,
            transfer_reference=w.stable_transfer_reference(),
            payout_sent_at=timezone.now() - timedelta(hours=ago),
        )
        sent[amount] = w
    # Processing without a provider (marked before payouts existed): not a transfer in flight.
    manual = TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("1200"))
    Withdrawal.objects.filter(pk=manual.pk).update(status=Withdrawal.Status.PROCESSING)

    samples = scrape(client)

    # Every provider a route can use is there at 0 before anything is sent.
    assert ("payouts_processing", (("provider", "flutterwave"),)) in empty
    assert value(empty, "payouts_processing", provider="paystack") == 0
    assert value(empty, "payout_oldest_processing_age_seconds", provider="paystack") == 0
    assert value(samples, "payouts_processing", provider="paystack") == 2
    assert value(samples, "payouts_processing", provider="mpesa") == 1
    assert value(samples, "payouts_processing", provider="flutterwave") == 0
    assert not any(labels == (("provider", ""),) or labels == (("provider", "manual"),) for _, labels in samples)
    paystack_age = value(samples, "payout_oldest_processing_age_seconds", provider="paystack")
    assert 3 * 3600 <= paystack_age < 3 * 3600 + 120
    assert 1800 <= value(samples, "payout_oldest_processing_age_seconds", provider="mpesa") < 1800 + 120
    assert value(samples, "payout_stuck_after_seconds") == 90 * 60
    assert value(samples, "withdrawals_pending") == 4  # the open withdrawals' gauge still counts them all
