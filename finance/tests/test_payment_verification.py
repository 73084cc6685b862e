"""Before a payment webhook gives value, the provider's verify endpoint confirms the charge
(finance/payments.py step 2b; Paystack and Flutterwave ask for it). Provider HTTP is answered
from recorded payloads (the root conftest's `provider_http`): nothing leaves the machine."""

import json
from decimal import Decimal

import pytest
import requests
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from finance import staff_actions
from finance.models import Booking, LedgerAudit, Payment, WebhookEvent
from finance.providers.base import SUCCESS, ProviderEvent, ProviderUnavailableError
from finance.providers.flutterwave import Flutterwave
from finance.providers.paystack import Paystack
from testing.paystack import (
    answer_flutterwave_verify,
    answer_paystack_verify,
    paystack_verify_url,
    post_paystack_charge,
)
from testing.recorded_http import answer, ok, recorded_json, session_with

SECRET = "sk_test_paystack"


@pytest.fixture(autouse=True)
def _secrets(settings):
    settings.PAYSTACK_SECRET_KEY = SECRET
    settings.FLUTTERWAVE_SECRET_KEY = "FLWSECK_TEST-key"
    settings.FLUTTERWAVE_SECRET_HASH = "flw-hash"
    settings.MPESA_CALLBACK_TOKEN = "mpesa-token"
    settings.WEBHOOK_FAILED_VERIFICATION_LIMIT = 100


@pytest.fixture
def booking(host, guest, make_booking):
    return make_booking(host, guest, total="1000.00", commission="150.00", currency="NGN")


@pytest.fixture
def payment(booking, make_payment):
    return make_payment(booking, provider="paystack")


def charge(payment, *, amount_minor=100000, event_id=9001):
    return post_paystack_charge(payment, amount_minor=amount_minor, event_id=event_id, secret=SECRET)


def post_flutterwave(payment, *, amount="1000.00", status="successful", event_id=555):
    data = f'"id": {event_id}, "tx_ref": "{payment.reference}", "status": "{status}", "amount": {amount}'
    raw = f'{{"event": "charge.completed", "data": {{{data}, "currency": "NGN"}}}}'.encode()  # the amount exact
    return APIClient().generic(
        "POST", "/api/payments/webhooks/flutterwave/", raw, content_type="application/json", HTTP_VERIF_HASH="flw-hash"
    )


def host_balance(host) -> Decimal:
    wallet = host.wallets.filter(currency="NGN").first()
    return wallet.balance if wallet else Decimal("0")


def webhooks(outcome: str) -> float:
    return REGISTRY.get_sample_value("webhook_events_total", {"provider": "paystack", "outcome": outcome}) or 0.0


def paid(payment) -> bool:
    payment.refresh_from_db()
    return payment.status == Payment.Status.SUCCESS and payment.booking.status == Booking.Status.CONFIRMED


# --- the webhook pipeline ----------------------------------------------------------------------


def test_a_charge_paystack_confirms_is_applied_after_one_verify_call(provider_http, host, payment):
    answer_paystack_verify(provider_http, payment)

    response = charge(payment)

    assert response.status_code == 200 and response.json()["status"] == "applied"
    assert paid(payment) and host_balance(host) == Decimal("850.00")
    [sent] = provider_http.sent
    assert (sent.method, sent.url) == ("GET", f"https://api.paystack.co/transaction/verify/{payment.reference}")
    assert sent.headers["Authorization"] == f"Bearer {SECRET}"
    assert sent.body == b""


def test_a_charge_paystack_calls_abandoned_is_flagged_and_moves_no_money(provider_http, host, payment):
    answer_paystack_verify(provider_http, payment, status="abandoned")

    response = charge(payment)

    assert response.status_code == 200 and response.json()["status"] == "flagged"
    event = WebhookEvent.objects.get()
    assert event.reason == "Paystack's verify endpoint says this charge is 'abandoned': not applied."
    assert event.payment == payment
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING and payment.ledger_transaction_id is None
    assert host_balance(host) == Decimal("0")
    assert LedgerAudit.objects.filter(action="webhook.flagged", reason=event.reason).exists()


