"""Authorization matrix of the payments API: every route × every kind of caller → one HTTP status.

The table below is the specification. `test_every_route_has_a_row` compares it with the URLconf,
so a route cannot be added under /api/payments/ without deciding who may call it.

Objects (built fresh for every test): host A owns an NGN wallet (10,000.00 credited, 2,000.00
held by a pending withdrawal), two bank accounts (the second not primary), a paid booking by the
guest (paid out to host A's wallet) and a pending booking by the guest waiting for payment.
"""

from decimal import Decimal

import pytest
from django.core.cache import cache
from django.http import HttpRequest
from django.urls import URLResolver, get_resolver, reverse
from knox.models import AuthToken
from rest_framework.test import APIClient

from finance.api.tokens import issue_api_token
from finance.models import ApprovalRequest, BankAccount, Booking, Payment, Wallet, WalletTransaction, Withdrawal
from finance.services import TransactionService

pytestmark = pytest.mark.django_db

PASSWORD = "pass-12345"  # conftest.make_user's password

ACTORS = ("anonymous", "host_a", "host_b", "guest", "support", "finance", "manager", "superuser")

# How each actor authenticates: a real API token (knox) sent as `Authorization: Bearer …`, or a session.
AUTH = {
    "host_a": "bearer",
    "host_b": "bearer",
    "guest": "bearer",
    "support": "bearer",
    "finance": "bearer",
    "manager": "session",
    "superuser": "session",
}

# fmt: off
# (URL name, method):                     anonymous host_a host_b guest support finance manager superuser
MATRIX = {
    # Public by design: no authentication classes; the body or the signature is the credential.
    ("api-token", "POST"):                   (200,   200,   200,   200,  200,    200,    200,    200),
    # Revoking the token a request is sent with needs a token: a session has none to revoke.
    ("api-token-revoke", "POST"):            (401,   200,   200,   200,  200,    200,    401,    401),
    ("api-token-revoke-all", "POST"):        (401,   200,   200,   200,  200,    200,    200,    200),
    ("webhook", "POST"):                     (401,   401,   401,   401,  401,    401,    401,    401),
    # The caller's own wallets; another user's wallet is not found, whoever asks.
    ("wallet-my-wallet", "GET"):             (401,   200,   200,   200,  200,    200,    200,    200),
    ("wallet-detail", "GET"):                (401,   200,   404,   404,  404,    404,    404,    404),
    ("wallet-balance", "GET"):               (401,   200,   404,   404,  404,    404,    404,    404),
    ("wallet-transactions", "GET"):          (401,   200,   404,   404,  404,    404,    404,    404),
    # Bank accounts: everyone lists and adds their own; only the owner can make one primary.
    ("bank-account-list", "GET"):            (401,   200,   200,   200,  200,    200,    200,    200),
    ("bank-account-list", "POST"):           (401,   201,   201,   201,  201,    201,    201,    201),
    ("bank-account-set-primary", "POST"):    (401,   200,   404,   404,  404,    404,    404,    404),
    # Withdrawals: the owner withdraws from their wallet; finance staff complete or fail any.
    ("withdrawal-list", "GET"):              (401,   200,   200,   200,  200,    200,    200,    200),
    ("withdrawal-list", "POST"):             (401,   201,   404,   404,  404,    404,    404,    404),
    ("withdrawal-detail", "GET"):            (401,   200,   404,   404,  404,    404,    404,    404),
    ("withdrawal-complete", "POST"):         (401,   403,   403,   403,  403,    200,    403,    200),
    ("withdrawal-fail", "POST"):             (401,   403,   403,   403,  403,    200,    403,    200),
    # Transactions: the owner reads; finance staff ask for a reversal (always four-eyes: 202).
    ("transaction-list", "GET"):             (401,   200,   200,   200,  200,    200,    200,    200),
    ("transaction-detail", "GET"):           (401,   200,   404,   404,  404,    404,    404,    404),
    ("transaction-reverse", "POST"):         (401,   403,   403,   403,  403,    202,    403,    202),
    # Bookings: only the booking's guest pays; finance staff refund.
    ("booking-pay", "POST"):                 (401,   404,   404,   201,  404,    404,    404,    404),
    ("booking-refund", "POST"):              (401,   403,   403,   403,  403,    200,    403,    200),
}
# fmt: on

PUBLIC_ROUTES = {"api-token", "webhook"}
API_PREFIX = "api/payments/"


# --- the world every test acts on -----------------------------------------------------------


