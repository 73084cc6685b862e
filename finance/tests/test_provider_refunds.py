"""Refunds through Flutterwave, Stripe and M-Pesa, against recorded answers in the providers' documented shapes.

What leaves the building (URL, method, key, amount units, the refund reference as idempotency
key or note), how each answer is read (accepted, completed, failed, refused, ours, the
network's), and each refund callback parsed into our terms. The refund engine that calls these
(finance.refunds) is tested with it; here only the provider side.
"""

import hashlib
import hmac
import json
import time
from decimal import Decimal

import pytest
import requests
from rest_framework.test import APIClient

from finance.models import Payment, ProviderRefund, WebhookEvent
from finance.providers.base import (
    FAILED,
    IGNORED,
    PENDING,
    SUCCESS,
    ProviderUnavailableError,
    RefundRefusedError,
)
from finance.providers.flutterwave import Flutterwave
from finance.providers.mpesa import Mpesa
from finance.providers.stripe import Stripe
from finance.services import TransactionService
from testing.recorded_http import answer, ok, recorded, recorded_json, session_with

FLW = "https://api.flutterwave.com/v3"
STRIPE_REFUNDS = "https://api.stripe.com/v1/refunds"
DARAJA = "https://api.safaricom.co.ke"
TOKEN_URL = f"{DARAJA}/oauth/v1/generate"
REVERSAL_URL = f"{DARAJA}/mpesa/reversal/v1/request"
STATUS_URL = f"{DARAJA}/mpesa/transactionstatus/v1/query"
CALLBACK_URL = "https://stayafrica.example/api/payments/webhooks/mpesa/?token=cb-secret"


@pytest.fixture(autouse=True)
def keys(settings):
    settings.FLUTTERWAVE_SECRET_KEY = "FLWSECK_TEST-refunds"
    settings.STRIPE_SECRET_KEY = "sk_test_refunds"
    settings.STRIPE_WEBHOOK_SECRET = "whsec_refunds"
    settings.STRIPE_WEBHOOK_SECRET_PREVIOUS = ""
    settings.PUBLIC_BASE_URL = "https://stayafrica.example"
    settings.SANDBOX_PAYMENTS_ENABLED = False
    settings.MPESA_CALLBACK_TOKEN = "cb-secret"
    settings.MPESA_CALLBACK_TOKEN_PREVIOUS = ""
    settings.MPESA_CONSUMER_KEY, settings.MPESA_CONSUMER_SECRET = "ck-recorded", "cs-recorded"
    settings.MPESA_INITIATOR_NAME = "stayafrica_api"
    settings.MPESA_SECURITY_CREDENTIAL = "encrypted-initiator-password=="
    settings.MPESA_SHORTCODE = "174379"


@pytest.fixture
def make_refund(host, guest, make_booking):
    """A paid payment at `provider` and its refund row, as the refund engine hands them over."""

    def make(provider, *, currency, country, amount, total="3000.00", provider_reference=None, **refund):
        booking = make_booking(host, guest, total=total, commission="0.00", currency=currency, country=country)
        payment = Payment.objects.create(
            booking=booking,
            provider=provider,
            amount=booking.grand_total,
            currency=currency,
            status=Payment.Status.SUCCESS,
            provider_reference=provider_reference,
        )
        # Any ledger transaction names the refund; the engine's is process_refund's.
        wallet = TransactionService.create_wallet(host, currency)
        txn = TransactionService.credit_wallet(wallet, Decimal("1"))
        row = ProviderRefund(
            transaction=txn, payment=payment, provider=provider, amount=Decimal(amount), currency=currency
        )
        row.attempt = refund.pop("attempt", 1)
        row.refund_reference = row.stable_refund_reference()
        for name, value in refund.items():
            setattr(row, name, value)
        row.save()
        return row

    return make


def flw_refund(status: str, **changes) -> tuple:
    body = recorded_json("flutterwave_refund_created.json")
    body["data"].update(status=status, **changes)
    return answer(200, body)


# --- Flutterwave: sending --------------------------------------------------------------------------


