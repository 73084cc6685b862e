"""M-Pesa B2C payouts (finance/providers/mpesa.py): what leaves for Daraja, how its answers and
its result callbacks read. Every call is answered from recorded payloads (finance/tests/recorded/
mpesa_b2c_*.json, mpesa_transaction_status_*.json), each naming the Daraja page it follows.

Settling a withdrawal from a callback is the payout engine's job (finance/payouts.py): here the
callbacks go through the real webhook endpoint and we check what parse() reads and that each is
stored in the inbox once."""

import json
from decimal import Decimal

import pytest
import requests
from rest_framework.test import APIClient

from finance import crypto
from finance.models import BankAccount, WebhookEvent
from finance.providers.base import (
    FAILED,
    IGNORED,
    PENDING,
    SUCCESS,
    ProviderUnavailableError,
    TransferRefusedError,
)
from finance.providers.mpesa import Mpesa
from finance.services import TransactionService
from testing.recorded_http import answer, ok, recorded, recorded_json, session_with

TOKEN_URL = "https://api.safaricom.co.ke/oauth/v1/generate"
B2C_URL = "https://api.safaricom.co.ke/mpesa/b2c/v3/paymentrequest"
STATUS_URL = "https://api.safaricom.co.ke/mpesa/transactionstatus/v1/query"
WEBHOOK = "/api/payments/webhooks/mpesa/"
CALLBACK_URL = "https://stayafrica.example/api/payments/webhooks/mpesa/?token=cb-secret"
ACCESS_TOKEN = json.loads(recorded("mpesa_access_token.json"))["access_token"]


@pytest.fixture(autouse=True)
def _daraja(settings):
    settings.SANDBOX_PAYMENTS_ENABLED = False
    settings.PUBLIC_BASE_URL = "https://stayafrica.example"
    settings.MPESA_CALLBACK_TOKEN = "cb-secret"
    settings.MPESA_CALLBACK_TOKEN_PREVIOUS = ""
    settings.MPESA_CONSUMER_KEY, settings.MPESA_CONSUMER_SECRET = "ck-recorded", "cs-recorded"
    settings.MPESA_INITIATOR_NAME = "stayafrica_api"
    settings.MPESA_SECURITY_CREDENTIAL = "encrypted-initiator-password=="
    settings.MPESA_B2C_SHORTCODE = "600996"
    settings.WEBHOOK_FAILED_VERIFICATION_LIMIT = 100


@pytest.fixture
def host_number(monkeypatch):
    """The host's full M-Pesa number, as finance.crypto would decrypt it (another branch writes it)."""
    numbers = {"value": "0712345678"}
    monkeypatch.setattr(crypto, "decrypt_account_number", lambda bank_account: numbers["value"])
    return numbers


def make_withdrawal(host, *, amount="1500.00", currency="KES", country="KE"):
    wallet = TransactionService.create_wallet(host, currency)
    TransactionService.credit_wallet(wallet, Decimal("100000.00"))
    account = BankAccount.objects.create(
        owner=host,
        account_type=BankAccount.AccountType.MOBILE_MONEY,
        bank_name="M-Pesa",
        bank_code="MPESA",
        account_name="Host One",
        account_number_last4="5678",
        account_number_encrypted="ciphertext",
        currency=currency,
        country=country,
    )
    withdrawal = TransactionService.initiate_withdrawal(wallet, account, Decimal(amount))
    withdrawal.transfer_reference = withdrawal.stable_transfer_reference()
    withdrawal.payout_method = "mpesa"
    withdrawal.save(update_fields=["transfer_reference", "payout_method"])
    return withdrawal


@pytest.fixture
def withdrawal(host, host_number):
    return make_withdrawal(host)


def daraja(b2c=None, status=None):
    answers = {("GET", TOKEN_URL): ok("mpesa_access_token.json")}
    if b2c is not None:
        answers[("POST", B2C_URL)] = b2c
    if status is not None:
        answers[("POST", STATUS_URL)] = status
    return session_with(answers)