@pytest.fixture(autouse=True)
def _fast_and_offline(settings):
    """Cheap password hashing (eight users per test); paying goes through the sandbox provider,
    which then makes no HTTP call of its own."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.SANDBOX_PAYMENTS_ENABLED = True
    settings.SANDBOX_AUTOCOMPLETE = False
    cache.clear()  # the webhook's failed-verification counter lives in the cache


@pytest.fixture
def world(host, other_host, guest, support_user, finance_user, manager, make_user, make_booking, make_payment):

    wallet = TransactionService.create_wallet(host, "NGN")
    credit = TransactionService.credit_wallet(wallet, Decimal("10000.00"))
    primary = BankAccount.objects.create(
        owner=host, bank_name="GTBank", account_name="Host One", account_number_last4="4321", is_primary=True
    )
    second = BankAccount.objects.create(
        owner=host, bank_name="Access", account_name="Host One", account_number_last4="9876", is_primary=False
    )
    withdrawal = TransactionService.initiate_withdrawal(wallet, primary, Decimal("2000.00"), actor=host)
    paid_booking = make_booking(host, guest, total="1000.00", commission="150.00")
    payout = TransactionService.process_booking_payment(paid_booking, make_payment(paid_booking))
    pending_booking = make_booking(host, guest, total="1200.00", commission="180.00")
    users = {
        "host_a": host,
        "host_b": other_host,
        "guest": guest,
        "support": support_user,
        "finance": finance_user,
        "manager": manager,
        "superuser": make_user("admin", superuser=True),
    }
    return {
        "users": users,
        "wallet": wallet,
        "credit": credit if isinstance(credit, WalletTransaction) else wallet.transactions.get(type="credit"),
        "primary": primary,
        "second": second,
        "withdrawal": withdrawal,
        "paid_booking": paid_booking,
        "payout": payout,
        "pending_booking": pending_booking,
    }


def client_for(actor: str, world) -> APIClient:
    client = APIClient()
    if actor == "anonymous":
        return client
    user = world["users"][actor]
    if AUTH[actor] == "bearer":
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_api_token(user)}")
    else:
        # django-axes watches every sign-in and needs the request it came with.
        assert client.login(request=HttpRequest(), username=user.username, password=PASSWORD)
    return client


def url_kwargs(name: str, world) -> dict:
    return {
        "webhook": {"provider": "paystack"},
        "wallet-detail": {"pk": world["wallet"].pk},
        "wallet-balance": {"pk": world["wallet"].pk},
        "wallet-transactions": {"pk": world["wallet"].pk},
        "bank-account-set-primary": {"pk": world["second"].pk},
        "withdrawal-detail": {"pk": world["withdrawal"].pk},
        "withdrawal-complete": {"pk": world["withdrawal"].pk},
        "withdrawal-fail": {"pk": world["withdrawal"].pk},
        "transaction-detail": {"reference": world["credit"].reference},
        "transaction-reverse": {"reference": world["credit"].reference},
        "booking-pay": {"pk": world["pending_booking"].pk},
        "booking-refund": {"pk": world["paid_booking"].pk},
    }.get(name, {})


def request_body(name: str, method: str, world) -> dict | None:
    """A body that would be valid for the object's owner (or for finance staff)."""
    if method != "POST":
        return None
    return {
        "api-token": {"username": world["users"]["host_a"].username, "password": PASSWORD},
        "webhook": {"event": "charge.success", "data": {"id": 1, "reference": "PAY-X", "amount": 100}},
        "bank-account-list": {
            "bank_name": "Zenith",
            "account_name": "Someone",
            "account_number": "0123456789",
            "bank_code": "057",
            "currency": "NGN",
            "country": "NG",
        },
        "withdrawal-list": {
            "wallet": world["wallet"].pk,
            "bank_account": world["primary"].pk,
            "amount": "1500.00",
        },
        "withdrawal-fail": {"reason": "Bank rejected the transfer."},
        "transaction-reverse": {"reason": "Credited twice by mistake."},
        "booking-pay": {"provider": "sandbox"},
        "booking-refund": {"amount": "100.00", "reason": "Guest left a day early."},
    }.get(name, {})


def snapshot() -> dict:
    """Everything a refused request must leave as it was."""
    return {
        "wallets": sorted(Wallet.objects.values_list("id", "balance", "held_balance", "status")),
        "transactions": sorted(WalletTransaction.objects.values_list("id", "status")),
        "withdrawals": sorted(Withdrawal.objects.values_list("id", "status", "failure_reason")),
        "payments": sorted(Payment.objects.values_list("id", "status", "refunded_amount")),
        "bookings": sorted(Booking.objects.values_list("id", "status")),
        "bank_accounts": sorted(BankAccount.objects.values_list("id", "owner_id", "is_primary")),
        "approvals": ApprovalRequest.objects.count(),
    }


