"""The refund engine (finance/refunds.py): queue with the refund, send, settle by callback, job
answer or query; staff retry and mark refunded; reversals; the ledger check after each path.

The sandbox proves the path end to end (its own signed callback through the real webhook
endpoint and the jobs engine); a small scripted provider (a real `Provider` subclass
registered in PROVIDERS for the test) gives the answers the sandbox cannot (timeouts,
refusals). Paystack's path runs on its recorded payloads (test_paystack_refunds.py)."""

import importlib
import json
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from rest_framework.test import APIClient
from wagtail.models import ModelLogEntry

from finance import refunds, staff_actions
from finance.errors import InvalidStateError, PermissionDeniedError, TransactionError
from finance.models import LedgerAudit, LedgerEntry, ProviderRefund, SystemAccount, WebhookEvent
from finance.providers import PROVIDERS, sandbox
from finance.providers.base import (
    FAILED,
    IGNORED,
    PENDING,
    SUCCESS,
    Provider,
    ProviderEvent,
    ProviderUnavailableError,
    RefundRefusedError,
    RefundResult,
    WebhookVerificationError,
    load_json,
)
from finance.services import TransactionService
from testing.jobs import run_jobs_with_retries, run_ready_jobs

pytestmark = pytest.mark.django_db
WEBHOOK = "/api/payments/webhooks/{}/"
Outcome = WebhookEvent.Outcome
Status = ProviderRefund.Status


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.SANDBOX_WEBHOOK_SECRET = "sandbox-secret"
    settings.SANDBOX_AUTOCOMPLETE = False
    settings.SANDBOX_PAYMENTS_ENABLED = True
    settings.SANDBOX_REFUND_FAILS_CENTS = "13"
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("1000000")}
    settings.REFUND_QUERY_AFTER_MINUTES = 30


def refund(booking, amount="400.00", key=None) -> ProviderRefund:
    txn = TransactionService.process_refund(booking, Decimal(amount), "guest cancelled", idempotency_key=key)
    return ProviderRefund.objects.select_related("transaction", "payment").get(transaction__reference=txn.reference)


def fresh(provider_refund) -> ProviderRefund:
    return ProviderRefund.objects.select_related("transaction", "payment").get(pk=provider_refund.pk)


def send_jobs():
    return DBTaskResult.objects.filter(task_path=refunds.send_refund.module_path)


def refunds_payable(currency="NGN") -> Decimal:
    total = LedgerEntry.objects.filter(system_account=SystemAccount.REFUNDS_PAYABLE, currency=currency).aggregate(
        total=Sum("amount")
    )["total"]
    return total or Decimal(0)


def ledger_ok():
    call_command("check_ledger", stdout=StringIO())


def post_signed(body: bytes):
    return APIClient().post(
        WEBHOOK.format("sandbox"), body, content_type="application/json", HTTP_X_SANDBOX_SIGNATURE=sandbox.sign(body)
    )


# --- a provider double for answers the sandbox never gives --------------------------------


class ScriptedRefunds(Provider):
    """A provider whose refund answers each test scripts: `send_answers` and `fetch_answers` are
    lists of RefundResult or exceptions, taken in order (the last one repeats)."""

    name = "testbank"
    refunds_by_api = True

    def __init__(self):
        self.send_answers = [RefundResult(PENDING, "rf_1")]
        self.fetch_answers = [RefundResult(PENDING, "rf_1")]
        self.sent_references = []

    def _next(self, answers):
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def send_refund(self, refund, *, session=None):
        self.sent_references.append(refund.refund_reference)
        return self._next(self.send_answers)

    def fetch_refund(self, refund, *, session=None):
        return self._next(self.fetch_answers)

    def verify(self, raw, headers, query=None):
        if headers.get("x-testbank-token") != "tb-token":
            raise WebhookVerificationError("bad token")

    def parse(self, raw):
        data = load_json(raw)
        return ProviderEvent(
            event_id=data["id"],
            event_type=f"refund.{data['status']}",
            outcome={"ok": SUCCESS, "failed": FAILED}.get(data["status"], IGNORED),
            refund_reference=data.get("reference", ""),
            refund_id=data.get("refund_id", ""),
            payment_reference=data.get("payment", ""),
            amount=Decimal(data["amount"]) if "amount" in data else None,
            currency=data.get("currency", ""),
            failure_reason=data.get("reason", ""),
        )


