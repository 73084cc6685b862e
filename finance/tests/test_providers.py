"""Outbound HTTP to the payment providers, against recorded answers in the providers' documented shapes.

No network: a `requests` transport adapter, mounted on the session handed to the client, answers
from finance/tests/recorded/*.json and records every request we send, so the tests check what
leaves the building (URL, auth header, amount units, encoding) as much as how answers are read.
"""

import base64
import hashlib
import hmac
import json

import pytest
import requests
from rest_framework.test import APIClient

from finance.api.tokens import issue_api_token
from finance.models import Booking, LedgerAudit, Payment, WebhookEvent
from finance.providers import base as providers_base
from finance.providers.base import ProviderUnavailableError
from finance.providers.flutterwave import Flutterwave, FlutterwaveClient
from finance.providers.mpesa import Mpesa, MpesaClient
from finance.providers.paystack import Paystack, PaystackClient
from finance.providers.stripe import Stripe, StripeClient
from testing.recorded_http import ok, recorded, session_with

PAYSTACK_INIT = "https://api.paystack.co/transaction/initialize"
FLUTTERWAVE_PAYMENTS = "https://api.flutterwave.com/v3/payments"
STRIPE_INTENTS = "https://api.stripe.com/v1/payment_intents"
MPESA_TOKEN = "https://api.safaricom.co.ke/oauth/v1/generate"
MPESA_STK = "https://api.safaricom.co.ke/mpesa/stkpush/v1/processrequest"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- payments to check out ---------------------------------------------------------------------------


@pytest.fixture
def payment_for(host, guest, make_booking, make_payment):
    def make(provider: str, *, total: str, currency: str, country: str) -> Payment:
        booking = make_booking(host, guest, total=total, commission="0.00", currency=currency, country=country)
        return make_payment(booking, provider=provider)

    return make


# --- Paystack ------------------------------------------------------------------------------------------


def test_paystack_initialize_sends_minor_units_with_bearer_secret():
    session, adapter = session_with({("POST", PAYSTACK_INIT): ok("paystack_initialize.json")})
    client = PaystackClient("sk_test_recorded", session=session)

    data = client.initialize(reference="PAY-RECORDED0000001", amount_minor=150000, currency="NGN", email="g@x.test")

    assert data == json.loads(recorded("paystack_initialize.json"))["data"]
    [sent] = adapter.sent
    assert (sent.method, sent.url) == ("POST", PAYSTACK_INIT)
    assert sent.headers["Authorization"] == "Bearer sk_test_recorded"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.json() == {"reference": "PAY-RECORDED0000001", "amount": 150000, "currency": "NGN", "email": "g@x.test"}
    assert sent.timeout == (3.05, 10)


@pytest.mark.django_db
def test_paystack_checkout(payment_for, settings):
    settings.PAYSTACK_SECRET_KEY = "sk_test_from_settings"
    payment = payment_for("paystack", total="1500.50", currency="NGN", country="NG")
    session, adapter = session_with({("POST", PAYSTACK_INIT): ok("paystack_initialize.json")})

    checkout = Paystack().checkout(payment, email="guest@example.com", session=session)

    assert checkout == {
        "authorization_url": "https://checkout.paystack.com/0peioxfhpn4mt2q",
        "access_code": "0peioxfhpn4mt2q",
    }
    [sent] = adapter.sent
    assert sent.headers["Authorization"] == "Bearer sk_test_from_settings"
    body = sent.json()
    assert body["amount"] == 150050 and isinstance(body["amount"], int)  # kobo
    assert body["reference"] == payment.reference
    assert (body["currency"], body["email"]) == ("NGN", "guest@example.com")


# --- Flutterwave ----------------------------------------------------------------------------------------


def test_flutterwave_create_payment_sends_major_unit_string():
    session, adapter = session_with({("POST", FLUTTERWAVE_PAYMENTS): ok("flutterwave_create_payment.json")})
    client = FlutterwaveClient("FLWSECK_TEST-recorded", session=session)

    data = client.create_payment(
        tx_ref="PAY-1", amount="1500.50", currency="KES", email="g@x.test", redirect_url="https://x.test/statement/"
    )

    assert data == {"link": "https://checkout.flutterwave.com/v3/hosted/pay/f524c1196ffda5556341"}
    [sent] = adapter.sent
    assert (sent.method, sent.url) == ("POST", FLUTTERWAVE_PAYMENTS)
    assert sent.headers["Authorization"] == "Bearer FLWSECK_TEST-recorded"
    assert sent.json() == {
        "tx_ref": "PAY-1",
        "amount": "1500.50",
        "currency": "KES",
        "redirect_url": "https://x.test/statement/",
        "customer": {"email": "g@x.test"},
    }