def sent_to(adapter, url):
    return [sent for sent in adapter.sent if sent.path_url == url]


# --- sending: what leaves -----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_payout_is_one_b2c_request_with_our_reference_whole_shillings_and_the_callback_token(withdrawal):
    session, adapter = daraja(b2c=ok("mpesa_b2c_accepted.json"))

    result = Mpesa().send_transfer(withdrawal, session=session)

    assert result.status == PENDING
    assert result.provider_transfer_id == "AG_20240706_20106e9209f64bebd05b"  # the ConversationID
    token_call, b2c_call = adapter.sent
    assert token_call.path_url == TOKEN_URL  # the OAuth token first, then the payment with it
    assert b2c_call.method == "POST" and b2c_call.url == B2C_URL
    assert b2c_call.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    body = b2c_call.json()
    assert body == {
        "OriginatorConversationID": withdrawal.transfer_reference,
        "InitiatorName": "stayafrica_api",
        "SecurityCredential": "encrypted-initiator-password==",
        "CommandID": "BusinessPayment",
        "Amount": 1500,
        "PartyA": "600996",
        "PartyB": "254712345678",
        "Remarks": f"StayAfrica payout {withdrawal.reference}",
        "QueueTimeOutURL": CALLBACK_URL,
        "ResultURL": CALLBACK_URL,
        "Occassion": withdrawal.reference,
    }
    assert isinstance(body["Amount"], int)  # a JSON integer, never 1500.0
    assert withdrawal.transfer_reference == f"payout-{withdrawal.reference.lower()}"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("stored", "country", "party_b"),
    [
        ("+254 712 345 678", "KE", "254712345678"),
        ("254712345678", "KE", "254712345678"),
        ("0112345678", "KE", "254112345678"),
        ("0754123456", "TZ", "255754123456"),
        ("+255754123456", "TZ", "255754123456"),
    ],
)
def test_the_host_s_number_goes_in_daraja_s_format(host, host_number, stored, country, party_b):
    host_number["value"] = stored
    withdrawal = make_withdrawal(host, currency="TZS" if country == "TZ" else "KES", country=country)
    session, adapter = daraja(b2c=ok("mpesa_b2c_accepted.json"))

    Mpesa().send_transfer(withdrawal, session=session)

    assert sent_to(adapter, B2C_URL)[0].json()["PartyB"] == party_b


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("stored", "country"),
    [("12345", "KE"), ("", "KE"), ("255754123456", "KE"), ("254712345678", "TZ")],
    ids=["not-a-number", "empty", "tanzanian-number-on-a-kenyan-account", "kenyan-number-on-a-tanzanian-account"],
)
def test_a_number_m_pesa_cannot_pay_is_refused_before_anything_is_sent(host, host_number, stored, country):
    host_number["value"] = stored
    withdrawal = make_withdrawal(host, currency="TZS" if country == "TZ" else "KES", country=country)
    session, adapter = daraja(b2c=ok("mpesa_b2c_accepted.json"))

    with pytest.raises(TransferRefusedError) as refused:
        Mpesa().send_transfer(withdrawal, session=session)

    assert "ending 5678" in refused.value.message and "M-Pesa number" in refused.value.message
    assert adapter.sent == []


@pytest.mark.django_db
def test_an_amount_with_cents_is_refused_rather_than_rounded(host, host_number):
    withdrawal = make_withdrawal(host, amount="1500.50")
    session, adapter = daraja(b2c=ok("mpesa_b2c_accepted.json"))

    with pytest.raises(TransferRefusedError) as refused:
        Mpesa().send_transfer(withdrawal, session=session)

    assert "whole KES" in refused.value.message and "1,500.50" in refused.value.message
    assert refused.value.code == "transfer_refused" and refused.value.status == 422
    assert adapter.sent == []


@pytest.mark.django_db
def test_a_currency_m_pesa_does_not_pay_out_in_is_refused(host, host_number):
    withdrawal = make_withdrawal(host, amount="150.00", currency="USD")
    session, adapter = daraja(b2c=ok("mpesa_b2c_accepted.json"))

    with pytest.raises(TransferRefusedError, match="KES and TZS only"):
        Mpesa().send_transfer(withdrawal, session=session)
    assert adapter.sent == []