@pytest.fixture
def testbank(settings, monkeypatch):
    bank = ScriptedRefunds()
    monkeypatch.setitem(PROVIDERS, "testbank", bank)
    settings.SANDBOX_PAYMENTS_ENABLED = False
    settings.PAYMENT_PROVIDERS = {**settings.PAYMENT_PROVIDERS, "testbank": {"NG"}}
    return bank


@pytest.fixture
def bank_booking(testbank, host, guest, make_booking, make_payment):
    """A 1,000.00 NGN booking paid through the scripted provider and applied by the ledger."""
    booking = make_booking(host, guest)
    TransactionService.process_booking_payment(booking, make_payment(booking, provider="testbank"))
    booking.refresh_from_db()
    return booking


def post_bank_callback(provider_refund, status="ok", event_id="tb_evt_1", **extra):
    body = {
        "id": event_id,
        "status": status,
        "reference": provider_refund.refund_reference,
        "amount": str(provider_refund.amount),
        "currency": provider_refund.currency,
        **extra,
    }
    return APIClient().post(
        WEBHOOK.format("testbank"), json.dumps(body), content_type="application/json", HTTP_X_TESTBANK_TOKEN="tb-token"
    )


# --- queueing with the refund --------------------------------------------------------------------


def test_a_refund_queues_its_provider_refund_and_one_send_in_the_same_transaction(paid_booking):
    queued = refund(paid_booking, key="r1")

    assert (queued.provider, queued.status, queued.attempt) == ("sandbox", Status.QUEUED, 1)
    assert (queued.amount, queued.currency) == (Decimal("400.00"), "NGN")
    assert queued.refund_reference == f"refund-{queued.transaction.reference.lower()}"
    assert queued.payment == paid_booking.payments.get()
    [job] = send_jobs()
    assert job.args_kwargs["args"] == [queued.pk, 1]
    assert refunds_payable() == Decimal("400.00")  # owed to the guest until the provider pays

    again = refund(paid_booking, key="r1")  # a replay: the first result, nothing new

    assert again.pk == queued.pk
    assert ProviderRefund.objects.count() == 1 and send_jobs().count() == 1
    ledger_ok()


def test_a_payment_whose_provider_is_off_is_refunded_by_hand_and_sends_nothing(settings, paid_booking):
    settings.SANDBOX_PAYMENTS_ENABLED = False
    manual = refund(paid_booking)
    assert (manual.provider, manual.status) == ("manual", Status.QUEUED)
    assert not send_jobs().exists()
    ledger_ok()


# --- the sandbox, end to end ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("amount", "status", "payable", "outcome"),
    [("400.00", Status.SUCCEEDED, "0", Outcome.APPLIED), ("400.13", Status.FAILED, "400.13", Outcome.REFUND_FAILED)],
)
def test_a_sandbox_refund_settles_by_its_own_signed_callback(
    settings, live_server, paid_booking, amount, status, payable, outcome
):
    settings.SANDBOX_AUTOCOMPLETE = True
    settings.SANDBOX_WEBHOOK_URL = f"{live_server.url}/api/payments/webhooks/sandbox/"
    queued = refund(paid_booking, amount)

    run_jobs_with_retries()  # the send job, then the sandbox's callback job posting over HTTP

    done = fresh(queued)
    assert done.status == status
    assert done.provider_refund_id == sandbox.refund_id(done)
    assert refunds_payable() == Decimal(payable)
    [event] = WebhookEvent.objects.filter(provider="sandbox")
    assert (event.outcome, event.refund_id) == (outcome, done.pk)
    if status == Status.FAILED:
        assert done.failure_reason.startswith("Sandbox: the guest's card is closed")
        assert event.reason == done.failure_reason
    else:
        assert done.settled_at is not None
        # The refund's own transaction carries the settlement's legs; no wallet moved.
        legs = dict(done.transaction.entries.filter(wallet__isnull=True).values_list("system_account", "amount"))
        assert legs[SystemAccount.PROVIDER_CLEARING] == Decimal("400.00")
        assert LedgerAudit.objects.filter(action="refund.settled", transaction=done.transaction).count() == 1
    ledger_ok()