def call(client, method: str, path: str, body):
    if method == "GET":
        return client.get(path)
    return client.post(path, body, format="json")


def assert_error_shape(response):
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "fields"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["fields"], dict)


# --- the table against the URLconf -----------------------------------------------------------


def _payments_resolver() -> URLResolver:
    for pattern in get_resolver().url_patterns:
        if isinstance(pattern, URLResolver) and str(pattern.pattern) == API_PREFIX:
            return pattern
    raise AssertionError(f"No URL resolver for {API_PREFIX}")


def _methods(callback) -> set[str]:
    actions = getattr(callback, "actions", None)
    if actions:  # a router-generated viewset route
        # DRF adds "head" to this dict the first time a GET is served: leave it out, as below.
        return {method.upper() for method in actions if method not in ("options", "head")}
    view_class = callback.view_class
    return {
        method.upper()
        for method in view_class.http_method_names
        if method not in ("options", "head") and hasattr(view_class, method)
    }


def routes_in_urlconf() -> set[tuple[str, str]]:
    """(URL name, method) of every route under /api/payments/ (format-suffix twins folded in)."""
    routes = set()
    for pattern in _payments_resolver().url_patterns:
        assert not isinstance(pattern, URLResolver), f"nested include under {API_PREFIX}: extend this test"
        assert pattern.name, f"unnamed route {pattern.pattern}"
        routes |= {(pattern.name, method) for method in _methods(pattern.callback)}
    return routes


def test_every_route_has_a_row():
    in_urlconf = routes_in_urlconf()
    missing = in_urlconf - set(MATRIX)
    stale = set(MATRIX) - in_urlconf
    assert not missing, f"routes without a row in MATRIX: {sorted(missing)}"
    assert not stale, f"rows in MATRIX for routes that do not exist: {sorted(stale)}"


def test_every_row_has_a_status_per_actor():
    for key, statuses in MATRIX.items():
        assert len(statuses) == len(ACTORS), key


# --- the matrix ----------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[1]} {r[0]}")
def test_authorization_matrix(route, actor, world):
    name, method = route
    expected = MATRIX[route][ACTORS.index(actor)]
    path = reverse(name, kwargs=url_kwargs(name, world))
    assert path.startswith("/" + API_PREFIX)
    client = client_for(actor, world)
    before = snapshot()

    response = call(client, method, path, request_body(name, method, world))

    assert response.status_code == expected, (
        f"{method} {path} as {actor}: expected {expected}, got {response.status_code}: {response.content[:300]!r}"
    )
    assert response["Content-Type"].startswith("application/json")
    if expected >= 400:
        assert_error_shape(response)
    if expected in (401, 403, 404):
        assert snapshot() == before, f"{method} {path} as {actor} answered {expected} but changed something"


# --- what the successful calls did, and did not leak ---------------------------------------------


def test_owner_actions_move_what_they_should(world):
    client = client_for("host_a", world)
    wallet = world["wallet"]

    response = client.post(reverse("withdrawal-list"), request_body("withdrawal-list", "POST", world), format="json")
    assert response.status_code == 201, response.content
    wallet.refresh_from_db()
    assert wallet.held_balance == Decimal("3500.00")  # 2,000.00 already held + 1,500.00

    response = client.post(reverse("bank-account-set-primary", kwargs={"pk": world["second"].pk}))
    assert response.status_code == 200
    assert response.json()["is_primary"] is True
    assert list(BankAccount.objects.filter(owner=world["users"]["host_a"], is_primary=True)) == [world["second"]]


