"""The payout engine (finance/payouts.py): send, settle by callback, job answer or query.

The sandbox provider proves the path end to end (its own signed callback through the real
webhook endpoint and the jobs engine); a small test provider, a real `Provider` subclass
registered in PROVIDERS for the test, gives the answers the sandbox cannot (timeouts,
refusals, an immediate success)."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from rest_framework.test import APIClient
from wagtail.models import ModelLogEntry

from finance import payouts, staff_actions
from finance.api.tokens import issue_api_token
from finance.errors import TransferInFlightError
from finance.models import BankAccount, LedgerAudit, WebhookEvent, Withdrawal
from finance.providers import PROVIDERS, sandbox
from finance.providers.base import (
    FAILED,
    IGNORED,
    PENDING,
    SUCCESS,
    Provider,
    ProviderEvent,
    ProviderUnavailableError,
    TransferRefusedError,
    TransferResult,
    WebhookVerificationError,
    load_json,
)
from finance.services import TransactionService
from testing.jobs import bring_retries_forward, run_jobs_with_retries, run_ready_jobs

pytestmark = pytest.mark.django_db
WEBHOOK = "/api/payments/webhooks/{}/"
Outcome = WebhookEvent.Outcome


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.SANDBOX_WEBHOOK_SECRET = "sandbox-secret"
    settings.SANDBOX_AUTOCOMPLETE = False
    settings.SANDBOX_TRANSFER_FAILS_LAST4 = "0000"
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("1000000")}
    settings.PAYOUT_QUERY_AFTER_MINUTES = 30


def payable_account(owner, last4="4321"):
    """An account a provider can pay (its full number kept encrypted: opaque here)."""
    return BankAccount.objects.create(
        owner=owner,
        bank_name="GTBank",
        bank_code="058",
        account_name="Host One",
        account_number_last4=last4,
        account_number_encrypted="opaque-ciphertext",
        country="NG",
        currency="NGN",
    )


@pytest.fixture
def sandbox_on(settings):
    settings.SANDBOX_PAYMENTS_ENABLED = True


def withdraw(wallet, account, amount="2500.00"):
    return TransactionService.initiate_withdrawal(wallet, account, Decimal(amount))


def send(withdrawal, actor, key="k1"):
    return staff_actions.complete_withdrawal(withdrawal=withdrawal, actor=actor, idempotency_key=key).result


def jobs(task):
    return DBTaskResult.objects.filter(task_path=f"{task.module_path}")


def post_signed(body: bytes):
    return APIClient().post(
        WEBHOOK.format("sandbox"), body, content_type="application/json", HTTP_X_SANDBOX_SIGNATURE=sandbox.sign(body)
    )


def wallet_state(wallet):
    wallet.refresh_from_db()
    return wallet.balance, wallet.held_balance


# --- a provider double for answers the sandbox never gives --------------------------------


class ScriptedBank(Provider):
    """A provider whose answers each test scripts: `send_answers` and `fetch_answers` are
    lists of TransferResult or exceptions, taken in order (the last one repeats)."""

    name = "testbank"
    transfer_account_types = ("bank",)

    def __init__(self):
        self.send_answers = [TransferResult(PENDING, "tb_1")]
        self.fetch_answers = [TransferResult(PENDING, "tb_1")]
        self.sent_references = []

    def _next(self, answers):
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def send_transfer(self, withdrawal, *, session=None):
        self.sent_references.append(withdrawal.transfer_reference)
        return self._next(self.send_answers)

    def fetch_transfer(self, withdrawal, *, session=None):
        return self._next(self.fetch_answers)

    def verify(self, raw, headers, query=None):
        if headers.get("x-testbank-token") != "tb-token":
            raise WebhookVerificationError("bad token")

    def parse(self, raw):
        data = load_json(raw)
        outcome = {"ok": SUCCESS, "failed": FAILED}.get(data["status"], IGNORED)
        return ProviderEvent(
            event_id=data["id"],
            event_type=f"transfer.{data['status']}",
            outcome=outcome,
            transfer_reference=data["reference"],
            amount=Decimal(data["amount"]) if "amount" in data else None,
            currency=data.get("currency", ""),
            raw_amount=data.get("raw_amount"),
            provider_reference=data.get("transfer_id", ""),
            failure_reason=data.get("reason", ""),
        )


@pytest.fixture
def testbank(settings, monkeypatch):
    bank = ScriptedBank()
    monkeypatch.setitem(PROVIDERS, "testbank", bank)
    settings.SANDBOX_PAYMENTS_ENABLED = False
    settings.PAYMENT_PROVIDERS = {**settings.PAYMENT_PROVIDERS, "testbank": {"NG"}}
    settings.PAYOUT_ROUTES = {("bank", "NG"): "testbank"}
    return bank


def post_bank_callback(withdrawal, status="ok", event_id="tb_evt_1", **extra):
    body = {
        "id": event_id,
        "status": status,
        "reference": withdrawal.transfer_reference,
        "amount": str(withdrawal.amount),
        "currency": withdrawal.currency,
        **extra,
    }
    return APIClient().post(
        WEBHOOK.format("testbank"), json.dumps(body), content_type="application/json", HTTP_X_TESTBANK_TOKEN="tb-token"
    )


# --- routes ---------------------------------------------------------------------------------


def test_an_account_with_only_its_last_four_digits_is_paid_manually_and_completes_at_once(
    sandbox_on, finance_user, funded_wallet, bank_account
):
    withdrawal = withdraw(funded_wallet, bank_account)
    done = send(withdrawal, finance_user)
    assert (done.status, done.payout_method, done.transfer_reference) == ("completed", "manual", "")
    assert wallet_state(funded_wallet) == (Decimal("7500.00"), Decimal("0.00"))
    assert ModelLogEntry.objects.filter(action="stayafrica.withdrawal.complete").count() == 1
    assert not jobs(payouts.send_transfer).exists()


def test_the_sandbox_pays_every_account_with_a_full_number_while_it_is_on(settings, host):
    account = payable_account(host)
    settings.SANDBOX_PAYMENTS_ENABLED = True
    assert payouts.payout_route(account).method == "sandbox"
    settings.SANDBOX_PAYMENTS_ENABLED = False
    settings.PAYOUT_ROUTES = {}
    assert payouts.payout_route(account).is_manual


# --- sending --------------------------------------------------------------------------------


def test_sending_a_payout_makes_it_processing_keeps_the_hold_and_enqueues_one_send(
    sandbox_on, finance_user, funded_wallet, host
):
    withdrawal = withdraw(funded_wallet, payable_account(host))

    done = send(withdrawal, finance_user)

    assert done.status == Withdrawal.Status.PROCESSING
    assert done.payout_method == "sandbox"
    assert done.transfer_reference == f"payout-{withdrawal.reference.lower()}"
    assert done.payout_sent_at is not None and done.processed_by == finance_user
    assert wallet_state(funded_wallet) == (Decimal("10000.00"), Decimal("2500.00"))  # the hold stays
    [job] = jobs(payouts.send_transfer)
    assert job.args_kwargs["args"] == [withdrawal.pk]
    [entry] = ModelLogEntry.objects.filter(action="stayafrica.withdrawal.send_payout")
    assert entry.data["transfer_reference"] == done.transfer_reference and entry.user_id == finance_user.pk
    assert LedgerAudit.objects.filter(action="withdrawal.send_payout", amount=Decimal("2500.00")).count() == 1


def test_a_replay_or_a_second_click_returns_the_same_processing_payout_and_sends_nothing_more(
    sandbox_on, finance_user, funded_wallet, host
):
    withdrawal = withdraw(funded_wallet, payable_account(host))
    first = send(withdrawal, finance_user, key="k1")
    replay = send(withdrawal, finance_user, key="k1")
    second_click = send(withdrawal, finance_user, key="k2")

    assert first.pk == replay.pk == second_click.pk
    assert {replay.status, second_click.status} == {Withdrawal.Status.PROCESSING}
    assert jobs(payouts.send_transfer).count() == 1
    assert ModelLogEntry.objects.filter(action="stayafrica.withdrawal.send_payout").count() == 1


def test_staff_cannot_fail_a_payout_whose_transfer_is_in_flight(sandbox_on, finance_user, funded_wallet, host):
    withdrawal = send(withdraw(funded_wallet, payable_account(host)), finance_user)
    with pytest.raises(TransferInFlightError) as refused:
        staff_actions.fail_withdrawal(withdrawal=withdrawal, actor=finance_user, reason="gave up", idempotency_key="f")
    assert refused.value.code == "transfer_in_flight" and refused.value.status == 409
    assert withdrawal.transfer_reference in refused.value.message and "Sandbox" in refused.value.message
    assert Withdrawal.objects.get(pk=withdrawal.pk).status == Withdrawal.Status.PROCESSING


def test_the_api_sends_the_payout_and_shows_its_transfer_and_refuses_to_fail_it(
    sandbox_on, finance_user, funded_wallet, host
):
    withdrawal = withdraw(funded_wallet, payable_account(host))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_api_token(finance_user)}")

    sent = client.post(f"/api/payments/withdrawals/{withdrawal.pk}/complete/")
    assert sent.status_code == 200, sent.content
    body = sent.json()
    assert (body["status"], body["payout_method"]) == ("processing", "sandbox")
    assert body["transfer_reference"] == withdrawal.stable_transfer_reference() and body["payout_sent_at"]

    failing = client.post(f"/api/payments/withdrawals/{withdrawal.pk}/fail/", {"reason": "x"}, format="json")
    assert failing.status_code == 409
    assert failing.json()["error"]["code"] == "transfer_in_flight"


def test_a_processing_payout_counts_toward_the_approval_threshold(
    settings, sandbox_on, finance_user, funded_wallet, host
):
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("4000")}
    account = payable_account(host)
    send(withdraw(funded_wallet, account, "2500.00"), finance_user, key="a")
    outcome = staff_actions.complete_withdrawal(
        withdrawal=withdraw(funded_wallet, account, "2000.00"), actor=finance_user, idempotency_key="b"
    )
    assert outcome.needs_approval  # 2,500 already on its way + 2,000 > 4,000


def test_an_approved_request_sends_the_payout(settings, sandbox_on, finance_user, approver, funded_wallet, host):
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("1000")}
    withdrawal = withdraw(funded_wallet, payable_account(host))
    outcome = staff_actions.complete_withdrawal(withdrawal=withdrawal, actor=finance_user, idempotency_key="t")
    staff_actions.approve_request(request=outcome.approval, actor=approver)
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.PROCESSING and withdrawal.payout_method == "sandbox"
    [entry] = ModelLogEntry.objects.filter(action="stayafrica.withdrawal.send_payout")
    assert entry.user_id == approver.pk
    assert jobs(payouts.send_transfer).count() == 1


# --- the sandbox, end to end ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("last4", "status", "balance", "outcome"),
    [("4321", "completed", "7500.00", Outcome.APPLIED), ("0000", "failed", "10000.00", Outcome.PAYOUT_FAILED)],
)
def test_a_sandbox_payout_settles_by_its_own_signed_callback(
    settings, live_server, finance_user, funded_wallet, host, last4, status, balance, outcome
):
    settings.SANDBOX_PAYMENTS_ENABLED = True
    settings.SANDBOX_AUTOCOMPLETE = True
    settings.SANDBOX_WEBHOOK_URL = f"{live_server.url}/api/payments/webhooks/sandbox/"
    withdrawal = send(withdraw(funded_wallet, payable_account(host, last4)), finance_user)
    assert withdrawal.status == "processing"

    run_jobs_with_retries()  # the send job, then the sandbox's callback job posting over HTTP

    withdrawal.refresh_from_db()
    assert withdrawal.status == status
    assert withdrawal.provider_transfer_id == sandbox.transfer_id(withdrawal)
    assert withdrawal.processed_by == finance_user and withdrawal.processed_at is not None
    assert wallet_state(funded_wallet) == (Decimal(balance), Decimal("0.00"))
    [event] = WebhookEvent.objects.filter(provider="sandbox")
    assert (event.outcome, event.withdrawal_id) == (outcome, withdrawal.pk)
    if status == "failed":
        assert withdrawal.failure_reason == "Sandbox: the account ending 0000 is closed"
        assert event.reason == withdrawal.failure_reason
    call_command("check_ledger")


def test_a_callback_that_arrives_before_the_send_job_records_its_answer_settles_once(
    sandbox_on, finance_user, funded_wallet, host
):
    withdrawal = send(withdraw(funded_wallet, payable_account(host)), finance_user)
    withdrawal.refresh_from_db()
    # The sandbox's callback is posted before the send job has recorded the sandbox's answer.
    assert post_signed(sandbox.transfer_event_body(withdrawal)).json()["status"] == Outcome.APPLIED
    assert Withdrawal.objects.get(pk=withdrawal.pk).status == Withdrawal.Status.COMPLETED

    assert run_ready_jobs() == 1  # the send job: finds the payout settled, sends nothing
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.COMPLETED
    assert wallet_state(funded_wallet) == (Decimal("7500.00"), Decimal("0.00"))


def test_the_send_job_records_the_provider_transfer_id_then_the_callback_settles(
    testbank, finance_user, funded_wallet, host
):
    withdrawal = send(withdraw(funded_wallet, payable_account(host)), finance_user)
    assert run_ready_jobs() == 1
    withdrawal.refresh_from_db()
    assert (withdrawal.status, withdrawal.provider_transfer_id) == ("processing", "tb_1")
    assert testbank.sent_references == [withdrawal.transfer_reference]

    assert post_bank_callback(withdrawal).status_code == 200
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.COMPLETED


# --- the send job's other answers ---------------------------------------------------------------


def test_a_provider_that_times_out_is_retried_with_the_same_reference_then_left_to_the_query(
    testbank, finance_user, funded_wallet, host
):
    testbank.send_answers = [ProviderUnavailableError("read timed out")]
    withdrawal = send(withdraw(funded_wallet, payable_account(host)), finance_user)

    run_jobs_with_retries()

    assert len(testbank.sent_references) == 5  # the job's attempts
    assert set(testbank.sent_references) == {withdrawal.transfer_reference}
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.PROCESSING
    assert "read timed out" in withdrawal.payout_error and "periodic query" in withdrawal.payout_error
    assert wallet_state(funded_wallet) == (Decimal("10000.00"), Decimal("2500.00"))

    # Later the query asks the provider, who paid it after all.
    testbank.fetch_answers = [TransferResult(SUCCESS, "tb_9")]
    Withdrawal.objects.filter(pk=withdrawal.pk).update(payout_sent_at=timezone.now() - timedelta(minutes=31))
    assert payouts.query_stuck_transfers.call() == 1
    withdrawal.refresh_from_db()
    assert (withdrawal.status, withdrawal.payout_error, withdrawal.provider_transfer_id) == ("completed", "", "tb_9")
    assert withdrawal.payout_checked_at is not None


def test_a_timeout_then_an_answer_clears_the_error(testbank, finance_user, funded_wallet, host):
    testbank.send_answers = [ProviderUnavailableError("503"), TransferResult(PENDING, "tb_2")]
    withdrawal = send(withdraw(funded_wallet, payable_account(host)), finance_user)
    assert run_ready_jobs() == 1
    assert "503" in Withdrawal.objects.get(pk=withdrawal.pk).payout_error
    bring_retries_forward()
    assert run_ready_jobs() == 1
    withdrawal.refresh_from_db()
    assert (withdrawal.status, withdrawal.payout_error, withdrawal.provider_transfer_id) == ("processing", "", "tb_2")


def test_a_refused_transfer_fails_the_payout_with_the_providers_reason_and_releases_the_hold(
    testbank, finance_user, funded_wallet, host
):
    testbank.send_answers = [TransferRefusedError("Account number is invalid")]
    withdrawal = send(withdraw(funded_wallet, payable_account(host)), finance_user)
    run_jobs_with_retries()
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.FAILED
    assert "Account number is invalid" in withdrawal.failure_reason
    assert wallet_state(funded_wallet) == (Decimal("10000.00"), Decimal("0.00"))
    assert len(testbank.sent_references) == 1


def test_an_immediate_success_completes_at_once(testbank, finance_user, funded_wallet, host):
    testbank.send_answers = [TransferResult(SUCCESS, "tb_3")]
    withdrawal = send(withdraw(funded_wallet, payable_account(host)), finance_user)
    run_ready_jobs()
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.COMPLETED and withdrawal.processed_by == finance_user
    assert wallet_state(funded_wallet) == (Decimal("7500.00"), Decimal("0.00"))
    # The provider's callback that follows changes nothing.
    assert post_bank_callback(withdrawal).json()["status"] == Outcome.APPLIED
    assert "already" in WebhookEvent.objects.get().reason
    assert wallet_state(funded_wallet) == (Decimal("7500.00"), Decimal("0.00"))


# --- callbacks -------------------------------------------------------------------------------------


@pytest.fixture
def in_flight(testbank, finance_user, funded_wallet, host):
    return send(withdraw(funded_wallet, payable_account(host)), finance_user)


def test_a_failure_callback_fails_the_payout_and_the_inbox_says_why(in_flight, funded_wallet):
    post_bank_callback(in_flight, status="failed", reason="Recipient bank is offline")
    event = WebhookEvent.objects.get()
    assert (event.outcome, event.reason, event.withdrawal_id) == (
        Outcome.PAYOUT_FAILED,
        "Recipient bank is offline",
        in_flight.pk,
    )
    assert Withdrawal.objects.get(pk=in_flight.pk).failure_reason == "Recipient bank is offline"
    assert wallet_state(funded_wallet) == (Decimal("10000.00"), Decimal("0.00"))
    audit = LedgerAudit.objects.get(action="webhook.payout_failed")
    assert (audit.amount, audit.currency, audit.metadata["withdrawal"]) == (
        Decimal("2500.00"),
        "NGN",
        in_flight.reference,
    )


def test_the_same_callback_twice_and_a_second_success_move_money_once(in_flight, funded_wallet):
    post_bank_callback(in_flight, event_id="e1")
    assert post_bank_callback(in_flight, event_id="e1").json()["status"] == "duplicate"
    assert post_bank_callback(in_flight, event_id="e2").json()["status"] == Outcome.APPLIED
    assert wallet_state(funded_wallet) == (Decimal("7500.00"), Decimal("0.00"))


@pytest.mark.parametrize(
    ("first", "then", "words"),
    [("ok", "failed", "after withdrawal"), ("failed", "ok", "may have been paid")],
)
def test_a_contradicting_callback_is_flagged_and_moves_nothing(in_flight, funded_wallet, first, then, words):
    post_bank_callback(in_flight, status=first, event_id="e1", reason="closed")
    before = wallet_state(funded_wallet)
    assert post_bank_callback(in_flight, status=then, event_id="e2", reason="reversed").json()["status"] == "flagged"
    assert words in WebhookEvent.objects.get(event_id="e2").reason
    assert wallet_state(funded_wallet) == before


def test_an_unknown_transfer_or_other_amount_is_flagged(in_flight, funded_wallet):
    post_bank_callback(in_flight, event_id="e1", reference="payout-nobody")
    post_bank_callback(in_flight, event_id="e2", amount="2500.01")
    post_bank_callback(in_flight, event_id="e3", currency="KES")
    reasons = dict(WebhookEvent.objects.values_list("event_id", "reason"))
    assert "No payout matches transfer reference payout-nobody" in reasons["e1"]
    assert "differs from the payout's NGN 2,500.00" in reasons["e2"] or "2,500.00" in reasons["e2"]
    assert "Currency KES differs" in reasons["e3"]
    assert set(WebhookEvent.objects.values_list("outcome", flat=True)) == {Outcome.FLAGGED}
    assert Withdrawal.objects.get(pk=in_flight.pk).status == Withdrawal.Status.PROCESSING


def test_an_amount_without_a_currency_is_read_in_the_payouts_currency(testbank, finance_user, funded_wallet, host):
    withdrawal = send(withdraw(funded_wallet, payable_account(host)), finance_user)
    body = {"id": "m1", "status": "ok", "reference": withdrawal.transfer_reference, "raw_amount": "2500"}
    APIClient().post(
        WEBHOOK.format("testbank"), json.dumps(body), content_type="application/json", HTTP_X_TESTBANK_TOKEN="tb-token"
    )
    assert WebhookEvent.objects.get().outcome == Outcome.APPLIED


def test_a_flagged_callback_for_a_payout_not_yet_sent_is_applied_when_replayed(
    testbank, finance_user, manager, funded_wallet, host, settings
):
    withdrawal = withdraw(funded_wallet, payable_account(host))
    withdrawal.transfer_reference = withdrawal.stable_transfer_reference()
    post_bank_callback(withdrawal)  # it arrives before the payout is recorded as sent
    event = WebhookEvent.objects.get()
    assert event.outcome == Outcome.FLAGGED

    send(withdrawal, finance_user)
    replayed = staff_actions.replay_webhook(event=event, actor=finance_user)

    assert replayed.outcome == Outcome.APPLIED and replayed.withdrawal_id == withdrawal.pk
    assert Withdrawal.objects.get(pk=withdrawal.pk).status == Withdrawal.Status.COMPLETED
    entry = ModelLogEntry.objects.get(action="stayafrica.webhook.replay")
    assert (entry.data["amount"], entry.data["currency"]) == ("2500.00", "NGN")


# --- the periodic query ----------------------------------------------------------------------------


def test_the_query_asks_only_about_old_payouts_not_asked_recently_a_bounded_batch(
    testbank, finance_user, funded_wallet, host, monkeypatch
):
    account = payable_account(host)
    old, recent = (send(withdraw(funded_wallet, account, "1000.00"), finance_user, key=k) for k in ("a", "b"))
    Withdrawal.objects.filter(pk=old.pk).update(payout_sent_at=timezone.now() - timedelta(minutes=45))

    assert payouts.query_stuck_transfers.call() == 1  # the old one, still pending at the provider
    assert payouts.query_stuck_transfers.call() == 0  # asked a moment ago: not again yet
    old.refresh_from_db()
    assert old.status == "processing" and old.payout_checked_at is not None
    Withdrawal.objects.filter(pk=recent.pk).update(payout_sent_at=timezone.now() - timedelta(minutes=45))
    Withdrawal.objects.filter(pk=old.pk).update(payout_checked_at=timezone.now() - timedelta(minutes=31))
    monkeypatch.setattr(payouts, "QUERY_BATCH", 1)
    assert len(payouts.stuck_transfers(limit=1)) == 1
    testbank.fetch_answers = [TransferResult(FAILED, "tb_1", "Insufficient float")]
    assert payouts.query_stuck_transfers.call() == 2
    assert set(Withdrawal.objects.values_list("status", flat=True)) == {"failed"}
    assert wallet_state(funded_wallet) == (Decimal("10000.00"), Decimal("0.00"))


def test_the_query_runs_no_provider_call_inside_a_transaction(testbank, finance_user, funded_wallet, host):
    withdrawal = send(withdraw(funded_wallet, payable_account(host)), finance_user)
    Withdrawal.objects.filter(pk=withdrawal.pk).update(payout_sent_at=timezone.now() - timedelta(hours=1))
    depth = []
    testbank.fetch_transfer = lambda w, session=None: (
        depth.append(len(connection.savepoint_ids)) or TransferResult(PENDING)
    )
    with CaptureQueriesContext(connection):
        payouts.query_stuck_transfers.call()
    # The test's own transaction wraps everything; the call adds no savepoint of ours.
    assert depth == [0]
