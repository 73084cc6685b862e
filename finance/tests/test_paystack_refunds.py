"""Paystack refunds (finance/providers/paystack.py) against recorded payload shapes, and the
whole path through the refund engine: queue → send → signed callback → settle."""

import json
from decimal import Decimal
from io import StringIO

import pytest
import requests
from django.core.management import call_command
from rest_framework.test import APIClient

from finance.models import ProviderRefund, WebhookEvent
from finance.providers.base import FAILED, IGNORED, PENDING, SUCCESS, ProviderUnavailableError, RefundRefusedError
from finance.providers.paystack import Paystack, signature
from finance.services import TransactionService
from testing.jobs import bring_retries_forward, run_ready_jobs
from testing.recorded_http import answer, ok, recorded, recorded_json, session_with

pytestmark = pytest.mark.django_db
PAYSTACK = "https://api.paystack.co"
REFUND = f"{PAYSTACK}/refund"
Status = ProviderRefund.Status


@pytest.fixture(autouse=True)
def keys(settings):
    settings.PAYSTACK_SECRET_KEY = "sk_test_refunds"
    settings.PAYSTACK_API_URL = PAYSTACK
    settings.PAYMENT_PROVIDERS = {**settings.PAYMENT_PROVIDERS, "paystack": {"NG"}}
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("1000000")}


@pytest.fixture
def paystack_refund(host, guest, make_booking, make_payment) -> ProviderRefund:
    """A 400.00 NGN refund, queued, of a 1,000.00 booking paid through Paystack."""
    booking = make_booking(host, guest)
    TransactionService.process_booking_payment(booking, make_payment(booking, provider="paystack"))
    txn = TransactionService.process_refund(booking, Decimal("400.00"), "guest cancelled")
    return ProviderRefund.objects.select_related("payment", "transaction").get(transaction__reference=txn.reference)


def created(refund: ProviderRefund, status="pending"):
    body = recorded_json("paystack_refund_create.json")
    body["data"].update(status=status, merchant_note=refund.refund_reference)
    body["data"]["transaction"]["reference"] = refund.payment.reference
    return answer(200, body)


def listed(*notes: str):
    body = recorded_json("paystack_refund_list.json")
    template = body["data"][0]
    body["data"] = [{**template, "merchant_note": note, "id": 3018284 + i} for i, note in enumerate(notes)]
    return answer(200, body)


def event(name: str, refund: ProviderRefund, **data) -> bytes:
    body = recorded_json(name)
    body["data"].update(transaction_reference=refund.payment.reference, **data)
    return json.dumps(body).encode()


def post_event(raw: bytes, settings):
    return APIClient().post(
        "/api/payments/webhooks/paystack/",
        raw,
        content_type="application/json",
        HTTP_X_PAYSTACK_SIGNATURE=signature(settings.PAYSTACK_SECRET_KEY, raw),
    )


# --- the client ----------------------------------------------------------------------------------------


def test_a_refund_is_created_for_the_payments_reference_in_kobo_with_our_reference_as_the_note(paystack_refund):
    session, adapter = session_with({("POST", REFUND): created(paystack_refund)})

    result = Paystack().send_refund(paystack_refund, session=session)

    assert (result.status, result.provider_refund_id) == (PENDING, "3018284")
    [sent] = adapter.sent
    assert sent.headers["Authorization"] == "Bearer sk_test_refunds"
    assert sent.json() == {
        "transaction": paystack_refund.payment.reference,
        "amount": 40000,
        "currency": "NGN",
        "merchant_note": paystack_refund.refund_reference,
    }


def test_a_refusal_carries_paystacks_words_and_our_side_troubles_are_retried(paystack_refund):
    session, _ = session_with({("POST", REFUND): (400, recorded("paystack_refund_refused.json"), "application/json")})
    with pytest.raises(RefundRefusedError, match="Transaction has been fully reversed"):
        Paystack().send_refund(paystack_refund, session=session)

    session, _ = session_with({("POST", REFUND): answer(401, {"status": False, "message": "Invalid key"})})
    with pytest.raises(ProviderUnavailableError):
        Paystack().send_refund(paystack_refund, session=session)


def test_a_resend_adopts_the_refund_an_earlier_try_created_and_never_refunds_twice(paystack_refund):
    paystack_refund.last_error = "read timed out"  # an earlier try may have reached Paystack
    session, adapter = session_with(
        {
            ("GET", REFUND): listed("someone else's", paystack_refund.refund_reference),
            ("POST", REFUND): created(paystack_refund),
        }
    )

    result = Paystack().send_refund(paystack_refund, session=session)

    assert (result.status, result.provider_refund_id) == (PENDING, "3018285")
    assert [sent.method for sent in adapter.sent] == ["GET"]
    assert adapter.sent[0].query["transaction"] == [paystack_refund.payment.reference]


