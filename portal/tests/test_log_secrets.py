"""No secret in the logs. A day's work runs in this process, with the production profile's log
format (LOG_FORMAT=json) captured at DEBUG for every logger, the libraries' included: staff sign
in (once with a wrong password), an API token is issued, webhooks arrive signed with the current
secret, the previous one and none, M-Pesa callbacks carry their token in the URL, a guest's
message goes through a real Erlang node still on the previous shared secret, and a host adds a
bank account and withdraws to it. Then every line is read for every secret configured (the
published development values and this test's own), the passwords, the API token and the full
bank account number: only its last four digits may appear."""

import hashlib
import hmac
import json
import secrets

import pytest
from rest_framework.test import APIClient

from messaging.models import Conversation, Message
from portal.secrets_check import DEVELOPMENT_SECRETS, ROTATED_SECRETS
from testing.erlang_node import ErlangNode
from testing.log_capture import captured_logs
from testing.paystack import answer_verify_as_posted
from testing.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/payments"
PASSWORD = "pass-12345"  # conftest.make_user's password
ACCOUNT_NUMBER = "31415926535897"


def own_value(name: str) -> str:
    return f"{name.lower()}-{secrets.token_urlsafe(24)}"


@pytest.fixture
def own_secrets(settings) -> list[str]:
    """A private value for every secret, a previous one for every rotated secret, and a fallback
    SECRET_KEY; returns them all."""
    values = {name: own_value(name) for name in DEVELOPMENT_SECRETS}
    values |= {f"{name}_PREVIOUS": own_value(f"{name}_PREVIOUS") for name in ROTATED_SECRETS}
    for name, value in values.items():
        setattr(settings, name, value)
    settings.SECRET_KEY_FALLBACKS = [own_value("SECRET_KEY_FALLBACKS")]
    return [*values.values(), *settings.SECRET_KEY_FALLBACKS]


def token_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def sign_in(finance_user, host) -> str:
    """Staff through the sign-in page (and a host mistyping it), then an API token: the token."""
    from django.test import Client

    assert Client().post("/admin/login/", {"username": finance_user.username, "password": PASSWORD}).status_code == 302
    assert Client().post("/admin/login/", {"username": host.username, "password": "mistyped"}).status_code == 200
    answer = APIClient().post(f"{API}/auth/token/", {"username": finance_user.username, "password": PASSWORD})
    assert answer.status_code == 200, answer.content
    return answer.json()["token"]


def deliver_webhooks(settings, payment, mpesa_payment, provider_http) -> None:
    """Paystack signed with the current secret, the previous one and neither (its verify endpoint,
    called with the secret key, agrees); M-Pesa callbacks with the current token, the previous
    one and a guess in their URL."""
    raw = json.dumps(
        {
            "event": "charge.success",
            "data": {"id": 7, "reference": payment.reference, "amount": 100000, "currency": "NGN"},
        }
    ).encode()
    answer_verify_as_posted(provider_http, "paystack", raw)
    for key, status in [(settings.PAYSTACK_SECRET_KEY, 200), (settings.PAYSTACK_SECRET_KEY_PREVIOUS, 200), ("x", 401)]:
        signature = hmac.new(key.encode(), raw, hashlib.sha512).hexdigest()
        answer = APIClient().generic(
            "POST",
            f"{API}/webhooks/paystack/",
            raw,
            content_type="application/json",
            HTTP_X_PAYSTACK_SIGNATURE=signature,
        )
        assert answer.status_code == status
    callback = {"Body": {"stkCallback": {"CheckoutRequestID": mpesa_payment.provider_reference, "ResultCode": 1032}}}
    for token, status in [
        (settings.MPESA_CALLBACK_TOKEN, 200),
        (settings.MPESA_CALLBACK_TOKEN_PREVIOUS, 200),
        ("x", 401),
    ]:
        answer = APIClient().post(f"{API}/webhooks/mpesa/?token={token}", callback, format="json")
        assert answer.status_code == status


def send_a_message_through_erlang(host, guest) -> Message:
    conversation = Conversation.objects.create(subject="Arrival")
    conversation.participants.add(host, guest)
    client = APIClient()
    client.force_authenticate(guest)
    answer = client.post(f"/api/messaging/conversations/{conversation.pk}/messages/", {"text": "At 3pm"})
    assert answer.status_code == 201 and answer.json()["via"] == "erlang", answer.content
    assert wait_until(lambda: Message.objects.filter(pk=answer.json()["id"]).exists(), seconds=30)
    return Message.objects.get(pk=answer.json()["id"])


def withdraw_to_a_new_bank_account(host, finance_token: str, funded_wallet) -> None:
    from finance.api.tokens import issue_api_token

    as_host = token_client(issue_api_token(host))
    account = as_host.post(
        f"{API}/bank-accounts/",
        {"bank_name": "GTBank", "account_name": "Host One", "account_number": ACCOUNT_NUMBER},
        format="json",
    )
    assert account.status_code == 201, account.content
    body = {"wallet": funded_wallet.pk, "bank_account": account.json()["id"], "amount": "2000.00"}
    withdrawal = as_host.post(f"{API}/withdrawals/", body, format="json")
    assert withdrawal.status_code == 201, withdrawal.content
    completed = token_client(finance_token).post(f"{API}/withdrawals/{withdrawal.json()['id']}/complete/")
    assert completed.status_code == 200, completed.content


def test_a_days_work_logs_no_secret_password_token_or_full_account_number(
    settings,
    live_server,
    own_secrets,
    finance_user,
    host,
    guest,
    funded_wallet,
    make_booking,
    make_payment,
    provider_http,
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SANDBOX_AUTOCOMPLETE = False
    payment = make_payment(make_booking(host, guest, currency="NGN"), provider="paystack")
    mpesa_payment = make_payment(make_booking(host, guest, currency="KES", country="KE"), provider="mpesa")
    mpesa_payment.provider_reference = "ws_CO_42"
    mpesa_payment.save()
    # The node still has the previous shared secret: every call is refused, then retried with it.
    node = ErlangNode(django_url=live_server.url, secret=settings.MESSAGING_SHARED_SECRET_PREVIOUS)
    with node, captured_logs("json", level="DEBUG") as logs:
        settings.ERLANG_MESSAGING_URL = node.url
        finance_token = sign_in(finance_user, host)
        deliver_webhooks(settings, payment, mpesa_payment, provider_http)
        send_a_message_through_erlang(host, guest)
        withdraw_to_a_new_bank_account(host, finance_token, funded_wallet)
        node_log = node.log_path.read_text(errors="replace")
        text = logs.text()

    lines = logs.lines()  # every line one JSON object
    loggers = {line["logger"] for line in lines}
    # What was logged is the day's work, traced by request ids: not an empty capture.
    assert {"finance.payments", "messaging", "messaging.erlang"} <= loggers, loggers
    assert any("failed verification" in line["message"] for line in lines)
    assert any(line["message"].startswith("persistence callback: 1 stored") for line in lines)
    assert all(line["request_id"] for line in lines if line["logger"].split(".")[0] in {"finance", "messaging"})
    forbidden = {
        **{f"secret #{n}": value for n, value in enumerate(own_secrets)},
        **{f"development {name}": value for name, value in DEVELOPMENT_SECRETS.items()},
        "password": PASSWORD,
        "API token": finance_token,
        "bank account number": ACCOUNT_NUMBER,
        "bank account number but its last four digits": ACCOUNT_NUMBER[:-4],
    }
    assert [what for what, value in forbidden.items() if value in text] == []
    assert [what for what, value in forbidden.items() if value in node_log] == []