@pytest.mark.django_db
def test_the_callback_urls_carry_the_current_token_while_it_rotates(withdrawal, settings):
    settings.MPESA_CALLBACK_TOKEN, settings.MPESA_CALLBACK_TOKEN_PREVIOUS = "cb-new", "cb-old"
    session, adapter = daraja(b2c=ok("mpesa_b2c_accepted.json"))

    Mpesa().send_transfer(withdrawal, session=session)

    body = sent_to(adapter, B2C_URL)[0].json()
    assert body["ResultURL"] == body["QueueTimeOutURL"] == f"https://stayafrica.example{WEBHOOK}?token=cb-new"


# --- sending: answers and errors -----------------------------------------------------------------


@pytest.mark.django_db
def test_a_duplicate_originator_conversation_id_means_already_sent_so_pending(withdrawal):
    """A retry after a lost answer: Daraja refuses the second request under the same reference
    (500, errorCode 500.002.1001). The first is on its way; nothing fails and nothing is paid twice."""
    withdrawal.provider_transfer_id = "AG_20240706_20106e9209f64bebd05b"
    session, adapter = daraja(b2c=(500, recorded("mpesa_b2c_duplicate.json"), "application/json"))

    result = Mpesa().send_transfer(withdrawal, session=session)

    assert result.status == PENDING
    assert result.provider_transfer_id == "AG_20240706_20106e9209f64bebd05b"
    assert sent_to(adapter, B2C_URL)[0].json()["OriginatorConversationID"] == withdrawal.transfer_reference


@pytest.mark.django_db
def test_a_retry_after_a_timeout_sends_the_same_originator_conversation_id(withdrawal):
    session, adapter = daraja(b2c=requests.Timeout("read timed out"))
    with pytest.raises(ProviderUnavailableError):
        Mpesa().send_transfer(withdrawal, session=session)

    adapter.answers[("POST", B2C_URL)] = (500, recorded("mpesa_b2c_duplicate.json"), "application/json")
    assert Mpesa().send_transfer(withdrawal, session=session).status == PENDING

    first, second = (sent.json()["OriginatorConversationID"] for sent in sent_to(adapter, B2C_URL))
    assert first == second == withdrawal.transfer_reference


@pytest.mark.django_db
@pytest.mark.parametrize(
    "failing",
    [
        requests.Timeout("read timed out"),
        requests.ConnectionError("connection refused"),
        (500, recorded("mpesa_b2c_server_error.json"), "application/json"),
        (503, b"<html>Service Unavailable</html>", "text/html"),
        (
            401,
            b'{"requestId": "1", "errorCode": "404.001.03", "errorMessage": "Invalid Access Token"}',
            "application/json",
        ),
        (429, b'{"requestId": "2", "errorCode": "500.003.03", "errorMessage": "Quota Violation"}', "application/json"),
        (
            400,
            b'{"requestId": "3", "errorCode": "400.002.02", "errorMessage": "Bad Request - Invalid InitiatorName"}',
            "application/json",
        ),
        (200, b'{"requestId": "4", "ResponseCode": "1", "ResponseDescription": "Rejected"}', "application/json"),
    ],
    ids=["timeout", "unreachable", "500", "503-html", "401", "429", "400-our-initiator", "200-not-accepted"],
)
def test_errors_a_retry_may_mend_are_provider_unavailable(withdrawal, failing):
    session, adapter = daraja(b2c=failing)

    with pytest.raises(ProviderUnavailableError) as raised:
        Mpesa().send_transfer(withdrawal, session=session)

    assert raised.value.status == 503
    # Daraja's words stay in the server log.
    assert "Invalid" not in raised.value.message and "Quota" not in raised.value.message


@pytest.mark.django_db
def test_the_oauth_call_failing_is_provider_unavailable_and_sends_no_payment(withdrawal):
    session, adapter = session_with({("GET", TOKEN_URL): requests.ConnectionError("down")})

    with pytest.raises(ProviderUnavailableError):
        Mpesa().send_transfer(withdrawal, session=session)
    assert sent_to(adapter, B2C_URL) == []