@pytest.mark.django_db
def test_flutterwave_checkout(payment_for, settings):
    settings.FLUTTERWAVE_SECRET_KEY = "FLWSECK_TEST-settings"
    settings.PUBLIC_BASE_URL = "https://stayafrica.example"
    payment = payment_for("flutterwave", total="1500.50", currency="GHS", country="GH")
    session, adapter = session_with({("POST", FLUTTERWAVE_PAYMENTS): ok("flutterwave_create_payment.json")})

    checkout = Flutterwave().checkout(payment, email="guest@example.com", session=session)

    assert checkout == {"checkout_url": "https://checkout.flutterwave.com/v3/hosted/pay/f524c1196ffda5556341"}
    [sent] = adapter.sent
    body = sent.json()
    assert sent.headers["Authorization"] == "Bearer FLWSECK_TEST-settings"
    assert body["amount"] == "1500.50"  # major units, as a string with the currency's precision
    assert (body["tx_ref"], body["currency"]) == (payment.reference, "GHS")
    assert body["redirect_url"] == "https://stayafrica.example/statement/"
    assert body["customer"] == {"email": "guest@example.com"}


# --- Stripe -----------------------------------------------------------------------------------------------


def test_stripe_create_payment_intent_is_form_encoded_with_basic_auth():
    session, adapter = session_with({("POST", STRIPE_INTENTS): ok("stripe_payment_intent.json")})
    client = StripeClient("sk_test_recorded", session=session)

    intent = client.create_payment_intent(amount_minor=150000, currency="USD", payment_reference="PAY-RECORDED0000001")

    assert intent["id"] == "pi_3MtwBwLkdIwHu7ix28a3tqPa"
    assert intent["object"] == "payment_intent"
    [sent] = adapter.sent
    assert (sent.method, sent.url) == ("POST", STRIPE_INTENTS)
    assert sent.headers["Authorization"] == basic("sk_test_recorded", "")
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert sent.form() == {"amount": "150000", "currency": "usd", "metadata[payment_reference]": "PAY-RECORDED0000001"}
    assert b"metadata%5Bpayment_reference%5D=PAY-RECORDED0000001" in sent.body


@pytest.mark.django_db
def test_stripe_checkout(payment_for, settings):
    settings.STRIPE_SECRET_KEY = "sk_test_settings"
    payment = payment_for("stripe", total="1500.00", currency="USD", country="US")
    session, adapter = session_with({("POST", STRIPE_INTENTS): ok("stripe_payment_intent.json")})

    checkout = Stripe().checkout(payment, email="guest@example.com", session=session)

    assert checkout == {
        "payment_intent": "pi_3MtwBwLkdIwHu7ix28a3tqPa",
        "client_secret": "pi_3MtwBwLkdIwHu7ix28a3tqPa_secret_YrKJUKribcBjcG8HVhfZluoGH",
        "provider_reference": "pi_3MtwBwLkdIwHu7ix28a3tqPa",
    }
    [sent] = adapter.sent
    assert sent.headers["Authorization"] == basic("sk_test_settings", "")
    assert sent.form() == {"amount": "150000", "currency": "usd", "metadata[payment_reference]": payment.reference}


# --- M-Pesa -----------------------------------------------------------------------------------------------


MPESA_ANSWERS = {("GET", MPESA_TOKEN): ok("mpesa_access_token.json"), ("POST", MPESA_STK): ok("mpesa_stk_push.json")}


def test_mpesa_access_token_uses_basic_auth(settings):
    settings.MPESA_CONSUMER_KEY, settings.MPESA_CONSUMER_SECRET = "ck-recorded", "cs-recorded"
    session, adapter = session_with(MPESA_ANSWERS)

    assert MpesaClient("callback-token", session=session).access_token() == "c9SQxWWhmdVRlyh0zh8gZDTkubVF"

    [sent] = adapter.sent
    assert (sent.method, sent.path_url) == ("GET", MPESA_TOKEN)
    assert sent.query == {"grant_type": ["client_credentials"]}
    assert sent.headers["Authorization"] == basic("ck-recorded", "cs-recorded")
    assert sent.timeout == (3.05, 10)


