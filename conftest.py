"""Fixtures shared by every Django test suite: people in each role, and a funded host."""

import itertools
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group

from portal.roles import ROLE_PERMISSIONS, apply_roles

_serial = itertools.count(1)
PASSWORD = "pass-12345"  # every make_user user's
_password_hashes: dict[tuple, str] = {}


def password_hash(password: str) -> str:
    """make_password(password), computed once per hasher configuration (a test may switch
    settings.PASSWORD_HASHERS): hashing is deliberately slow, and sign-ins still check it."""
    from django.conf import settings
    from django.contrib.auth.hashers import make_password

    key = (password, tuple(settings.PASSWORD_HASHERS))
    if key not in _password_hashes:
        _password_hashes[key] = make_password(password)
    return _password_hashes[key]


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Every test starts with an empty cache: no sign-in failures, throttle or lockout counters
    left by another test (django-axes and the token endpoint count in the cache)."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def roles(db):
    """The staff groups exist even after a transactional test flushed the tables."""
    from django.apps import apps

    if Group.objects.count() < len(ROLE_PERMISSIONS):
        apply_roles(apps)


@pytest.fixture
def make_user(db, roles):
    from django.contrib.auth import get_user_model

    User = get_user_model()

    def make(role="guest", *, groups=(), country="NG", superuser=False, **extra):
        n = next(_serial)
        # Staff are named after their role (finance3, support4...) so screenshots read naturally.
        name = groups[0].lower().replace(" ", "_") if groups else ("admin" if superuser else role)
        # create_user() minus its hashing: every user gets the one hash of the password made
        # with the hasher configured now (the production PBKDF2 is ~0.5 s per hash here).
        user = User.objects.create(
            username=f"{name}{n}",
            email=f"{name}{n}@example.com",
            password=password_hash(PASSWORD),
            role="staff" if groups or superuser else role,
            country=country,
            is_staff=bool(groups) or superuser,
            is_superuser=superuser,
            **extra,
        )
        for name in groups:
            user.groups.add(Group.objects.get(name=name))
        return user

    return make


@pytest.fixture
def host(make_user):
    return make_user("host")


@pytest.fixture
def other_host(make_user):
    return make_user("host", country="KE")


@pytest.fixture
def guest(make_user):
    return make_user("guest")


@pytest.fixture
def finance_user(make_user):
    return make_user(groups=["Finance"])


@pytest.fixture
def approver(make_user):
    return make_user(groups=["Finance", "Finance approver"])


@pytest.fixture
def support_user(make_user):
    return make_user(groups=["Support"])


@pytest.fixture
def manager(make_user):
    return make_user(groups=["Manager"])


@pytest.fixture
def make_booking(db):
    from finance.models import Booking, Property

    def make(host, guest, *, total="1000.00", commission="150.00", currency="NGN", country="NG"):
        prop = Property.objects.create(host=host, title=f"Villa {next(_serial)}", country=country, currency=currency)
        return Booking.objects.create(
            guest=guest,
            rental_property=prop,
            check_in=date.today(),
            check_out=date.today() + timedelta(days=3),
            grand_total=Decimal(total),
            commission_fee=Decimal(commission),
            currency=currency,
        )

    return make


@pytest.fixture
def make_payment(db):
    from finance.models import Payment

    def make(booking, *, provider="sandbox", status="pending"):
        return Payment.objects.create(
            booking=booking, provider=provider, amount=booking.grand_total, currency=booking.currency, status=status
        )

    return make


@pytest.fixture
def funded_wallet(host):
    """A host's NGN wallet holding 10,000.00."""
    from finance.services import TransactionService

    wallet = TransactionService.create_wallet(host, "NGN")
    TransactionService.credit_wallet(wallet, Decimal("10000.00"))
    return wallet


@pytest.fixture
def bank_account(host):
    from finance.models import BankAccount

    return BankAccount.objects.create(
        owner=host, bank_name="GTBank", account_name="Host One", account_number_last4="4321", is_primary=True
    )


@pytest.fixture
def paid_booking(host, guest, make_booking, make_payment):
    """A 1,000.00 NGN booking (150.00 commission) whose payment the ledger applied."""
    from finance.services import TransactionService

    booking = make_booking(host, guest, total="1000.00", commission="150.00")
    TransactionService.process_booking_payment(booking, make_payment(booking))
    booking.refresh_from_db()
    return booking


@pytest.fixture
def unchanged(db):
    """Use as `with unchanged(): ...` around a call that must be refused: no money row may change."""
    from contextlib import contextmanager

    @contextmanager
    def check():
        from testing.ledger import ledger_snapshot

        before = ledger_snapshot()
        yield
        assert ledger_snapshot() == before, "a refused operation changed the ledger"

    return check


@pytest.fixture
def provider_http(monkeypatch):
    """Provider calls made without a session (webhooks verifying a payment, payout jobs) are
    answered from recorded payloads: set `provider_http.answers[("GET", url)] = ok("name.json")`;
    `provider_http.sent` lists what was sent. An unexpected call fails the test."""
    from finance.providers import base
    from testing.recorded_http import session_with

    session, adapter = session_with({})
    monkeypatch.setattr(base, "http_session", lambda: session)
    return adapter