@pytest.mark.django_db
def test_an_invalid_msisdn_400_is_refused_with_words_staff_can_act_on(withdrawal):
    session, adapter = daraja(b2c=(400, recorded("mpesa_b2c_invalid_msisdn.json"), "application/json"))

    with pytest.raises(TransferRefusedError) as refused:
        Mpesa().send_transfer(withdrawal, session=session)

    message = refused.value.message
    assert "phone number ending 5678" in message
    assert "check the host's M-Pesa number" in message
    assert "Bad Request - Invalid PartyB" in message
    assert "254712345678" not in message  # the full number is never shown


@pytest.mark.django_db
def test_an_invalid_amount_400_is_refused(withdrawal):
    payload = recorded_json("mpesa_b2c_invalid_msisdn.json")
    payload["errorMessage"] = "Bad Request - Invalid Amount"
    session, adapter = daraja(b2c=answer(400, payload))

    with pytest.raises(TransferRefusedError, match="KES 10 to 250,000"):
        Mpesa().send_transfer(withdrawal, session=session)


@pytest.mark.django_db
def test_a_payout_with_no_transfer_reference_is_never_sent(withdrawal):
    withdrawal.transfer_reference = ""
    session, adapter = daraja(b2c=ok("mpesa_b2c_accepted.json"))

    with pytest.raises(ValueError):
        Mpesa().send_transfer(withdrawal, session=session)
    assert adapter.sent == []


@pytest.mark.django_db
def test_calls_made_without_a_session_use_the_shared_one(withdrawal, provider_http):
    """The payout job hands no session: finance.providers.base.http_session answers."""
    provider_http.answers.update(
        {("GET", TOKEN_URL): ok("mpesa_access_token.json"), ("POST", B2C_URL): ok("mpesa_b2c_accepted.json")}
    )

    assert Mpesa().send_transfer(withdrawal).status == PENDING
    assert [sent.path_url for sent in provider_http.sent] == [TOKEN_URL, B2C_URL]


def test_m_pesa_pays_mobile_money_only():
    assert Mpesa().transfer_account_types == ("mobile_money",)


# --- asking about a transfer ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_status_query_asks_by_our_reference_and_answers_pending(withdrawal):
    withdrawal.provider_transfer_id = "AG_20240706_20106e9209f64bebd05b"
    session, adapter = daraja(status=ok("mpesa_transaction_status_accepted.json"))

    result = Mpesa().fetch_transfer(withdrawal, session=session)

    assert result.status == PENDING  # the answer comes later, as a callback
    assert result.provider_transfer_id == "AG_20240706_20106e9209f64bebd05b"  # the payment's, not the query's
    query = sent_to(adapter, STATUS_URL)[0]
    assert query.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert query.json() == {
        "Initiator": "stayafrica_api",
        "SecurityCredential": "encrypted-initiator-password==",
        "CommandID": "TransactionStatusQuery",
        "OriginalConversationID": withdrawal.transfer_reference,
        "PartyA": "600996",
        "IdentifierType": "4",
        "ResultURL": CALLBACK_URL,
        "QueueTimeOutURL": CALLBACK_URL,
        "Remarks": f"Status of payout {withdrawal.reference}",
        "Occasion": f"payout-status:{withdrawal.transfer_reference}",
    }
    assert sent_to(adapter, B2C_URL) == []  # asking never pays


@pytest.mark.django_db
@pytest.mark.parametrize(
    "failing",
    [
        requests.Timeout("read timed out"),
        (500, recorded("mpesa_b2c_server_error.json"), "application/json"),
        (400, recorded("mpesa_b2c_invalid_msisdn.json"), "application/json"),
    ],
    ids=["timeout", "500", "400"],
)
def test_a_failed_status_query_is_unavailable_never_a_refusal(withdrawal, failing):
    """A query that fails says nothing about the payout: the job asks again later."""
    session, adapter = daraja(status=failing)

    with pytest.raises(ProviderUnavailableError):
        Mpesa().fetch_transfer(withdrawal, session=session)