@pytest.mark.django_db
def test_flutterwave_refunds_the_charge_by_its_transaction_id_in_major_units(make_refund):
    refund = make_refund("flutterwave", currency="NGN", country="NG", amount="1500.50", provider_reference="908790")
    session, adapter = session_with(
        {("POST", f"{FLW}/transactions/908790/refund"): ok("flutterwave_refund_created.json")}
    )

    result = Flutterwave().send_refund(refund, session=session)

    assert (result.status, result.provider_refund_id) == (SUCCESS, "75923")
    [sent] = adapter.sent
    assert (sent.method, sent.path_url) == ("POST", f"{FLW}/transactions/908790/refund")
    assert sent.headers["Authorization"] == "Bearer FLWSECK_TEST-refunds"
    assert sent.json() == {"amount": "1500.50", "comments": f"StayAfrica refund {refund.refund_reference}"}
    assert sent.timeout == (3.05, 10)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "expected"),
    [("completed", SUCCESS), ("pending", PENDING), ("processing", PENDING), ("failed", FAILED)],
)
def test_flutterwave_refund_statuses_read_as_ours(make_refund, status, expected):
    refund = make_refund("flutterwave", currency="NGN", country="NG", amount="500.00", provider_reference="908790")
    session, _ = session_with({("POST", f"{FLW}/transactions/908790/refund"): flw_refund(status)})

    result = Flutterwave().send_refund(refund, session=session)

    assert (result.status, result.provider_refund_id) == (expected, "75923")
    if expected == FAILED:
        assert result.failure_reason == "Flutterwave reported the refund failed"


@pytest.mark.django_db
def test_flutterwave_asks_for_the_charge_id_when_the_payment_does_not_keep_it(make_refund):
    refund = make_refund("flutterwave", currency="UGX", country="UG", amount="1000", total="1000")
    verify = f"{FLW}/transactions/verify_by_reference"
    session, adapter = session_with(
        {
            ("GET", verify): ok("flutterwave_verify_transaction.json"),
            ("POST", f"{FLW}/transactions/4975363/refund"): ok("flutterwave_refund_created.json"),
        }
    )

    assert Flutterwave().send_refund(refund, session=session).status == SUCCESS
    lookup, create = adapter.sent
    assert lookup.query == {"tx_ref": [refund.payment.reference]}
    assert create.json()["amount"] == "1000"  # UGX has no minor unit


@pytest.mark.django_db
def test_flutterwave_refusing_the_refund_itself_is_refused_with_its_words(make_refund):
    refund = make_refund("flutterwave", currency="NGN", country="NG", amount="500.00", provider_reference="908790")
    session, _ = session_with(
        {
            ("POST", f"{FLW}/transactions/908790/refund"): (
                400,
                recorded("flutterwave_refund_already_refunded.json"),
                "application/json",
            )
        }
    )

    with pytest.raises(RefundRefusedError) as refused:
        Flutterwave().send_refund(refund, session=session)

    assert str(refused.value) == "Flutterwave refused the refund: Transaction has been fully refunded"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "failing",
    [
        pytest.param((401, b'{"status": "error", "message": "Invalid authorization key", "data": null}'), id="401"),
        pytest.param((400, b'{"status": "error", "message": "Insufficient balance", "data": null}'), id="our-balance"),
        pytest.param((502, b"<html>Bad gateway</html>"), id="5xx"),
        pytest.param(requests.Timeout("read timed out"), id="timeout"),
    ],
)
def test_flutterwave_trouble_on_our_side_or_theirs_is_unavailable(make_refund, failing):
    refund = make_refund("flutterwave", currency="NGN", country="NG", amount="500.00", provider_reference="908790")
    reply = failing if isinstance(failing, Exception) else (*failing, "application/json")
    session, _ = session_with({("POST", f"{FLW}/transactions/908790/refund"): reply})

    with pytest.raises(ProviderUnavailableError):
        Flutterwave().send_refund(refund, session=session)


