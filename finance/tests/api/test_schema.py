"""Property-based run of every /api/payments/ operation against the published OpenAPI schema.

schemathesis generates requests from /api/schema/ (served by drf-spectacular through the real WSGI
application), both valid (positive) and invalid (negative) ones, and runs every check it has on
each answer: never a 5xx, documented status codes, content types, headers and bodies, invalid
data refused, valid data accepted, authentication honoured, methods and required headers.
/api/messaging/ is someone else's and is left out.

Every operation runs as a host and as finance staff. Half of the generated requests get a path
parameter that names a real object, so the happy paths and the state errors (409) are exercised
too, not only "not found". Valid data may be refused only with one of the business refusals
listed in documented_refusals.toml (operation, status, error code, why); the schema is never
loosened to let anything else through. Payment providers are never reached: their HTTP session
answers with the recorded payloads.
"""

import itertools
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import schemathesis
from django.core.cache import cache
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    allow_header_conformance,
    content_type_conformance,
    ensure_resource_availability,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
    use_after_free,
)
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import Failure, FailureGroup

from finance.api.tokens import issue_api_token
from finance.models import BankAccount
from finance.providers import base as providers_base
from finance.services import TransactionService

RECORDED = Path(__file__).parent / "recorded"
# Every check schemathesis 4 has for a single answer. max_response_time is left out: timings on a
# shared two-core machine are not behaviour (the benchmarks measure speed).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    use_after_free,
    ensure_resource_availability,
    ignored_auth,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
]
REFUSALS = tomllib.loads((Path(__file__).parent / "documented_refusals.toml").read_text())
DOCUMENTED = {(r["operation"], r["status"], r["code"]) for r in REFUSALS["refusal"]}
CALLERS = ("host", "finance")


@pytest.fixture(scope="module")
def payments_schema(django_db_setup, django_db_blocker):
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()  # the project's, whatever package holds its settings
    # Valid data may get only the `answers` of documented_refusals.toml; any other status is a
    # failure unless it is one of the documented refusals (see _undocumented).
    config = SchemathesisConfig.from_dict(
        {"checks": {"positive_data_acceptance": {"expected-statuses": REFUSALS["answers"]}}}
    )
    with django_db_blocker.unblock():
        loaded = schemathesis.openapi.from_wsgi("/api/schema/", application, config=config)
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
    pending = make_booking(guest, host)  # the host books someone else's place: they may pay it
    tokens = {"host": issue_api_token(host), "finance": issue_api_token(finance_user)}
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


def _real_ids(path: str, data: ApiData, operation=None) -> dict:
    """Path parameters naming a real object, typed as the schema declares them (so the case stays valid)."""
    types = {p.name: p.definition.get("schema", {}).get("type") for p in operation.path_parameters} if operation else {}
    for fragment, ids in data.ids.items():
        if fragment in path:
            return {
                name: value if types.get(name, "integer") == "integer" else str(value) for name, value in ids.items()
            }
    return {}


def _path_is_as_declared(case, operation) -> bool:
    """True unless a negative case mutated a path parameter's type: that mutation must reach the
    server as generated, not be replaced by a real (valid) id."""
    declared = {p.name: p.definition.get("schema", {}).get("type") for p in operation.path_parameters}
    python_types = {"integer": int, "string": str}
    for name, value in case.path_parameters.items():
        expected = python_types.get(declared.get(name))
        if expected and (not isinstance(value, expected) or isinstance(value, bool)):
            return False
    return True


# Every operation of the payments API, as "METHOD path" in the schema.
OPERATIONS = [
    "POST /api/payments/auth/token/",
    "POST /api/payments/auth/token/revoke/",
    "POST /api/payments/auth/token/revoke-all/",
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

EXAMPLES = {GenerationMode.POSITIVE: 5, GenerationMode.NEGATIVE: 3}


def _undocumented(failures: list[Failure], label: str, response) -> list[Failure]:
    """The failures left once valid data refused with a documented business refusal is set aside."""
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    documented = (label, response.status_code, code) in DOCUMENTED
    return [f for f in failures if not (documented and "positive_data_acceptance" in getattr(f, "checks", ()))]


# schemathesis.pytest.from_fixture() fails under pytest 9 (it reads the removed `Function._nodeid`),
# so each operation's strategy is driven by Hypothesis directly, inside an ordinary pytest test:
# one test per operation, each caller and each generation mode in turn (one database set-up).
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("label", OPERATIONS)
def test_payments_api_conforms_to_its_schema(label, payments_schema, api_data):
    operation = payments_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in /api/schema/"
    for caller in CALLERS:
        for mode, examples in EXAMPLES.items():
            _explore(operation, label, caller, mode, examples, api_data)


def _explore(operation, label: str, caller: str, mode: GenerationMode, examples: int, api_data: ApiData) -> None:
    """`examples` requests of `mode` to `operation` as `caller`, each answer through every check."""

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case):
        if case.path_parameters and _path_is_as_declared(case, operation) and next(api_data.counter) % 2 == 0:
            case.path_parameters = {**case.path_parameters, **_real_ids(operation.path, api_data, operation)}
        headers = {"Authorization": f"Bearer {api_data.tokens[caller]}"}
        response = case.call(headers=headers)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            left = _undocumented(list(group.exceptions), label, response)
            if left:
                raise FailureGroup(left, f"as {caller}: {group}") from None

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
    response = case.call(headers={"Authorization": f"Bearer {api_data.tokens['host']}"})
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