# --- callbacks ------------------------------------------------------------------------------------------


def callback(name: str, reference: str, **changes) -> bytes:
    """A recorded callback as Daraja posts it (without our "_doc" note), for `reference`."""
    payload = recorded_json(name)
    del payload["_doc"]
    result = payload["Result"]
    result["OriginatorConversationID"] = reference
    result.update(changes)
    return json.dumps(payload).encode()


def post(raw: bytes, token="cb-secret"):
    query = f"?token={token}" if token is not None else ""
    return APIClient().generic("POST", WEBHOOK + query, raw, content_type="application/json")


@pytest.mark.django_db
def test_a_success_result_reads_as_the_payout_settled_with_the_receipt_and_amount():
    event = Mpesa().parse(callback("mpesa_b2c_result_success.json", "payout-wd-1"))

    assert event.outcome == SUCCESS
    assert event.is_transfer and event.transfer_reference == "payout-wd-1"
    assert event.payment_reference == ""
    assert event.provider_reference == "SG632NMUAB"  # the M-Pesa receipt the host gets by SMS
    assert event.raw_amount == 10 and event.amount is None and event.currency == ""
    assert event.event_id == "b2c:AG_20240706_2010364430d9bbdaf872:0"
    assert event.event_type == "b2c_result.success"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "reason", "code"),
    [
        ("mpesa_b2c_result_initiator_invalid.json", "The initiator information is invalid.", "2001"),
        ("mpesa_b2c_result_insufficient_balance.json", "The balance is insufficient for the transaction.", "1"),
    ],
)
def test_a_failure_result_reads_as_failed_with_daraja_s_reason(name, reason, code):
    event = Mpesa().parse(callback(name, "payout-wd-1"))

    assert event.outcome == FAILED
    assert event.transfer_reference == "payout-wd-1"
    assert event.failure_reason == reason
    assert event.event_id.startswith("b2c:AG_") and event.event_id.endswith(f":{code}")
    assert event.provider_reference.startswith("AG_")  # the ConversationID


@pytest.mark.django_db
def test_a_queue_timeout_settles_nothing():
    """Daraja may still process a request that timed out in its queue: failing the payout (and
    releasing the hold) could pay the host twice. It is ignored; the stuck-transfer query settles it."""
    event = Mpesa().parse(callback("mpesa_b2c_queue_timeout.json", "payout-wd-1"))

    assert event.outcome == IGNORED
    assert event.event_type == "b2c_result.queue_timeout"
    assert event.transfer_reference == "payout-wd-1"
    assert "timed out" in event.failure_reason
    # ResultCode 1 is also "insufficient balance": the two never share an event id.
    failure = Mpesa().parse(
        callback("mpesa_b2c_result_insufficient_balance.json", "payout-wd-1", ConversationID=event.provider_reference)
    )
    assert failure.outcome == FAILED and failure.event_id != event.event_id


@pytest.mark.django_db
def test_a_status_result_maps_back_to_the_payout_not_to_the_query():
    event = Mpesa().parse(callback("mpesa_transaction_status_result.json", "3213-416199-2"))

    assert event.outcome == SUCCESS
    assert event.transfer_reference == "payout-wd-recorded"  # the payment's, from ResultParameters
    assert event.provider_reference == "MBN31H462N"  # its receipt
    assert event.raw_amount == "300"
    assert event.event_type == "b2c_status.completed"
    assert event.event_id == "b2c-status:AG_20180223_0000493344ae97d86f75:0"


@pytest.mark.django_db
def test_a_failed_status_query_result_never_fails_the_payout():
    """The query itself failed (here: our initiator): its Result carries the query's ids only.
    The Occasion we sent maps it back to the payout, and it settles nothing."""
    payload = recorded_json("mpesa_transaction_status_result.json")
    del payload["_doc"], payload["Result"]["ResultParameters"]
    payload["Result"].update(ResultCode=2001, ResultDesc="The initiator information is invalid.")

    event = Mpesa().parse(json.dumps(payload).encode())

    assert event.outcome == IGNORED
    assert event.event_type == "b2c_status.query_failed"
    assert event.transfer_reference == "payout-wd-recorded"