# --- Flutterwave: asking ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_flutterwave_fetches_the_refund_by_its_id(make_refund):
    refund = make_refund(
        "flutterwave",
        currency="NGN",
        country="NG",
        amount="500.00",
        provider_reference="908790",
        provider_refund_id="75923",
    )
    session, adapter = session_with({("GET", f"{FLW}/refunds/75923"): ok("flutterwave_refund_fetched.json")})

    assert Flutterwave().fetch_refund(refund, session=session).status == PENDING
    assert adapter.sent[0].headers["Authorization"] == "Bearer FLWSECK_TEST-refunds"

    completed = recorded_json("flutterwave_refund_fetched.json")
    completed["data"]["status"] = "completed"
    session, _ = session_with({("GET", f"{FLW}/refunds/75923"): answer(200, completed)})
    assert Flutterwave().fetch_refund(refund, session=session).status == SUCCESS


@pytest.mark.django_db
def test_flutterwave_refund_it_never_named_stays_pending_and_asks_nothing(make_refund):
    refund = make_refund("flutterwave", currency="NGN", country="NG", amount="500.00", provider_reference="908790")
    session, adapter = session_with({})

    result = Flutterwave().fetch_refund(refund, session=session)

    assert result.status == PENDING and "dashboard" in result.failure_reason
    assert adapter.sent == []


@pytest.mark.django_db
def test_flutterwave_fetch_5xx_is_unavailable(make_refund):
    refund = make_refund(
        "flutterwave",
        currency="NGN",
        country="NG",
        amount="500.00",
        provider_reference="908790",
        provider_refund_id="75923",
    )
    session, _ = session_with({("GET", f"{FLW}/refunds/75923"): (503, b"down", "text/plain")})

    with pytest.raises(ProviderUnavailableError):
        Flutterwave().fetch_refund(refund, session=session)


def test_flutterwave_documents_no_refund_webhook_so_other_events_stay_ignored():
    raw = json.dumps({"event": "refund.completed", "data": {"id": 75923, "status": "completed"}}).encode()
    event = Flutterwave().parse(raw)
    assert event.outcome == IGNORED and not event.is_refund


# --- Stripe: sending ----------------------------------------------------------------------------


def stripe_refund(status: str, **changes) -> tuple:
    body = recorded_json("stripe_refund.json")
    body.update(status=status, **changes)
    return answer(200, body)


@pytest.mark.django_db
def test_stripe_refund_is_form_encoded_in_minor_units_under_the_refund_reference(make_refund):
    refund = make_refund(
        "stripe", currency="USD", country="US", amount="1500.50", provider_reference="pi_3MtwBwLkdIwHu7ix28a3tqPa"
    )
    session, adapter = session_with({("POST", STRIPE_REFUNDS): ok("stripe_refund.json")})

    result = Stripe().send_refund(refund, session=session)

    assert (result.status, result.provider_refund_id) == (SUCCESS, "re_3MtwBwLkdIwHu7ix28a3tqPa")
    [sent] = adapter.sent
    assert (sent.method, sent.path_url) == ("POST", STRIPE_REFUNDS)
    assert sent.headers["Idempotency-Key"] == refund.refund_reference
    assert sent.headers["Authorization"].startswith("Basic ")  # the secret key as the username
    assert sent.form() == {
        "payment_intent": "pi_3MtwBwLkdIwHu7ix28a3tqPa",
        "amount": "150050",
        "metadata[refund_reference]": refund.refund_reference,
    }


@pytest.mark.django_db
def test_stripe_second_attempt_goes_under_its_own_key(make_refund):
    refund = make_refund("stripe", currency="USD", country="US", amount="10.00", provider_reference="pi_1", attempt=2)
    session, adapter = session_with({("POST", STRIPE_REFUNDS): ok("stripe_refund.json")})

    Stripe().send_refund(refund, session=session)

    assert adapter.sent[0].headers["Idempotency-Key"] == refund.refund_reference
    assert refund.refund_reference.endswith("-2")