def test_a_callback_before_the_send_job_records_its_answer_settles_once(paid_booking):
    queued = refund(paid_booking)
    assert post_signed(sandbox.refund_event_body(queued)).json()["status"] == Outcome.APPLIED
    assert fresh(queued).status == Status.SUCCEEDED

    assert run_ready_jobs() == 1  # the send job: finds the refund settled, sends nothing
    assert fresh(queued).status == Status.SUCCEEDED
    assert refunds_payable() == 0
    ledger_ok()


def test_the_same_callback_twice_and_a_later_success_move_money_once(paid_booking):
    queued = refund(paid_booking)
    body = sandbox.refund_event_body(queued)
    post_signed(body)
    post_signed(body)  # a redelivery: the inbox's duplicate
    second = json.loads(body)
    second["id"] = "evt_another"
    post_signed(json.dumps(second).encode())

    assert fresh(queued).status == Status.SUCCEEDED
    assert refunds_payable() == 0
    assert LedgerAudit.objects.filter(action="refund.settled").count() == 1
    assert "already settled" in WebhookEvent.objects.get(event_id="evt_another").reason
    ledger_ok()


# --- the send job's other answers ------------------------------------------------------------------


def test_the_job_records_the_providers_id_then_the_callback_settles(bank_booking, testbank):
    queued = refund(bank_booking)
    assert run_ready_jobs() == 1
    sent = fresh(queued)
    assert (sent.status, sent.provider_refund_id) == (Status.PROCESSING, "rf_1")
    assert sent.sent_at is not None
    assert testbank.sent_references == [queued.refund_reference]

    assert post_bank_callback(sent).status_code == 200
    assert fresh(queued).status == Status.SUCCEEDED
    ledger_ok()


def test_a_timeout_is_retried_with_the_same_reference_then_left_to_the_query(bank_booking, testbank):
    testbank.send_answers = [ProviderUnavailableError("read timed out")]
    queued = refund(bank_booking)

    run_jobs_with_retries()

    assert len(testbank.sent_references) == 5  # the job's attempts
    assert set(testbank.sent_references) == {queued.refund_reference}
    waiting = fresh(queued)
    assert waiting.status == Status.QUEUED and waiting.sent_at is not None
    assert "read timed out" in waiting.last_error and "periodic query" in waiting.last_error
    assert refunds_payable() == Decimal("400.00")
    # It may have reached the provider: it can no longer be reversed.
    with pytest.raises(InvalidStateError, match="being sent"):
        TransactionService.reverse_transaction(waiting.transaction.reference, "changed our mind")

    # Later the query asks the provider, who paid it after all.
    testbank.fetch_answers = [RefundResult(SUCCESS, "rf_9")]
    ProviderRefund.objects.filter(pk=queued.pk).update(sent_at=timezone.now() - timedelta(minutes=31))
    assert refunds.query_stuck_refunds.call() == 1
    done = fresh(queued)
    assert (done.status, done.last_error, done.provider_refund_id) == (Status.SUCCEEDED, "", "rf_9")
    assert done.checked_at is not None and refunds_payable() == 0
    ledger_ok()


def test_the_query_sends_again_a_refund_the_provider_never_received(bank_booking, testbank):
    testbank.send_answers = [ProviderUnavailableError("connection refused"), RefundResult(PENDING, "rf_2")]
    testbank.fetch_answers = [RefundResult(PENDING)]  # the provider knows no such refund
    queued = refund(bank_booking)
    run_ready_jobs()  # first try fails; its retry waits
    DBTaskResult.objects.all().delete()  # as if the worker gave up
    ProviderRefund.objects.filter(pk=queued.pk).update(sent_at=timezone.now() - timedelta(minutes=31))

    assert refunds.query_stuck_refunds.call() == 1
    assert run_ready_jobs() == 1
    assert testbank.sent_references == [queued.refund_reference] * 2
    assert fresh(queued).status == Status.PROCESSING