def test_mpesa_stk_push_password_is_base64_of_shortcode_passkey_timestamp(settings):
    settings.MPESA_SHORTCODE, settings.MPESA_PASSKEY = "174379", "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78"
    session, adapter = session_with(MPESA_ANSWERS)

    answer = MpesaClient("callback-token", session=session).stk_push(
        amount=1500, phone="254712345678", reference="PAY-1", callback_url="https://x.test/cb?token=t"
    )

    assert answer == json.loads(recorded("mpesa_stk_push.json"))
    token_request, stk = adapter.sent
    assert token_request.path_url == MPESA_TOKEN  # the token comes first, then the push with it
    assert (stk.method, stk.url) == ("POST", MPESA_STK)
    assert stk.headers["Authorization"] == "Bearer c9SQxWWhmdVRlyh0zh8gZDTkubVF"
    body = stk.json()
    timestamp = body["Timestamp"]
    assert len(timestamp) == 14 and timestamp.isdigit()
    assert body["Password"] == base64.b64encode(f"174379{settings.MPESA_PASSKEY}{timestamp}".encode()).decode()
    assert body["BusinessShortCode"] == body["PartyB"] == "174379"
    assert body["TransactionType"] == "CustomerPayBillOnline"
    assert body["Amount"] == 1500 and isinstance(body["Amount"], int)
    assert body["PartyA"] == body["PhoneNumber"] == "254712345678"
    assert body["CallBackURL"] == "https://x.test/cb?token=t"
    assert body["AccountReference"] == "PAY-1"


@pytest.mark.django_db
def test_mpesa_checkout(payment_for, settings):
    settings.PUBLIC_BASE_URL = "https://stayafrica.example"
    settings.MPESA_CALLBACK_TOKEN = "cb-secret"
    payment = payment_for("mpesa", total="1500.00", currency="KES", country="KE")
    session, adapter = session_with(MPESA_ANSWERS)

    checkout = Mpesa().checkout(payment, email="guest@example.com", phone="254712345678", session=session)

    assert checkout == {
        "checkout_request_id": "ws_CO_191220191020363925",
        "provider_reference": "ws_CO_191220191020363925",
    }
    body = adapter.sent[-1].json()
    assert body["Amount"] == 1500  # whole shillings
    assert body["AccountReference"] == payment.reference
    assert body["CallBackURL"] == "https://stayafrica.example/api/payments/webhooks/mpesa/?token=cb-secret"


@pytest.mark.django_db
def test_while_a_secret_rotates_what_we_send_uses_the_current_one(payment_for, settings):
    settings.PUBLIC_BASE_URL = "https://stayafrica.example"
    settings.PAYSTACK_SECRET_KEY, settings.PAYSTACK_SECRET_KEY_PREVIOUS = "sk_live_new", "sk_live_old"
    settings.MPESA_CALLBACK_TOKEN, settings.MPESA_CALLBACK_TOKEN_PREVIOUS = "cb-new", "cb-old"
    paystack_session, paystack_sent = session_with({("POST", PAYSTACK_INIT): ok("paystack_initialize.json")})
    mpesa_session, mpesa_sent = session_with(MPESA_ANSWERS)

    Paystack().checkout(
        payment_for("paystack", total="10.00", currency="NGN", country="NG"), email="g@x.test", session=paystack_session
    )
    Mpesa().checkout(
        payment_for("mpesa", total="10.00", currency="KES", country="KE"),
        email="g@x.test",
        phone="254712345678",
        session=mpesa_session,
    )

    assert paystack_sent.sent[0].headers["Authorization"] == "Bearer sk_live_new"
    assert mpesa_sent.sent[-1].json()["CallBackURL"].endswith("/api/payments/webhooks/mpesa/?token=cb-new")


@pytest.mark.django_db
def test_mpesa_checkout_never_asks_for_a_different_amount_than_is_due(payment_for):
    """STK push takes whole shillings: KES 1,500.50 is refused rather than pushed as 1,500 or 1,501."""
    from finance.providers.base import CheckoutInputError

    payment = payment_for("mpesa", total="1500.50", currency="KES", country="KE")
    session, adapter = session_with(MPESA_ANSWERS)

    with pytest.raises(CheckoutInputError) as raised:
        Mpesa().checkout(payment, email="guest@example.com", phone="254712345678", session=session)

    assert raised.value.details == {"field": "provider"}
    assert adapter.sent == []