@pytest.mark.django_db
def test_stripe_base_url_comes_from_settings(make_refund, settings):
    settings.STRIPE_API_URL = "http://127.0.0.1:9/v1"
    refund = make_refund("stripe", currency="USD", country="US", amount="10.00", provider_reference="pi_1")
    session, adapter = session_with({("POST", "http://127.0.0.1:9/v1/refunds"): ok("stripe_refund.json")})

    assert Stripe().send_refund(refund, session=session).status == SUCCESS


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "failure_reason", "expected", "reason"),
    [
        ("succeeded", None, SUCCESS, ""),
        ("pending", None, PENDING, ""),
        ("requires_action", None, PENDING, ""),
        ("failed", "expired_or_canceled_card", FAILED, "Stripe reported the refund failed: expired or canceled card"),
        ("canceled", None, FAILED, "Stripe cancelled the refund"),
    ],
)
def test_stripe_refund_statuses_read_as_ours(make_refund, status, failure_reason, expected, reason):
    refund = make_refund("stripe", currency="USD", country="US", amount="10.00", provider_reference="pi_1")
    session, _ = session_with({("POST", STRIPE_REFUNDS): stripe_refund(status, failure_reason=failure_reason)})

    result = Stripe().send_refund(refund, session=session)

    assert (result.status, result.failure_reason) == (expected, reason)


@pytest.mark.django_db
def test_stripe_refusing_the_refund_itself_is_refused_with_its_words(make_refund):
    refund = make_refund("stripe", currency="USD", country="US", amount="10.00", provider_reference="pi_1")
    session, _ = session_with(
        {("POST", STRIPE_REFUNDS): (400, recorded("stripe_refund_already_refunded.json"), "application/json")}
    )

    with pytest.raises(RefundRefusedError) as refused:
        Stripe().send_refund(refund, session=session)

    assert (
        str(refused.value) == "Stripe refused the refund: Charge ch_3MtwBwLkdIwHu7ix28IwXNKu has already been refunded."
    )


def stripe_error(code: str, error_type="invalid_request_error") -> bytes:
    return json.dumps({"error": {"code": code, "type": error_type, "message": f"{code} said Stripe"}}).encode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "failing",
    [
        pytest.param((401, recorded("stripe_invalid_key.json")), id="our-key"),
        pytest.param((400, stripe_error("balance_insufficient")), id="our-balance"),
        pytest.param((400, stripe_error("", "idempotency_error")), id="key-reused"),
        pytest.param((429, stripe_error("rate_limit", "rate_limit_error")), id="429"),
        pytest.param((500, stripe_error("", "api_error")), id="5xx"),
        pytest.param(requests.ConnectionError("connection refused"), id="unreachable"),
    ],
)
def test_stripe_trouble_on_our_side_or_theirs_is_unavailable(make_refund, failing):
    refund = make_refund("stripe", currency="USD", country="US", amount="10.00", provider_reference="pi_1")
    reply = failing if isinstance(failing, Exception) else (*failing, "application/json")
    session, _ = session_with({("POST", STRIPE_REFUNDS): reply})

    with pytest.raises(ProviderUnavailableError):
        Stripe().send_refund(refund, session=session)


@pytest.mark.django_db
def test_stripe_fetches_the_refund_by_its_id(make_refund):
    refund = make_refund(
        "stripe", currency="USD", country="US", amount="10.00", provider_reference="pi_1", provider_refund_id="re_1"
    )
    session, adapter = session_with({("GET", f"{STRIPE_REFUNDS}/re_1"): stripe_refund("pending")})

    assert Stripe().fetch_refund(refund, session=session).status == PENDING
    assert adapter.sent[0].method == "GET"


# --- Stripe: refund webhooks --------------------------------------------------------------------------


