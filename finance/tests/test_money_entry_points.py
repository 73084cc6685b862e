"""Every place money is typed or received refuses a bad amount cleanly: a 400 or a form error,
never a 500, and nothing moves.

The rule itself is `finance.money.parse_amount` (test_money.py); this drives each entry point
with the same nasty strings: the REST API (withdrawal, refund), the portal's refund form and
wallet balance filter, and the providers' webhooks (minor and major units).
"""

import hashlib
import hmac
import json
from decimal import Decimal

import pytest
from django.core.cache import cache
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from finance.api.tokens import issue_api_token
from finance.errors import InvalidAmountError
from finance.models import BankAccount, Payment, WalletTransaction, WebhookEvent
from finance.money import parse_amount, parse_typed_amount
from finance.services import TransactionService
from testing.ledger import ledger_snapshot
from testing.paystack import answer_paystack_verify

NASTIES = [
    "12345678901234567890123456789.123",
    "9999999999999999.01",
    "NaN",
    "nan",
    "-NaN",
    "sNaN",
    "Infinity",
    "-Infinity",
    "inf",
    "1e400",
    "-1e400",
    "1e-400",
    "1E+999999999999",
    "1e-999999999999",
    "",
    "   ",
    "0",
    "-5",
    "1,000",
    "1_000",
    "0x10",
    "١٢٣",
    "12.345",
    "0e999999999",
    "-0E+99999999999",
]

amount_texts = st.one_of(
    st.sampled_from(NASTIES),
    st.text(max_size=40),
    # huge and tiny exponents
    st.builds(lambda m, e: f"{m}e{e}", st.integers(-999, 999), st.integers(-(10**12), 10**12)),
    # many decimals, the last one not zero
    st.builds(lambda i, d: f"{i}.{d}1", st.integers(0, 10**20), st.text("0123456789", min_size=2, max_size=60)),
    # more whole digits than the column holds
    st.integers(min_value=10**16, max_value=10**60).map(str),
)

EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def refused_by_the_rule(text: str, currency: str, *, rule=parse_amount) -> bool:
    try:
        rule(text, currency)
    except InvalidAmountError:
        return True
    return False


def test_the_listed_nasties_are_all_refused_by_the_rule():
    assert all(refused_by_the_rule(text, "NGN") for text in NASTIES)


def assert_error_shape(response, status=400):
    assert response.status_code == status, (response.status_code, response.content[:300])
    error = response.json()["error"]
    assert error["code"] in ("invalid", "invalid_amount") and error["message"], error


@pytest.fixture
def money_world(host, guest, finance_user, paid_booking, settings):
    settings.SANDBOX_AUTOCOMPLETE = False
    settings.PAYSTACK_SECRET_KEY = "sk_test_paystack"
    settings.WEBHOOK_FAILED_VERIFICATION_LIMIT = 10_000
    cache.clear()
    wallet = TransactionService.create_wallet(host, "NGN")
    TransactionService.credit_wallet(wallet, Decimal("10000.00"))
    account = BankAccount.objects.create(
        owner=host, bank_name="GTBank", account_name="Host One", account_number_last4="4321", is_primary=True
    )
    return {
        "wallet": wallet,
        "account": account,
        "booking": paid_booking,
        "host_token": issue_api_token(host),
        "finance_token": issue_api_token(finance_user),
        "finance_user": finance_user,
    }


@pytest.mark.django_db
def test_api_withdrawal_and_refund_refuse_bad_amounts_with_a_400(money_world):
    api = APIClient()

    @EXAMPLES
    @given(text=amount_texts)
    def check(text):
        assume(refused_by_the_rule(text, "NGN"))
        before = ledger_snapshot()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {money_world['host_token']}")
        body = {"wallet": money_world["wallet"].pk, "bank_account": money_world["account"].pk, "amount": text}
        assert_error_shape(api.post("/api/payments/withdrawals/", body, format="json"))
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {money_world['finance_token']}")
        refund = f"/api/payments/bookings/{money_world['booking'].pk}/refund/"
        assert_error_shape(api.post(refund, {"amount": text, "reason": "Guest cancelled"}, format="json"))
        assert ledger_snapshot() == before

    check()