def test_a_refused_refund_fails_with_the_providers_words_and_the_money_stays_owed(bank_booking, testbank):
    testbank.send_answers = [RefundRefusedError("Transaction has been fully reversed")]
    queued = refund(bank_booking)
    run_jobs_with_retries()

    failed = fresh(queued)
    assert failed.status == Status.FAILED
    assert failed.failure_reason == "testbank refused the refund: Transaction has been fully reversed"
    assert refunds_payable() == Decimal("400.00")  # owed to the guest
    assert len(testbank.sent_references) == 1
    ledger_ok()


# --- callbacks ----------------------------------------------------------------------------------------


@pytest.fixture
def processing(bank_booking, testbank):
    queued = refund(bank_booking)
    run_ready_jobs()
    return fresh(queued)


def test_a_failure_callback_fails_the_refund_and_the_inbox_says_why(processing):
    post_bank_callback(processing, status="failed", reason="Card account closed")
    event = WebhookEvent.objects.get()
    assert (event.outcome, event.reason, event.refund_id) == (
        Outcome.REFUND_FAILED,
        "Card account closed",
        processing.pk,
    )
    failed = fresh(processing)
    assert (failed.status, failed.failure_reason) == (Status.FAILED, "Card account closed")
    assert refunds_payable() == Decimal("400.00")
    ledger_ok()


def test_a_failure_after_success_is_flagged_and_moves_nothing(processing):
    post_bank_callback(processing, status="ok", event_id="e1")
    post_bank_callback(processing, status="failed", event_id="e2", reason="bounced")
    event = WebhookEvent.objects.get(event_id="e2")
    assert event.outcome == Outcome.FLAGGED and "after it was settled" in event.reason
    assert fresh(processing).status == Status.SUCCEEDED and refunds_payable() == 0
    ledger_ok()


def test_an_unknown_refund_or_another_amount_is_flagged(processing):
    post_bank_callback(processing, event_id="e1", reference="refund-nobody", refund_id="")
    post_bank_callback(processing, event_id="e2", amount="399.00")
    unknown, other = WebhookEvent.objects.order_by("pk")
    assert unknown.outcome == Outcome.FLAGGED and "No refund matches" in unknown.reason
    assert other.outcome == Outcome.FLAGGED and "differs from the refund's" in other.reason
    assert fresh(processing).status == Status.PROCESSING and refunds_payable() == Decimal("400.00")


def test_a_callback_naming_only_the_payment_and_amount_finds_the_open_refund(processing):
    # As Paystack's refund.processed does: the processor's own reference, not ours nor the id we kept.
    post_bank_callback(processing, reference="", refund_id="132013318360", payment=processing.payment.reference)
    assert WebhookEvent.objects.get().outcome == Outcome.APPLIED
    assert fresh(processing).status == Status.SUCCEEDED


# --- staff: retry and mark refunded --------------------------------------------------------------


@pytest.fixture
def failed_refund(bank_booking, testbank):
    testbank.send_answers = [RefundRefusedError("Card expired"), RefundResult(PENDING, "rf_2")]
    queued = refund(bank_booking)
    run_jobs_with_retries()
    return fresh(queued)


def test_retrying_a_failed_refund_sends_a_new_attempt_with_a_new_reference(failed_refund, testbank, finance_user):
    first_reference = failed_refund.refund_reference

    retried = staff_actions.retry_refund(refund=failed_refund, actor=finance_user, idempotency_key="k")
    replay = staff_actions.retry_refund(refund=failed_refund, actor=finance_user, idempotency_key="k")

    assert (retried.status, retried.attempt, retried.failure_reason) == (Status.QUEUED, 2, "")
    assert retried.refund_reference == f"{first_reference}-2"
    assert replay.attempt == 2  # the replay sent nothing more
    [entry] = ModelLogEntry.objects.filter(action="stayafrica.refund.retry")
    assert entry.user_id == finance_user.pk and entry.data["refund_reference"] == retried.refund_reference
    run_jobs_with_retries()
    assert testbank.sent_references == [first_reference, retried.refund_reference]
    assert fresh(failed_refund).status == Status.PROCESSING
    ledger_ok()


def test_only_a_failed_refund_can_be_retried_and_only_by_finance(processing, finance_user, support_user):
    with pytest.raises(InvalidStateError, match="Only a failed refund can be retried.*processing at the provider"):
        staff_actions.retry_refund(refund=processing, actor=finance_user, idempotency_key="k")
    with pytest.raises(PermissionDeniedError):
        staff_actions.retry_refund(refund=processing, actor=support_user, idempotency_key="k")