def stripe_signed(payload: dict) -> dict:
    raw = json.dumps(payload).encode()
    timestamp = int(time.time())
    signature = hmac.new(b"whsec_refunds", f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    return {"raw": raw, "headers": {"stripe-signature": f"t={timestamp},v1={signature}"}}


@pytest.mark.parametrize(
    ("event_type", "status", "outcome"),
    [
        ("refund.failed", "failed", FAILED),
        ("refund.updated", "succeeded", SUCCESS),
        ("refund.updated", "canceled", FAILED),
        ("charge.refund.updated", "succeeded", SUCCESS),
        ("refund.updated", "requires_action", IGNORED),
        ("refund.updated", "pending", IGNORED),
    ],
)
def test_stripe_refund_webhooks_read_as_refund_events(event_type, status, outcome):
    payload = recorded_json("stripe_refund_updated_event.json")
    del payload["_doc"]
    payload["type"] = event_type
    payload["data"]["object"]["status"] = status
    signed = stripe_signed(payload)
    Stripe().verify(signed["raw"], signed["headers"])

    event = Stripe().parse(signed["raw"])

    assert event.is_refund and not event.is_transfer
    assert (event.event_id, event.event_type, event.outcome) == ("evt_1NG8Du2eZvKYlo2CUI79vXWy", event_type, outcome)
    assert (event.refund_id, event.refund_reference) == ("re_3MtwBwLkdIwHu7ix28a3tqPa", "refund-txn-recorded")
    assert (event.amount, event.currency) == (Decimal("1500.50"), "USD")
    if outcome == FAILED and status == "failed":
        assert event.failure_reason == "Stripe reported the refund failed: expired or canceled card"


def test_stripe_payment_webhooks_are_not_refund_events():
    payload = {"id": "evt_2", "type": "charge.refunded", "data": {"object": {"id": "ch_1"}}}
    event = Stripe().parse(json.dumps(payload).encode())
    assert event.outcome == IGNORED and not event.is_refund


# --- M-Pesa: reversal -------------------------------------------------------------------------------


def stk_callback(checkout_id: str, receipt: str, amount: int) -> dict:
    items = [
        {"Name": "Amount", "Value": amount},
        {"Name": "MpesaReceiptNumber", "Value": receipt},
        {"Name": "PhoneNumber", "Value": 254708374149},
    ]
    return {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": "29115-34620561-1",
                "CheckoutRequestID": checkout_id,
                "ResultCode": 0,
                "ResultDesc": "The service request is processed successfully.",
                "CallbackMetadata": {"Item": items},
            }
        }
    }


def mpesa_post(payload) -> int:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    url = "/api/payments/webhooks/mpesa/?token=cb-secret"
    return APIClient().generic("POST", url, raw, content_type="application/json").status_code


@pytest.fixture
def paid_by_mpesa(host, guest, make_booking):
    """A KES 3,000 M-Pesa payment whose STK callback came in through the webhook (receipt SGC7DDA1BX)."""
    booking = make_booking(host, guest, total="3000.00", commission="300.00", currency="KES", country="KE")
    payment = Payment.objects.create(
        booking=booking, provider="mpesa", amount=Decimal("3000.00"), currency="KES", provider_reference="ws_CO_9"
    )
    assert mpesa_post(stk_callback("ws_CO_9", "SGC7DDA1BX", 3000)) == 200
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCESS
    return payment


def mpesa_refund_for(payment, amount="1500.00", **fields) -> ProviderRefund:
    wallet = TransactionService.create_wallet(payment.booking.guest, "KES")
    txn = TransactionService.credit_wallet(wallet, Decimal("1"))
    refund = ProviderRefund(transaction=txn, payment=payment, provider="mpesa", amount=Decimal(amount), currency="KES")
    refund.refund_reference = refund.stable_refund_reference()
    for name, value in fields.items():
        setattr(refund, name, value)
    refund.save()
    return refund


def daraja(**routes) -> tuple:
    answers = {("GET", TOKEN_URL): ok("mpesa_access_token.json")}
    answers.update({("POST", url): reply for url, reply in routes.items()})
    return session_with(answers)


@pytest.mark.django_db
def test_mpesa_reverses_the_payment_by_its_receipt_with_the_refund_reference_as_occasion(paid_by_mpesa):
    refund = mpesa_refund_for(paid_by_mpesa, "1500.00")
    session, adapter = daraja(**{REVERSAL_URL: ok("mpesa_reversal_accepted.json")})

    result = Mpesa().send_refund(refund, session=session)

    assert (result.status, result.provider_refund_id) == (PENDING, "f1e2-4b95-a71d-b30d3cdbb7a7942864")
    sent = next(s for s in adapter.sent if s.path_url == REVERSAL_URL)
    access_token = recorded_json("mpesa_access_token.json")["access_token"]
    assert sent.headers["Authorization"] == f"Bearer {access_token}"
    assert sent.json() == {
        "Initiator": "stayafrica_api",
        "SecurityCredential": "encrypted-initiator-password==",
        "CommandID": "TransactionReversal",
        "TransactionID": "SGC7DDA1BX",
        "Amount": 1500,
        "ReceiverParty": "174379",
        "RecieverIdentifierType": "11",
        "ResultURL": CALLBACK_URL,
        "QueueTimeOutURL": CALLBACK_URL,
        "Remarks": f"StayAfrica refund {paid_by_mpesa.reference}",
        "Occasion": refund.refund_reference,
    }