@pytest.mark.django_db
def test_mpesa_checkout_sends_the_phone_in_daraja_format(payment_for):
    """The API accepts "+254…" (PayRequestSerializer); Daraja documents PartyA/PhoneNumber as 2547XXXXXXXX."""
    payment = payment_for("mpesa", total="1500.00", currency="KES", country="KE")
    session, adapter = session_with(MPESA_ANSWERS)

    Mpesa().checkout(payment, email="guest@example.com", phone="+254712345678", session=session)

    body = adapter.sent[-1].json()
    assert body["PartyA"] == body["PhoneNumber"] == "254712345678"


@pytest.mark.django_db
def test_mpesa_checkout_needs_a_phone(payment_for):
    from finance.providers.base import CheckoutInputError

    payment = payment_for("mpesa", total="1500.00", currency="KES", country="KE")
    session, adapter = session_with(MPESA_ANSWERS)
    with pytest.raises(CheckoutInputError) as raised:
        Mpesa().checkout(payment, email="guest@example.com", phone="", session=session)
    assert raised.value.details == {"field": "phone"}
    assert adapter.sent == []


# --- failures: every way a provider can let us down is a 503 ------------------------------------------------


def _paystack(session):
    return PaystackClient("sk", session=session).initialize(reference="R", amount_minor=100, currency="NGN", email="e")


def _flutterwave(session):
    return FlutterwaveClient("sk", session=session).create_payment(
        tx_ref="R", amount="1.00", currency="NGN", email="e", redirect_url="https://x.test/"
    )


def _stripe(session):
    return StripeClient("sk", session=session).create_payment_intent(
        amount_minor=100, currency="USD", payment_reference="R"
    )


def _mpesa_token(session):
    return MpesaClient("t", session=session).access_token()


def _mpesa_stk(session):
    return MpesaClient("t", session=session).stk_push(amount=1, phone="254712345678", reference="R", callback_url="u")


CALLS = {
    "paystack": (_paystack, ("POST", PAYSTACK_INIT), "paystack_invalid_key.json", 401),
    "flutterwave": (_flutterwave, ("POST", FLUTTERWAVE_PAYMENTS), "flutterwave_error.json", 400),
    "stripe": (_stripe, ("POST", STRIPE_INTENTS), "stripe_invalid_key.json", 401),
    "mpesa_token": (_mpesa_token, ("GET", MPESA_TOKEN), "paystack_invalid_key.json", 400),
    "mpesa_stk": (_mpesa_stk, ("POST", MPESA_STK), "mpesa_invalid_timestamp.json", 400),
}


def _answers(name: str, failing):
    answers = dict(MPESA_ANSWERS) if name == "mpesa_stk" else {}
    answers[CALLS[name][1]] = failing
    return answers


def _assert_unavailable(call, session):
    with pytest.raises(ProviderUnavailableError) as raised:
        call(session)
    assert raised.value.status == 503
    assert raised.value.code == "provider_unavailable"


@pytest.mark.parametrize("name", CALLS)
def test_provider_4xx_answer_is_unavailable(name):
    call, _route, error_file, status = CALLS[name]
    session, _ = session_with(_answers(name, (status, recorded(error_file), "application/json")))
    _assert_unavailable(call, session)


@pytest.mark.parametrize("name", CALLS)
def test_provider_5xx_answer_is_unavailable(name):
    call = CALLS[name][0]
    session, _ = session_with(_answers(name, (503, b"<html>upstream overloaded</html>", "text/html")))
    _assert_unavailable(call, session)


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize(
    "error", [requests.ConnectionError("connection refused"), requests.Timeout("read timed out")], ids=repr
)
def test_provider_unreachable_is_unavailable(name, error):
    call = CALLS[name][0]
    session, _ = session_with(_answers(name, error))
    _assert_unavailable(call, session)


@pytest.mark.parametrize("name", CALLS)
def test_provider_non_json_answer_is_unavailable(name):
    call = CALLS[name][0]
    session, _ = session_with(_answers(name, (200, b"<html><body>Maintenance</body></html>", "text/html")))
    _assert_unavailable(call, session)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "provider, currency, country, route",
    [
        pytest.param(Paystack(), "NGN", "NG", ("POST", PAYSTACK_INIT), id="paystack"),
        pytest.param(Flutterwave(), "NGN", "NG", ("POST", FLUTTERWAVE_PAYMENTS), id="flutterwave"),
        pytest.param(Stripe(), "USD", "US", ("POST", STRIPE_INTENTS), id="stripe"),
        pytest.param(Mpesa(), "KES", "KE", ("POST", MPESA_STK), id="mpesa"),
    ],
)
def test_checkout_with_an_unexpected_json_answer_is_unavailable(payment_for, provider, currency, country, route):
    """A 200 whose JSON lacks what the provider documents (e.g. a captive portal, an API change)
    is the provider failing us, like a non-JSON answer: 503, not an unhandled error (500)."""
    payment = payment_for(provider.name, total="1000.00", currency=currency, country=country)
    answers = dict(MPESA_ANSWERS)
    answers[route] = (200, b'{"status": "ok"}', "application/json")
    session, _ = session_with(answers)
    with pytest.raises(ProviderUnavailableError):
        provider.checkout(payment, email="guest@example.com", phone="254712345678", session=session)