def test_a_webhook_claiming_more_than_paystack_charged_is_flagged(provider_http, host, payment):
    answer_paystack_verify(provider_http, payment, amount_minor=50000)  # Paystack charged NGN 500.00

    response = charge(payment, amount_minor=100000)  # the body claims NGN 1,000.00, the payment's amount

    assert response.json()["status"] == "flagged"
    assert WebhookEvent.objects.get().reason == (
        "The webhook says NGN 1,000.00 was charged, Paystack's verify endpoint says NGN 500.00: not applied."
    )
    assert host_balance(host) == Decimal("0")


def test_a_charge_paystack_confirms_for_less_than_the_payment_is_flagged(provider_http, host, payment):
    answer_paystack_verify(provider_http, payment, amount_minor=50000)

    assert charge(payment, amount_minor=50000).json()["status"] == "flagged"  # webhook and record agree
    assert WebhookEvent.objects.get().reason == "Amount NGN 500.00 differs from the payment's NGN 1,000.00."
    assert host_balance(host) == Decimal("0")


def test_a_charge_paystack_has_no_record_of_is_flagged(provider_http, host, payment):
    provider_http.answers[("GET", paystack_verify_url(payment))] = (
        404,
        json.dumps(recorded_json("paystack_verify_not_found.json")).encode(),
        "application/json",
    )

    assert charge(payment).json()["status"] == "flagged"
    reason = "Paystack's verify endpoint says this charge is 'not found': not applied."
    assert WebhookEvent.objects.get().reason == reason
    assert host_balance(host) == Decimal("0")


@pytest.mark.parametrize(
    "down",
    [
        requests.ConnectionError("connection refused"),
        requests.Timeout("read timed out"),
        (502, b"<html>Bad Gateway</html>", "text/html"),
        (401, b'{"status": false, "message": "Invalid key"}', "application/json"),
    ],
    ids=["unreachable", "timeout", "502", "our key refused"],
)
def test_paystack_down_answers_503_stores_nothing_and_the_redelivery_applies(provider_http, host, payment, down):
    provider_http.answers[("GET", paystack_verify_url(payment))] = down
    before = webhooks("provider_unavailable")

    response = charge(payment)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "provider_unavailable"
    assert int(response["Retry-After"]) > 0
    assert WebhookEvent.objects.count() == 0
    assert webhooks("provider_unavailable") == before + 1
    assert host_balance(host) == Decimal("0")

    answer_paystack_verify(provider_http, payment)  # Paystack is back, and delivers the event again
    assert charge(payment).json()["status"] == "applied"
    assert paid(payment) and host_balance(host) == Decimal("850.00")


def test_a_duplicate_delivery_makes_no_verify_call(provider_http, host, payment):
    answer_paystack_verify(provider_http, payment)
    charge(payment)
    provider_http.sent.clear()

    response = charge(payment)

    assert response.json()["status"] == "duplicate"
    assert provider_http.sent == []
    assert host_balance(host) == Decimal("850.00")


def test_staff_replay_asks_paystack_again_and_applies_once_it_confirms(provider_http, host, payment, finance_user):
    answer_paystack_verify(provider_http, payment, status="ongoing")
    charge(payment)
    event = WebhookEvent.objects.get()
    assert event.outcome == WebhookEvent.Outcome.FLAGGED

    answer_paystack_verify(provider_http, payment)  # the guest finished paying
    replayed = staff_actions.replay_webhook(event=event, actor=finance_user)

    assert replayed.outcome == WebhookEvent.Outcome.APPLIED and replayed.replay_count == 1
    assert len(provider_http.sent) == 2
    assert paid(payment) and host_balance(host) == Decimal("850.00")


def test_staff_replay_while_paystack_is_down_changes_nothing(provider_http, host, payment, finance_user):
    answer_paystack_verify(provider_http, payment, status="abandoned")
    charge(payment)
    event = WebhookEvent.objects.get()
    provider_http.answers[("GET", paystack_verify_url(payment))] = requests.Timeout("read timed out")

    with pytest.raises(ProviderUnavailableError, match="Paystack did not answer"):
        staff_actions.replay_webhook(event=event, actor=finance_user)

    event.refresh_from_db()
    assert (event.outcome, event.replay_count) == (WebhookEvent.Outcome.FLAGGED, 0)
    assert host_balance(host) == Decimal("0")