@pytest.mark.django_db
def test_mpesa_payment_without_a_receipt_on_record_is_refused_before_anything_is_sent(host, guest, make_booking):
    booking = make_booking(host, guest, total="1000.00", commission="0.00", currency="KES", country="KE")
    payment = Payment.objects.create(
        booking=booking, provider="mpesa", amount=Decimal("1000.00"), currency="KES", status=Payment.Status.SUCCESS
    )
    refund = mpesa_refund_for(payment, "1000.00")
    session, adapter = daraja()

    with pytest.raises(RefundRefusedError, match="no M-Pesa receipt on record"):
        Mpesa().send_refund(refund, session=session)
    assert adapter.sent == []


@pytest.mark.django_db
def test_mpesa_refund_with_cents_is_refused_not_rounded(paid_by_mpesa):
    refund = mpesa_refund_for(paid_by_mpesa, "1500.50")
    session, adapter = daraja()

    with pytest.raises(RefundRefusedError, match="whole KES or TZS"):
        Mpesa().send_refund(refund, session=session)
    assert adapter.sent == []


@pytest.mark.django_db
def test_mpesa_refusal_naming_the_transaction_is_refused_with_darajas_words(paid_by_mpesa):
    refund = mpesa_refund_for(paid_by_mpesa)
    error = {
        "requestId": "11728-2929992-1",
        "errorCode": "400.002.02",
        "errorMessage": "Bad Request - Invalid TransactionID",
    }
    session, _ = daraja(**{REVERSAL_URL: answer(400, error)})

    with pytest.raises(RefundRefusedError) as refused:
        Mpesa().send_refund(refund, session=session)

    assert str(refused.value) == "M-Pesa refused the reversal of SGC7DDA1BX: Bad Request - Invalid TransactionID"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "failing",
    [
        pytest.param(
            answer(400, {"errorCode": "400.002.02", "errorMessage": "Bad Request - Invalid Initiator"}), id="ours"
        ),
        pytest.param(answer(401, {"errorCode": "404.001.04", "errorMessage": "Invalid Access Token"}), id="401"),
        pytest.param((500, recorded("mpesa_b2c_server_error.json"), "application/json"), id="5xx"),
        pytest.param(requests.ReadTimeout("read timed out"), id="timeout"),
    ],
)
def test_mpesa_trouble_on_our_side_or_theirs_is_unavailable(paid_by_mpesa, failing):
    refund = mpesa_refund_for(paid_by_mpesa)
    session, _ = daraja(**{REVERSAL_URL: failing})

    with pytest.raises(ProviderUnavailableError):
        Mpesa().send_refund(refund, session=session)


@pytest.mark.django_db
def test_mpesa_fetch_asks_the_transaction_status_of_the_reversal_and_waits_for_the_callback(paid_by_mpesa):
    refund = mpesa_refund_for(paid_by_mpesa, provider_refund_id="f1e2-4b95-a71d-b30d3cdbb7a7942864")
    session, adapter = daraja(**{STATUS_URL: ok("mpesa_transaction_status_accepted.json")})

    result = Mpesa().fetch_refund(refund, session=session)

    assert result.status == PENDING
    body = next(s for s in adapter.sent if s.path_url == STATUS_URL).json()
    assert body["CommandID"] == "TransactionStatusQuery"
    assert body["OriginalConversationID"] == "f1e2-4b95-a71d-b30d3cdbb7a7942864"
    assert body["Occasion"] == f"refund-status:{refund.refund_reference}"
    assert body["ResultURL"] == CALLBACK_URL


# --- M-Pesa: reversal callbacks -----------------------------------------------------------------------


def reversal_callback(name: str, **changes) -> bytes:
    payload = recorded_json(name)
    del payload["_doc"]
    payload["Result"].update(changes)
    return json.dumps(payload).encode()