@pytest.mark.django_db
def test_a_status_other_than_completed_settles_nothing():
    payload = recorded_json("mpesa_transaction_status_result.json")
    for parameter in payload["Result"]["ResultParameters"]["ResultParameter"]:
        if parameter["Key"] == "TransactionStatus":
            parameter["Value"] = "Pending Approval"

    event = Mpesa().parse(json.dumps(payload).encode())

    assert event.outcome == IGNORED
    assert event.event_type == "b2c_status.pending_approval"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {"Result": {"ResultCode": 0, "OriginatorConversationID": "payout-wd-1"}},
        {"Result": {"ConversationID": "AG_1", "ResultCode": 0, "OriginatorConversationID": "payout-wd-1"}},
        {"Result": "not an object"},
        {"Result": {"ConversationID": "AG_1", "ResultCode": 0, "ResultParameters": {"ResultParameter": "x"}}},
    ],
    ids=["no-conversation-id", "success-without-amount", "not-an-object", "parameters-not-a-list"],
)
def test_a_result_we_cannot_read_is_malformed(body):
    from finance.providers.base import MalformedEventError

    with pytest.raises(MalformedEventError):
        Mpesa().parse(json.dumps(body).encode())


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name",
    [
        "mpesa_b2c_result_success.json",
        "mpesa_b2c_result_initiator_invalid.json",
        "mpesa_b2c_queue_timeout.json",
        "mpesa_transaction_status_result.json",
    ],
)
def test_each_callback_through_the_webhook_is_stored_once(withdrawal, name):
    raw = callback(name, withdrawal.transfer_reference)
    expected = Mpesa().parse(raw)

    first = post(raw)
    again = post(raw)  # Daraja redelivers

    assert first.status_code == 200, first.content
    assert first.json()["event_id"] == expected.event_id
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    stored = WebhookEvent.objects.get()
    assert (stored.provider, stored.event_id, stored.event_type) == ("mpesa", expected.event_id, expected.event_type)
    assert json.loads(stored.raw_body) == json.loads(raw)
    withdrawal.refresh_from_db()
    assert withdrawal.status == "pending"  # settling is the payout engine's (another branch)


@pytest.mark.django_db
@pytest.mark.parametrize("token", ["guess", "", None])
def test_a_result_callback_without_the_token_is_401_and_nothing_is_stored(withdrawal, token):
    response = post(callback("mpesa_b2c_result_success.json", withdrawal.transfer_reference), token=token)

    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")
    assert WebhookEvent.objects.count() == 0


@pytest.mark.django_db
def test_a_result_signed_with_the_previous_token_is_still_taken_while_it_rotates(withdrawal, settings):
    """Payouts sent before the rotation carry the old token in their ResultURL."""
    settings.MPESA_CALLBACK_TOKEN, settings.MPESA_CALLBACK_TOKEN_PREVIOUS = "cb-new", "cb-secret"

    response = post(callback("mpesa_b2c_result_success.json", withdrawal.transfer_reference), token="cb-secret")

    assert response.status_code == 200
    assert WebhookEvent.objects.count() == 1


@pytest.mark.django_db
def test_stk_callbacks_read_as_before():
    raw = json.dumps(
        {
            "Body": {
                "stkCallback": {
                    "MerchantRequestID": "29115-34620561-1",
                    "CheckoutRequestID": "ws_CO_1",
                    "ResultCode": 0,
                    "ResultDesc": "The service request is processed successfully.",
                    "CallbackMetadata": {"Item": [{"Name": "Amount", "Value": 1000}]},
                }
            }
        }
    ).encode()

    event = Mpesa().parse(raw)

    assert (event.event_id, event.outcome, event.raw_amount) == ("ws_CO_1:0", SUCCESS, 1000)
    assert not event.is_transfer