def test_replay_of_an_applied_event_is_refused_without_asking(provider_http, payment, finance_user):
    from finance.errors import InvalidStateError

    answer_paystack_verify(provider_http, payment)
    charge(payment)
    provider_http.sent.clear()

    with pytest.raises(InvalidStateError):
        staff_actions.replay_webhook(event=WebhookEvent.objects.get(), actor=finance_user)
    assert provider_http.sent == []


def test_a_flutterwave_charge_is_verified_by_our_reference(provider_http, host, booking, make_payment):
    payment = make_payment(booking, provider="flutterwave")
    answer_flutterwave_verify(provider_http, payment)

    response = post_flutterwave(payment)

    assert response.json()["status"] == "applied"
    assert paid(payment) and host_balance(host) == Decimal("850.00")
    [sent] = provider_http.sent
    assert sent.path_url == "https://api.flutterwave.com/v3/transactions/verify_by_reference"
    assert sent.query == {"tx_ref": [payment.reference]}
    assert sent.headers["Authorization"] == "Bearer FLWSECK_TEST-key"


def test_a_charge_flutterwave_calls_failed_is_flagged(provider_http, host, booking, make_payment):
    payment = make_payment(booking, provider="flutterwave")
    answer_flutterwave_verify(provider_http, payment, status="failed")

    assert post_flutterwave(payment).json()["status"] == "flagged"
    assert WebhookEvent.objects.get().reason == (
        "Flutterwave's verify endpoint says this charge is 'failed': not applied."
    )
    assert host_balance(host) == Decimal("0")


def test_flutterwave_verified_amount_is_read_exactly(provider_http, host, booking, make_payment):
    payment = make_payment(booking, provider="flutterwave")
    answer_flutterwave_verify(provider_http, payment, amount="999.99")

    assert post_flutterwave(payment, amount="1000.00").json()["status"] == "flagged"
    assert WebhookEvent.objects.get().reason == (
        "The webhook says NGN 1,000.00 was charged, Flutterwave's verify endpoint says NGN 999.99: not applied."
    )


def test_a_failed_flutterwave_charge_needs_no_verification(provider_http, booking, make_payment):
    payment = make_payment(booking, provider="flutterwave")

    assert post_flutterwave(payment, status="failed").json()["status"] == "payment_failed"
    assert provider_http.sent == []


def test_providers_without_a_verify_endpoint_make_no_call(provider_http, host, guest, make_booking, make_payment):
    booking = make_booking(host, guest, total="1000.00", commission="150.00", currency="KES")
    payment = make_payment(booking, provider="mpesa")
    Payment.objects.filter(pk=payment.pk).update(provider_reference="ws_CO_1")
    callback = {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": "m-1",
                "CheckoutRequestID": "ws_CO_1",
                "ResultCode": 0,
                "ResultDesc": "The service request is processed successfully.",
                "CallbackMetadata": {"Item": [{"Name": "Amount", "Value": 1000}]},
            }
        }
    }
    response = APIClient().post(
        "/api/payments/webhooks/mpesa/?token=mpesa-token", json.dumps(callback), content_type="application/json"
    )

    assert response.json()["status"] == "applied"
    assert provider_http.sent == []


def test_a_transfer_callback_is_not_a_payment_to_verify():
    from finance.payments import _needs_confirmation

    transfer = ProviderEvent(event_id="transfer.success:1", event_type="transfer.success", outcome=SUCCESS)
    transfer = ProviderEvent(**{**transfer.__dict__, "transfer_reference": "WD-1"})
    payment = ProviderEvent(event_id="charge.success:1", event_type="charge.success", outcome=SUCCESS)
    assert (_needs_confirmation(transfer), _needs_confirmation(payment)) == (False, True)


# --- the providers' verify calls, read directly ------------------------------------------------


def event_for(reference: str) -> ProviderEvent:
    return ProviderEvent(event_id="e", event_type="charge.success", outcome=SUCCESS, payment_reference=reference)


def test_paystack_confirm_payment_reads_the_recorded_answer_exactly():
    url = "https://api.paystack.co/transaction/verify/PAY-RECORDED0000001"
    session, adapter = session_with({("GET", url): ok("paystack_verify_transaction.json")})

    check = Paystack().confirm_payment(event_for("PAY-RECORDED0000001"), session=session)

    assert (check.succeeded, check.amount, check.currency, check.provider_status) == (
        True,
        Decimal("45000.00"),
        "NGN",
        "success",
    )
    assert adapter.sent[0].timeout is not None