def test_a_resend_that_finds_nothing_creates_the_refund(paystack_refund):
    paystack_refund.last_error = "connection refused"
    session, adapter = session_with({("GET", REFUND): listed("another"), ("POST", REFUND): created(paystack_refund)})
    assert Paystack().send_refund(paystack_refund, session=session).status == PENDING
    assert [sent.method for sent in adapter.sent] == ["GET", "POST"]


def test_fetching_reads_the_refund_by_id_or_by_our_note(paystack_refund):
    paystack_refund.provider_refund_id = "3018284"
    session, adapter = session_with({("GET", f"{REFUND}/3018284"): ok("paystack_refund_fetch.json")})
    assert Paystack().fetch_refund(paystack_refund, session=session).status == SUCCESS

    paystack_refund.provider_refund_id = ""
    session, _ = session_with({("GET", REFUND): listed("another")})
    unknown = Paystack().fetch_refund(paystack_refund, session=session)
    assert (unknown.status, unknown.provider_refund_id) == (PENDING, "")
    assert paystack_refund.refund_reference in unknown.failure_reason


# --- webhooks --------------------------------------------------------------------------------------------


def test_refund_webhooks_are_read_as_refund_events(paystack_refund):
    processed = Paystack().parse(event("paystack_refund_processed_event.json", paystack_refund))
    assert processed.is_refund and processed.outcome == SUCCESS
    assert (processed.amount, processed.currency) == (Decimal("400.00"), "NGN")  # "40000" kobo, a string
    assert (processed.payment_reference, processed.refund_id) == (paystack_refund.payment.reference, "132013318360")
    assert processed.event_id == "refund.processed:132013318360"

    failed = Paystack().parse(event("paystack_refund_failed_event.json", paystack_refund))
    assert failed.outcome == FAILED and failed.amount == Decimal("400.00")  # 40000 kobo, a number
    assert failed.failure_reason == "Paystack reported the refund failed"

    body = recorded_json("paystack_refund_processed_event.json")
    body.update(event="refund.pending")
    body["data"].update(status="pending", refund_reference=None, merchant_note=paystack_refund.refund_reference)
    pending = Paystack().parse(json.dumps(body).encode())
    assert pending.outcome == IGNORED and pending.refund_reference == paystack_refund.refund_reference


# --- the engine, end to end on recorded answers -------------------------------------------------------------


def test_a_paystack_refund_is_sent_by_the_job_and_settled_by_the_signed_callback(
    settings, provider_http, paystack_refund
):
    provider_http.answers[("POST", REFUND)] = created(paystack_refund)

    assert run_ready_jobs() == 1
    sent = ProviderRefund.objects.get(pk=paystack_refund.pk)
    assert (sent.status, sent.provider_refund_id) == (Status.PROCESSING, "3018284")

    raw = event("paystack_refund_processed_event.json", paystack_refund)
    assert post_event(raw, settings).status_code == 200
    assert post_event(raw, settings).status_code == 200  # a redelivery moves nothing

    done = ProviderRefund.objects.get(pk=paystack_refund.pk)
    assert done.status == Status.SUCCEEDED
    inbox = WebhookEvent.objects.get(provider="paystack")
    assert (inbox.outcome, inbox.refund_id) == (WebhookEvent.Outcome.APPLIED, done.pk)
    call_command("check_ledger", stdout=StringIO())


def test_a_timed_out_send_is_retried_by_adopting_the_refund_paystack_did_create(provider_http, paystack_refund):
    provider_http.answers[("POST", REFUND)] = requests.Timeout("read timed out")
    assert run_ready_jobs() == 1
    waiting = ProviderRefund.objects.get(pk=paystack_refund.pk)
    assert waiting.status == Status.QUEUED and "not available" in waiting.last_error

    # The POST had reached Paystack after all: the retry finds it by our note and sends nothing.
    provider_http.answers[("GET", REFUND)] = listed(paystack_refund.refund_reference)
    bring_retries_forward()
    assert run_ready_jobs() == 1

    adopted = ProviderRefund.objects.get(pk=paystack_refund.pk)
    assert (adopted.status, adopted.provider_refund_id, adopted.last_error) == (Status.PROCESSING, "3018284", "")
    assert [sent.method for sent in provider_http.sent] == ["POST", "GET"]