@pytest.mark.django_db
def test_portal_refund_form_and_balance_filter_show_bad_amounts_as_form_errors(client, money_world):
    client.force_login(money_world["finance_user"])

    @EXAMPLES
    @given(text=amount_texts)
    def check(text):
        # The portal reads amounts as people type them ("1,000" is a thousand); the API stays strict.
        assume(refused_by_the_rule(text, "NGN", rule=parse_typed_amount))
        assume("\x00" not in text)  # a NUL never reaches a view: Django's test client refuses it
        data = {"booking": money_world["booking"].pk, "amount": text, "reason": "Guest cancelled"}
        review = client.post("/admin/operations/refunds/confirm/", data)
        assert review.status_code == 400, (text, review.status_code)
        assert b"Yes, refund" not in review.content
        listing = client.get("/admin/operations/wallets/", {"balance_min": text, "balance_max": text})
        assert listing.status_code == 200, (text, listing.status_code)  # the list, with the filter's error
        assert not WalletTransaction.objects.filter(type="refund").exists()

    check()


def _paystack(raw: bytes) -> dict:
    return {"HTTP_X_PAYSTACK_SIGNATURE": hmac.new(b"sk_test_paystack", raw, hashlib.sha512).hexdigest()}


def _as_json_value(text: str) -> str:
    """The text as a JSON number when it reads as one (a provider sending 1e400), else a JSON string."""
    try:
        json.loads(text, parse_float=Decimal)
    except ValueError:
        return json.dumps(text)
    return text if text.strip() else json.dumps(text)


@pytest.mark.django_db
def test_webhooks_with_absurd_amounts_are_refused_or_recorded_never_a_500(
    money_world, host, guest, make_booking, provider_http
):
    paystack, sandbox = (
        Payment.objects.create(
            booking=make_booking(host, guest), provider=provider, amount=Decimal("1000.00"), currency="NGN"
        )
        for provider in ("paystack", "sandbox")
    )
    answer_paystack_verify(provider_http, paystack)  # Paystack's record: the guest paid NGN 1,000.00
    api = APIClient()
    serial = iter(range(10**6))

    def send(provider, raw, headers):
        response = api.generic(
            "POST", f"/api/payments/webhooks/{provider}/", raw, content_type="application/json", **headers
        )
        assert response.status_code in (200, 400), (provider, raw[:200], response.status_code)
        if response.status_code == 200:
            assert response.json()["status"] in ("rejected", "flagged"), response.json()
        else:
            assert response.json()["error"]["code"] == "malformed_event"

    @EXAMPLES
    @given(text=amount_texts)
    def check(text):
        assume(refused_by_the_rule(text, "NGN"))
        value = _as_json_value(text)
        raw = (
            f'{{"event": "charge.success", "data": {{"id": {next(serial)}, "reference": "{paystack.reference}", '
            f'"amount": {value}, "currency": "NGN"}}}}'
        ).encode()
        send("paystack", raw, _paystack(raw))
        from finance.providers.sandbox import sign

        raw = (
            f'{{"id": "evt_{next(serial)}", "type": "payment.succeeded", '
            f'"data": {{"reference": "{sandbox.reference}", "amount": {value}, "currency": "NGN"}}}}'
        ).encode()
        send("sandbox", raw, {"HTTP_X_SANDBOX_SIGNATURE": sign(raw)})
        assert not Payment.objects.filter(pk__in=[paystack.pk, sandbox.pk], ledger_transaction__isnull=False).exists()

    check()
    assert WebhookEvent.objects.exclude(outcome__in=["rejected", "flagged"]).count() == 0