def test_paystack_abandoned_and_unknown_charges_are_not_confirmed():
    url = "https://api.paystack.co/transaction/verify/PAY-1"
    session, _ = session_with({("GET", url): ok("paystack_verify_abandoned.json")})
    assert Paystack().confirm_payment(event_for("PAY-1"), session=session).provider_status == "abandoned"

    # Before its typed errors, Paystack answered an unknown reference with 400.
    not_found = {"status": False, "message": "Transaction reference not found"}
    session, _ = session_with({("GET", url): answer(400, not_found)})
    check = Paystack().confirm_payment(event_for("PAY-1"), session=session)
    assert (check.succeeded, check.amount, check.provider_status) == (False, None, "not found")


@pytest.mark.parametrize(
    "answered",
    [
        answer(200, {"status": True, "message": "Verification successful", "data": {"status": "success"}}),
        (200, b"<html>maintenance</html>", "text/html"),
        answer(200, {"status": True, "data": {"status": "success", "amount": "450.5", "currency": "NGN"}}),
        (500, b'{"status": false, "message": "Server error"}', "application/json"),
        (429, b'{"status": false, "message": "Too many requests"}', "application/json"),
    ],
    ids=["missing amount", "not JSON", "amount not in minor units", "500", "429"],
)
def test_paystack_answers_we_cannot_trust_are_unavailable(answered):
    url = "https://api.paystack.co/transaction/verify/PAY-1"
    session, _ = session_with({("GET", url): answered})
    with pytest.raises(ProviderUnavailableError):
        Paystack().confirm_payment(event_for("PAY-1"), session=session)


def test_flutterwave_confirm_payment_reads_the_recorded_answers():
    url = "https://api.flutterwave.com/v3/transactions/verify_by_reference"
    session, adapter = session_with({("GET", url): ok("flutterwave_verify_transaction.json")})
    check = Flutterwave().confirm_payment(event_for("PAY-RECORDED0000001"), session=session)
    assert (check.succeeded, check.amount, check.currency) == (True, Decimal("1000"), "UGX")
    assert adapter.sent[0].query == {"tx_ref": ["PAY-RECORDED0000001"]}

    session, _ = session_with({("GET", url): ok("flutterwave_verify_failed.json")})
    assert Flutterwave().confirm_payment(event_for("PAY-1"), session=session).provider_status == "failed"

    not_found = recorded_json("flutterwave_verify_not_found.json")
    session, _ = session_with({("GET", url): answer(400, not_found)})
    check = Flutterwave().confirm_payment(event_for("PAY-1"), session=session)
    assert (check.succeeded, check.provider_status) == (False, "not found")


def test_flutterwave_key_refused_is_unavailable_not_a_flag():
    url = "https://api.flutterwave.com/v3/transactions/verify_by_reference"
    session, _ = session_with({("GET", url): answer(401, {"status": "error", "message": "Invalid authorization key"})})
    with pytest.raises(ProviderUnavailableError):
        Flutterwave().confirm_payment(event_for("PAY-1"), session=session)


def test_the_api_base_url_is_a_setting(settings, provider_http, payment):
    settings.PAYSTACK_API_URL = "http://127.0.0.1:9/paystack"
    answer_paystack_verify(provider_http, payment)
    assert paystack_verify_url(payment) == f"http://127.0.0.1:9/paystack/transaction/verify/{payment.reference}"

    check = Paystack().confirm_payment(event_for(payment.reference))

    assert check.succeeded
    assert provider_http.sent[0].url.startswith("http://127.0.0.1:9/paystack/")


def test_the_recorded_verify_answers_name_their_documentation():
    for name in (
        "paystack_verify_transaction.json",
        "paystack_verify_abandoned.json",
        "paystack_verify_not_found.json",
        "flutterwave_verify_transaction.json",
        "flutterwave_verify_failed.json",
        "flutterwave_verify_not_found.json",
    ):
        assert recorded_json(name)["_doc"].startswith("https://"), name