def test_mpesa_reversal_success_reads_as_a_refund_settled_with_its_amount():
    event = Mpesa().parse(reversal_callback("mpesa_reversal_result_success.json"))

    assert event.is_refund and not event.is_transfer
    assert (event.event_type, event.outcome) == ("reversal_result.success", SUCCESS)
    assert event.refund_id == "f1e2-4b95-a71d-b30d3cdbb7a7942864"
    assert (event.provider_reference, event.raw_amount) == ("SGC7DDF9QX", 1500)


def test_mpesa_reversal_result_echoing_our_occasion_names_the_refund_reference():
    payload = recorded_json("mpesa_reversal_result_success.json")
    del payload["_doc"]
    payload["Result"]["ReferenceData"] = {"ReferenceItem": {"Key": "Occasion", "Value": "refund-txn-1"}}
    payload["Result"]["ResultParameters"]["ResultParameter"] = [{"Key": "Amount", "Value": 1500}]

    event = Mpesa().parse(json.dumps(payload).encode())

    assert (event.refund_reference, event.outcome) == ("refund-txn-1", SUCCESS)


def test_mpesa_reversal_failure_reads_as_failed_with_darajas_words():
    event = Mpesa().parse(reversal_callback("mpesa_reversal_result_failed.json"))

    assert event.is_refund
    assert (event.outcome, event.failure_reason) == (FAILED, "M-Pesa: The OriginalTransactionID is invalid.")


def test_mpesa_already_reversed_settles_nothing_for_staff_to_check():
    event = Mpesa().parse(reversal_callback("mpesa_reversal_result_already_reversed.json"))

    assert (event.event_type, event.outcome) == ("reversal_result.already_reversed", IGNORED)
    assert "already been reversed" in event.failure_reason


def test_mpesa_reversal_queue_timeout_settles_nothing():
    event = Mpesa().parse(
        reversal_callback("mpesa_reversal_result_failed.json", ResultType=1, ResultCode=1, ResultDesc="timed out")
    )
    assert event.is_refund and event.outcome == IGNORED


@pytest.mark.parametrize(("transaction_status", "outcome"), [("Completed", SUCCESS), ("Pending", IGNORED)])
def test_mpesa_refund_status_result_names_the_refund(transaction_status, outcome):
    payload = recorded_json("mpesa_transaction_status_result.json")
    del payload["_doc"]
    result = payload["Result"]
    result["ReferenceData"]["ReferenceItem"]["Value"] = "refund-status:refund-txn-1"
    for item in result["ResultParameters"]["ResultParameter"]:
        if item["Key"] == "TransactionStatus":
            item["Value"] = transaction_status

    event = Mpesa().parse(json.dumps(payload).encode())

    assert event.is_refund and not event.is_transfer
    assert (event.refund_reference, event.outcome) == ("refund-txn-1", outcome)


def test_mpesa_b2c_results_still_read_as_payouts():
    for name in (
        "mpesa_b2c_result_success.json",
        "mpesa_b2c_result_initiator_invalid.json",
        "mpesa_b2c_queue_timeout.json",
    ):
        event = Mpesa().parse(reversal_callback(name))
        assert event.is_transfer and not event.is_refund, name
    status = Mpesa().parse(reversal_callback("mpesa_transaction_status_result.json"))
    assert status.is_transfer and not status.is_refund


@pytest.mark.django_db
def test_mpesa_reversal_callback_reaches_the_refund_engine_through_the_webhook(paid_by_mpesa, monkeypatch):
    """The callback URL Daraja posts to hands a reversal's result to finance.refunds, not to payouts."""
    seen = []

    def apply_refund_event(inbox, event, *, actor):
        seen.append(event)
        return WebhookEvent.Outcome.APPLIED, "refund settled"

    monkeypatch.setattr("finance.refunds.apply_refund_event", apply_refund_event)

    assert mpesa_post(reversal_callback("mpesa_reversal_result_success.json")) == 200

    [event] = seen
    assert event.refund_id == "f1e2-4b95-a71d-b30d3cdbb7a7942864"
    inbox = WebhookEvent.objects.get(event_type="reversal_result.success")
    assert inbox.outcome == WebhookEvent.Outcome.APPLIED
