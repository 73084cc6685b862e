"""Property-based run of every /api/payments/ operation against the published OpenAPI schema.

schemathesis generates requests from /api/schema/ (served by drf-spectacular through the real WSGI
application) and checks each answer: never a 5xx, a documented status code and content type, and a
body that matches the documented schema. /api/messaging/ is someone else's and is left out.

Half of the generated requests get a path parameter that names a real object, so the happy paths
and the state errors (409) are exercised too, not only "not found". Staff operations are called as
finance staff, paying as the booking's guest, everything else as the host who owns the objects.
Payment providers are never reached: their HTTP session answers with the recorded payloads.
"""

import itertools
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import schemathesis
from django.core.cache import cache
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from finance.api.tokens import issue_api_token
from finance.models import BankAccount
from finance.providers import base as providers_base
from finance.services import TransactionService

RECORDED = Path(__file__).parent / "recorded"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

STAFF_OPERATIONS = ("/complete/", "/fail/", "/reverse/", "/refund/")


@pytest.fixture(scope="module")
def payments_schema(django_db_setup, django_db_blocker):
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()  # the project's, whatever package holds its settings
    with django_db_blocker.unblock():
        loaded = schemathesis.openapi.from_wsgi("/api/schema/", application)
    return loaded.include(path_regex=r"^/api/payments/")


class _Recorded(requests.adapters.BaseAdapter):
    """The providers' documented success answers, so checkout never leaves the process."""

    ANSWERS = {
        "api.paystack.co": "paystack_initialize.json",
        "api.flutterwave.com": "flutterwave_create_payment.json",
        "api.stripe.com": "stripe_payment_intent.json",
    }

    def send(self, request, **kwargs):
        host = requests.utils.urlparse(request.url).hostname
        if host == "api.safaricom.co.ke":
            name = "mpesa_access_token.json" if "oauth" in request.url else "mpesa_stk_push.json"
        else:
            name = self.ANSWERS[host]
        response = requests.Response()
        response.status_code = 200
        response._content = (RECORDED / name).read_bytes()
        response.headers["Content-Type"] = "application/json"
        response.url, response.request = request.url, request
        return response

    def close(self):
        pass


@dataclass
class ApiData:
    tokens: dict
    ids: dict
    counter: itertools.count


@pytest.fixture
def api_data(host, guest, finance_user, make_booking, make_payment, monkeypatch, settings):
    settings.SANDBOX_AUTOCOMPLETE = False  # no self-posted webhook thread
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()
    session = requests.Session()
    session.mount("https://", _Recorded())
    # Only finance.providers.base sees the replacement; `requests` itself stays untouched.
    only_here = SimpleNamespace(Session=lambda: session, RequestException=requests.RequestException)
    monkeypatch.setattr(providers_base, "requests", only_here)

    wallet = TransactionService.create_wallet(host, "NGN")
    credit = TransactionService.credit_wallet(wallet, Decimal("10000.00"))
    account = BankAccount.objects.create(
        owner=host, bank_name="GTBank", account_name="Host One", account_number_last4="4321", is_primary=True
    )
    withdrawal = TransactionService.initiate_withdrawal(wallet, account, Decimal("2000.00"), actor=host)
    paid = make_booking(host, guest)
    TransactionService.process_booking_payment(paid, make_payment(paid))
    pending = make_booking(host, guest)
    tokens = {user: issue_api_token(obj) for user, obj in (("host", host), ("guest", guest))}
    tokens["finance"] = issue_api_token(finance_user)
    ids = {
        "/wallets/": {"id": wallet.pk},
        "/bank-accounts/": {"id": account.pk},
        "/withdrawals/": {"id": withdrawal.pk},
        "/transactions/": {"reference": credit.reference},
        "/bookings/{id}/pay/": {"id": pending.pk},
        "/bookings/{id}/refund/": {"id": paid.pk},
        "/webhooks/": {"provider": "paystack"},
    }
    return ApiData(tokens=tokens, ids=ids, counter=itertools.count())


def _caller(path: str) -> str:
    if path.endswith(STAFF_OPERATIONS):
        return "finance"
    if path.endswith("/pay/"):
        return "guest"
    return "host"


def _real_ids(path: str, data: ApiData) -> dict:
    for fragment, ids in data.ids.items():
        if fragment in path:
            return ids
    return {}