def test_finance_actions_move_what_they_should(world):
    client = client_for("finance", world)
    withdrawal = world["withdrawal"]

    response = client.post(reverse("withdrawal-complete", kwargs={"pk": withdrawal.pk}))
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "completed"
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.COMPLETED

    response = client.post(
        reverse("transaction-reverse", kwargs={"reference": world["credit"].reference}),
        {"reason": "Credited twice by mistake."},
        format="json",
    )
    assert response.status_code == 202
    assert response.json()["status"] == "pending_approval"
    world["credit"].refresh_from_db()
    assert world["credit"].status == WalletTransaction.Status.COMPLETED  # nothing moves before approval

    response = client.post(
        reverse("booking-refund", kwargs={"pk": world["paid_booking"].pk}),
        request_body("booking-refund", "POST", world),
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["amount"]
    assert Payment.objects.get(booking=world["paid_booking"]).refunded_amount == Decimal("100.00")


def test_guest_pay_opens_one_payment(world):
    client = client_for("guest", world)
    path = reverse("booking-pay", kwargs={"pk": world["pending_booking"].pk})
    first = client.post(path, {"provider": "sandbox"}, format="json")
    second = client.post(path, {"provider": "sandbox"}, format="json")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["reference"] == second.json()["reference"]
    assert Payment.objects.filter(booking=world["pending_booking"]).count() == 1


@pytest.mark.parametrize("actor", [a for a in ACTORS if a not in ("anonymous", "host_a")])
def test_lists_never_show_host_a_objects(actor, world):
    client = client_for(actor, world)
    wallets = client.get(reverse("wallet-my-wallet")).json()
    assert world["wallet"].pk not in [w["id"] for w in wallets]
    accounts = client.get(reverse("bank-account-list")).json()["results"]
    assert not {world["primary"].pk, world["second"].pk} & {a["id"] for a in accounts}
    withdrawals = client.get(reverse("withdrawal-list")).json()["results"]
    assert world["withdrawal"].pk not in [w["id"] for w in withdrawals]
    transactions = client.get(reverse("transaction-list")).json()["results"]
    host_refs = set(WalletTransaction.objects.filter(wallet=world["wallet"]).values_list("reference", flat=True))
    assert not host_refs & {t["reference"] for t in transactions}


def test_host_a_lists_show_own_objects(world):
    client = client_for("host_a", world)
    assert [w["id"] for w in client.get(reverse("wallet-my-wallet")).json()] == [world["wallet"].pk]
    accounts = client.get(reverse("bank-account-list")).json()["results"]
    assert {a["id"] for a in accounts} == {world["primary"].pk, world["second"].pk}
    withdrawals = client.get(reverse("withdrawal-list")).json()["results"]
    assert [w["id"] for w in withdrawals] == [world["withdrawal"].pk]


# --- authentication edge cases -----------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    ["Bearer not-a-real-token", "Bearer", "Token {key}", "Basic aG9zdDpwYXNz", "Bearer {key} extra"],
)
def test_bad_credentials_are_401_and_change_nothing(header, world):
    key = issue_api_token(world["users"]["host_a"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header.format(key=key))
    before = snapshot()
    response = client.post(reverse("withdrawal-list"), request_body("withdrawal-list", "POST", world), format="json")
    assert response.status_code == 401, response.content
    assert_error_shape(response)
    assert snapshot() == before


def test_anonymous_401_names_the_bearer_scheme(world):
    response = APIClient().get(reverse("wallet-my-wallet"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "not_authenticated"


def test_the_published_schema_tells_clients_to_send_a_bearer_token(world):
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    wallet = schema["paths"]["/api/payments/wallets/my_wallet/"]["get"]
    assert {"bearerAuth": []} in wallet["security"]


def test_token_endpoint_returns_a_working_bearer_token(world):
    host_a = world["users"]["host_a"]
    response = APIClient().post(
        reverse("api-token"), {"username": host_a.username, "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}")
    assert client.get(reverse("wallet-detail", kwargs={"pk": world["wallet"].pk})).status_code == 200


def test_token_endpoint_refuses_a_wrong_password(world):
    host_a = world["users"]["host_a"]
    response = APIClient().post(reverse("api-token"), {"username": host_a.username, "password": "nope"}, format="json")
    assert response.status_code == 400
    assert_error_shape(response)
    assert not AuthToken.objects.filter(user=host_a).exists()


@pytest.mark.parametrize("route", sorted(r for r in MATRIX if r[0] not in PUBLIC_ROUTES), ids=lambda r: r[0])
def test_format_suffix_twins_also_refuse_anonymous(route, world):
    """The router's `.json` twins of each route are the same view: anonymous is still 401."""
    name, method = route
    path = reverse(name, kwargs={**url_kwargs(name, world), "format": "json"})
    assert path.endswith(".json")
    before = snapshot()
    response = call(APIClient(), method, path, request_body(name, method, world))
    assert response.status_code == 401, (path, response.content)
    assert_error_shape(response)
    assert snapshot() == before


def test_unknown_api_path_is_json_404(world):
    client = client_for("host_a", world)
    response = client.get("/api/payments/no-such-thing/")
    assert response.status_code == 404
    assert_error_shape(response)