def test_marking_a_manual_refund_refunded_settles_it_once_with_the_note(settings, paid_booking, finance_user):
    settings.SANDBOX_PAYMENTS_ENABLED = False
    manual = refund(paid_booking)
    with pytest.raises(TransactionError, match="Say how the guest was paid"):
        staff_actions.mark_refunded(refund=manual, actor=finance_user, note=" ", idempotency_key="k")

    done = staff_actions.mark_refunded(
        refund=manual, actor=finance_user, note="Bank transfer from ops account", idempotency_key="k"
    )
    again = staff_actions.mark_refunded(
        refund=manual, actor=finance_user, note="Bank transfer from ops account", idempotency_key="k"
    )

    assert done.status == again.status == Status.SUCCEEDED
    assert refunds_payable() == 0
    [audit] = LedgerAudit.objects.filter(action="refund.settled")
    assert (audit.reason, audit.actor_id) == ("Bank transfer from ops account", finance_user.pk)
    assert ModelLogEntry.objects.filter(action="stayafrica.refund.mark_refunded").count() == 1
    with pytest.raises(InvalidStateError, match="cannot be marked refunded: it is refunded"):
        staff_actions.mark_refunded(refund=done, actor=finance_user, note="again", idempotency_key="k2")
    ledger_ok()


def test_a_failed_refund_paid_by_hand_is_marked_refunded(failed_refund, finance_user):
    done = staff_actions.mark_refunded(refund=failed_refund, actor=finance_user, note="Cash", idempotency_key="k")
    assert done.status == Status.SUCCEEDED and refunds_payable() == 0
    ledger_ok()


def test_a_refund_a_provider_may_still_pay_cannot_be_marked_refunded(processing, finance_user):
    with pytest.raises(InvalidStateError, match="may still pay it"):
        staff_actions.mark_refunded(refund=processing, actor=finance_user, note="Cash", idempotency_key="k")


# --- reversals ------------------------------------------------------------------------------------------


def test_reversing_a_queued_or_failed_refund_cancels_it(paid_booking, failed_refund):
    queued = refund(paid_booking)  # not sent yet
    for open_refund in (queued, failed_refund):
        TransactionService.reverse_transaction(open_refund.transaction.reference, "booked again")
        assert fresh(open_refund).status == Status.CANCELLED
    assert refunds_payable() == 0
    ledger_ok()


@pytest.mark.parametrize(("settle", "words"), [(False, "being paid to the guest"), (True, "has reached the guest")])
def test_a_refund_the_provider_is_paying_or_paid_cannot_be_reversed(processing, finance_user, unchanged, settle, words):
    if settle:
        post_bank_callback(processing)
    txn = processing.transaction
    assert not staff_actions.reversal_states([txn]).get(txn.pk).reversible
    with unchanged(), pytest.raises(InvalidStateError, match=words):
        TransactionService.reverse_transaction(txn.reference, "changed our mind")
    with pytest.raises(InvalidStateError, match=words):
        staff_actions.request_reversal(txn=txn, reason="changed our mind", actor=finance_user, idempotency_key="k")


# --- the data migration ------------------------------------------------------------------------------------


def test_refunds_recorded_before_the_engine_become_failed_or_cancelled(paid_booking):
    kept, reversed_one = refund(paid_booking, "300.00"), refund(paid_booking, "200.00")
    TransactionService.reverse_transaction(reversed_one.transaction.reference, "mistake")
    ProviderRefund.objects.all().delete()  # as they stood before the engine existed

    migration = importlib.import_module("finance.migrations.0020_provider_refunds_for_existing")
    migration.open_refunds_for_existing(apps, None)

    old = ProviderRefund.objects.get(transaction=kept.transaction)
    assert (old.status, old.provider, old.amount) == (Status.FAILED, "sandbox", Decimal("300.00"))
    assert old.failure_reason.startswith("Recorded before refunds were sent to providers: retry it")
    assert ProviderRefund.objects.get(transaction=reversed_one.transaction).status == Status.CANCELLED
    ledger_ok()


# --- metrics -----------------------------------------------------------------------------------------------