# Every operation of the payments API, as "METHOD path" in the schema.
OPERATIONS = [
    "POST /api/payments/auth/token/",
    "POST /api/payments/webhooks/{provider}/",
    "GET /api/payments/wallets/my_wallet/",
    "GET /api/payments/wallets/{id}/",
    "GET /api/payments/wallets/{id}/balance/",
    "GET /api/payments/wallets/{id}/transactions/",
    "GET /api/payments/bank-accounts/",
    "POST /api/payments/bank-accounts/",
    "POST /api/payments/bank-accounts/{id}/set_primary/",
    "GET /api/payments/withdrawals/",
    "POST /api/payments/withdrawals/",
    "GET /api/payments/withdrawals/{id}/",
    "POST /api/payments/withdrawals/{id}/complete/",
    "POST /api/payments/withdrawals/{id}/fail/",
    "GET /api/payments/transactions/",
    "GET /api/payments/transactions/{reference}/",
    "POST /api/payments/transactions/{reference}/reverse/",
    "POST /api/payments/bookings/{id}/pay/",
    "POST /api/payments/bookings/{id}/refund/",
]

HYPOTHESIS = settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


# schemathesis.pytest.from_fixture() fails under pytest 9 (it reads the removed `Function._nodeid`),
# so each operation's strategy is driven by Hypothesis directly, inside an ordinary pytest test.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("label", OPERATIONS)
def test_payments_api_conforms_to_its_schema(label, payments_schema, api_data):
    operation = payments_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in /api/schema/"
    path = operation.path

    @HYPOTHESIS
    @given(case=operation.as_strategy())
    def check(case):
        if case.path_parameters and next(api_data.counter) % 2 == 0:
            case.path_parameters = {**case.path_parameters, **_real_ids(path, api_data)}
        headers = {"Authorization": f"Bearer {api_data.tokens[_caller(path)]}"}
        case.call_and_validate(headers=headers, checks=CHECKS)

    check()


def test_schema_covers_every_payments_route(payments_schema):
    """Every operation of the payments API is in the schema (and nothing from /api/messaging/)."""
    operations = {f"{op.method.upper()} {op.path}" for op in _operations(payments_schema)}
    assert all(label.split()[1].startswith("/api/payments/") for label in operations)
    assert operations == set(OPERATIONS)


def _operations(loaded):
    for result in loaded.get_all_operations():
        yield result.ok()


@pytest.mark.django_db(transaction=True)
def test_pay_documents_the_provider_unavailable_answer(payments_schema, api_data, monkeypatch, settings):
    """When the real provider is down, pay answers 503 provider_unavailable: that answer must be documented."""
    settings.SANDBOX_PAYMENTS_ENABLED = False
    session = requests.Session()

    class Down(requests.adapters.BaseAdapter):
        def send(self, request, **kwargs):
            raise requests.ConnectionError("connection refused", request=request)

        def close(self):
            pass

    session.mount("https://", Down())
    only_here = SimpleNamespace(Session=lambda: session, RequestException=requests.RequestException)
    monkeypatch.setattr(providers_base, "requests", only_here)
    operation = payments_schema.find_operation_by_label("POST /api/payments/bookings/{id}/pay/")
    case = operation.Case(
        path_parameters=_real_ids(operation.path, api_data),
        body={"provider": "paystack"},
        media_type="application/json",
    )
    response = case.call(headers={"Authorization": f"Bearer {api_data.tokens['guest']}"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "provider_unavailable"
    case.validate_response(response, checks=[status_code_conformance, response_schema_conformance])


def test_required_request_strings_are_declared_non_blank(payments_schema):
    """Every string a request body of the payments API requires is declared non-blank (minLength 1)."""
    raw = payments_schema.raw_schema
    components = raw["components"]["schemas"]
    bodies = set()
    for path, methods in raw["paths"].items():
        for operation in methods.values():
            content = operation.get("requestBody", {}).get("content", {}) if isinstance(operation, dict) else {}
            for media in content.values():
                ref = media.get("schema", {}).get("$ref", "")
                if path.startswith("/api/payments/") and ref:
                    bodies.add(ref.rsplit("/", 1)[-1])
    assert bodies, "no request bodies found"
    loose = []
    for name in sorted(bodies):
        component = components[name]
        for field in component.get("required", []):
            spec = component["properties"][field]
            if spec.get("type") == "string" and not spec.get("readOnly") and spec.get("minLength", 0) < 1:
                loose.append(f"{name}.{field}")
    assert loose == []