# --- through the API: POST /api/payments/bookings/{id}/pay/ -------------------------------------------------


@pytest.fixture
def real_providers(settings):
    settings.SANDBOX_PAYMENTS_ENABLED = False
    settings.PAYSTACK_SECRET_KEY = "sk_test_api"


@pytest.fixture
def provider_calls(provider_http):
    """Answer the provider calls made with no session handed in (conftest's provider_http)."""

    def install(answers: dict):
        provider_http.answers.update(answers)
        return provider_http

    return install


@pytest.fixture
def guest_client(guest):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_api_token(guest)}")
    return client


@pytest.fixture
def ng_booking(host, guest, make_booking):
    return make_booking(host, guest, total="25000.00", commission="2500.00", currency="NGN", country="NG")


def test_pay_through_the_api_opens_a_paystack_checkout(real_providers, provider_calls, guest, guest_client, ng_booking):
    adapter = provider_calls({("POST", PAYSTACK_INIT): ok("paystack_initialize.json")})

    response = guest_client.post(
        f"/api/payments/bookings/{ng_booking.pk}/pay/", {"provider": "paystack"}, format="json"
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["provider"] == "paystack"
    assert (body["amount"], body["currency"], body["status"], body["booking"]) == (
        "25000.00",
        "NGN",
        "pending",
        ng_booking.pk,
    )
    assert body["checkout"] == {
        "authorization_url": "https://checkout.paystack.com/0peioxfhpn4mt2q",
        "access_code": "0peioxfhpn4mt2q",
    }
    payment = Payment.objects.get(booking=ng_booking)
    assert payment.reference == body["reference"]
    [sent] = adapter.sent
    assert sent.headers["Authorization"] == "Bearer sk_test_api"
    assert sent.json() == {"reference": payment.reference, "amount": 2500000, "currency": "NGN", "email": guest.email}


def test_pay_without_a_provider_name_picks_the_country_s_first(
    real_providers, provider_calls, guest_client, ng_booking
):
    provider_calls({("POST", PAYSTACK_INIT): ok("paystack_initialize.json")})
    response = guest_client.post(f"/api/payments/bookings/{ng_booking.pk}/pay/", {}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["provider"] == "paystack"


@pytest.mark.parametrize(
    "failing",
    [
        (503, b"<html>Service Unavailable</html>", "text/html"),
        (401, recorded("paystack_invalid_key.json"), "application/json"),
        requests.ConnectionError("connection refused"),
        (200, b"not json at all", "text/plain"),
    ],
    ids=["5xx", "4xx", "unreachable", "non-json"],
)
def test_pay_when_the_provider_is_down_is_503_and_keeps_only_a_reservation(
    real_providers, provider_calls, guest_client, ng_booking, failing
):
    adapter = provider_calls({("POST", PAYSTACK_INIT): failing})
    audits = LedgerAudit.objects.count()

    response = guest_client.post(
        f"/api/payments/bookings/{ng_booking.pk}/pay/", {"provider": "paystack"}, format="json"
    )

    assert response.status_code == 503, response.content
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["code"] == "provider_unavailable"
    assert len(adapter.sent) == 1
    assert_only_a_reservation(ng_booking)
    assert LedgerAudit.objects.count() == audits
    ng_booking.refresh_from_db()
    assert ng_booking.status == Booking.Status.PENDING


def assert_only_a_reservation(booking):
    """What a failed checkout keeps: one pending payment no provider opened, no call in flight."""
    [payment] = Payment.objects.filter(booking=booking)
    assert (payment.status, payment.checkout_status) == (Payment.Status.PENDING, Payment.CheckoutStatus.RESERVED)
    assert payment.checkout == {} and payment.provider_reference is None
    assert payment.checkout_started_at is None
    assert payment.checkout_error.startswith("ProviderUnavailableError")


def test_pay_retry_with_the_same_idempotency_key_after_a_503_succeeds(
    real_providers, provider_calls, guest_client, ng_booking
):
    """A 5xx answer is not stored under the Idempotency-Key: the retry really runs."""
    path = f"/api/payments/bookings/{ng_booking.pk}/pay/"
    provider_calls({("POST", PAYSTACK_INIT): requests.ConnectionError("down")})
    first = guest_client.post(path, {"provider": "paystack"}, format="json", HTTP_IDEMPOTENCY_KEY="pay-1")
    assert first.status_code == 503
    assert_only_a_reservation(ng_booking)

    provider_calls({("POST", PAYSTACK_INIT): ok("paystack_initialize.json")})
    second = guest_client.post(path, {"provider": "paystack"}, format="json", HTTP_IDEMPOTENCY_KEY="pay-1")
    assert second.status_code == 201, second.content
    assert "Idempotent-Replayed" not in second
    assert Payment.objects.filter(booking=ng_booking).count() == 1


def test_pay_with_an_unexpected_provider_answer_is_503_and_keeps_nothing(
    real_providers, provider_calls, guest_client, ng_booking
):
    provider_calls({("POST", PAYSTACK_INIT): (200, b'{"status": true, "message": "ok"}', "application/json")})
    client = guest_client
    client.raise_request_exception = False  # an unhandled error must show as what the client would get
    response = client.post(f"/api/payments/bookings/{ng_booking.pk}/pay/", {"provider": "paystack"}, format="json")
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "provider_unavailable"
    assert_only_a_reservation(ng_booking)


# --- fail closed: a provider's or the network's words never reach the caller ------------------------------


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize(
    "failing",
    [
        pytest.param("recorded error", id="the provider's error answer"),
        pytest.param(requests.ConnectionError("HTTPSConnectionPool(host='10.20.0.7', port=443)"), id="unreachable"),
        pytest.param((200, b"<html>squid proxy 10.20.0.7</html>", "text/html"), id="non-JSON"),
    ],
)
def test_a_provider_failure_says_only_that_the_provider_is_unavailable(name, failing, caplog):
    call, _route, error_file, status = CALLS[name]
    if failing == "recorded error":
        failing = (status, recorded(error_file), "application/json")
    session, _ = session_with(_answers(name, failing))

    with pytest.raises(ProviderUnavailableError) as raised:
        call(session)

    assert raised.value.message == providers_base.UNAVAILABLE
    # The detail is in the server's log, for the operator.
    assert any(record.name == "finance.providers" for record in caplog.records)


def test_pay_through_the_api_when_the_provider_fails_repeats_none_of_its_words(
    real_providers, provider_calls, guest_client, ng_booking
):
    provider_calls({("POST", PAYSTACK_INIT): (401, recorded("paystack_invalid_key.json"), "application/json")})

    response = guest_client.post(
        f"/api/payments/bookings/{ng_booking.pk}/pay/", {"provider": "paystack"}, format="json"
    )

    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "provider_unavailable"
    assert "Invalid key" not in response.content.decode() and "401" not in error["message"]
    assert "try again" in error["message"]
    assert_only_a_reservation(ng_booking)
    assert "Invalid key" not in Payment.objects.get(booking=ng_booking).checkout_error


def test_a_provider_switched_off_takes_no_payments_and_no_webhooks(settings, guest_client, ng_booking, unchanged):
    settings.SANDBOX_PAYMENTS_ENABLED = False
    settings.PAYMENT_PROVIDERS = {"stripe": {"*"}}  # Paystack is off
    body = json.dumps({"event": "charge.success", "data": {"reference": "PAY-1", "amount": 100, "currency": "NGN"}})
    signature = hmac.new(settings.PAYSTACK_SECRET_KEY.encode(), body.encode(), hashlib.sha512).hexdigest()

    with unchanged():
        paid = guest_client.post(
            f"/api/payments/bookings/{ng_booking.pk}/pay/", {"provider": "paystack"}, format="json"
        )
        webhook = APIClient().post(
            "/api/payments/webhooks/paystack/",
            body,
            content_type="application/json",
            HTTP_X_PAYSTACK_SIGNATURE=signature,
        )

    assert paid.status_code == 400 and paid.json()["error"]["code"] == "unknown_provider"
    assert webhook.status_code == 404 and webhook.json()["error"]["code"] == "unknown_provider"
    assert not WebhookEvent.objects.exists()
    assert not Payment.objects.filter(booking=ng_booking).exists()
