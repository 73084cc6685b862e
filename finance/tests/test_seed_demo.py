"""seed_demo: enough demo data for the portal's lists to be real, loaded once, with a ledger
that balances; and the demo logins (published password) exist only in development."""

import io
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import F
from django.utils import timezone

from finance import crypto, demo
from finance.models import (
    ApprovalRequest,
    BankAccount,
    Booking,
    HostReceivable,
    Payment,
    Property,
    ProviderRefund,
    ReconciliationLine,
    WalletTransaction,
    WebhookEvent,
    Withdrawal,
)
from messaging.models import Broadcast, Message
from testing.ledger import failing_ledger_checks

User = get_user_model()
SEVEN_MARKETS = {"NG", "KE", "ZA", "GH", "UG", "RW", "TN"}


@pytest.fixture
def development(settings):
    settings.DEBUG = True  # the test runner turns it off; seed_demo runs only in development


def row_counts() -> dict[str, int]:
    """Rows in every table of the database."""
    with connection.cursor() as cursor:
        counts = {}
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(table)}")
            counts[table] = cursor.fetchone()[0]
    return counts


@pytest.mark.django_db
def test_seed_demo_refuses_to_create_demo_logins_with_debug_off(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="DEBUG=true"):
        call_command("seed_demo")

    assert not get_user_model().objects.filter(username__in=["admin", "finance", "guest"]).exists()


@pytest.mark.django_db
def test_the_demo_has_a_marketplace_worth_of_data_and_loading_it_twice_adds_nothing(development):
    assert connection.vendor == "postgresql"  # where the Django suites run (and --large needs)
    call_command("seed_demo", stdout=io.StringIO())
    loaded = row_counts()

    # People: the README's logins, and a few hundred hosts and guests in the seven markets.
    for username in ["admin", "finance", "approver", "support", "manager", "amara", "wanjiku", "guest"]:
        assert User.objects.filter(username=username).exists(), username
    hosts, guests = User.objects.filter(role="host"), User.objects.filter(role="guest")
    assert hosts.count() >= 300 and guests.count() >= 400
    assert set(hosts.values_list("country", flat=True)) == SEVEN_MARKETS
    assert SEVEN_MARKETS <= set(guests.values_list("country", flat=True))
    assert set(Property.objects.values_list("currency", flat=True)) == {"NGN", "KES", "ZAR", "GHS", "UGX", "RWF", "TND"}
    assert not hosts.filter(properties__isnull=True).exists()

    # Bookings and money over about six months, most paid, some not yet.
    assert Booking.objects.count() >= 3000
    assert Booking.objects.filter(status=Booking.Status.PENDING).count() >= 100
    assert WalletTransaction.objects.count() >= 3000
    dates = [t.date() for t in WalletTransaction.objects.values_list("created_at", flat=True)]
    assert (max(dates) - min(dates)).days >= 150
    assert len({(d.year, d.month) for d in dates}) >= 6
    kinds = set(WalletTransaction.objects.values_list("type", "status").distinct())
    for kind in [("booking_payment", "completed"), ("refund", "completed"), ("reversal", "completed")]:
        assert kind in kinds
    assert ("booking_payment", "reversed") in kinds

    # Withdrawals, webhooks, approvals and broadcasts in every state.
    assert set(Withdrawal.objects.values_list("status", flat=True)) == set(Withdrawal.Status.values)
    outcomes = set(WebhookEvent.objects.values_list("outcome", flat=True))
    assert {"applied", "payment_failed", "flagged", "rejected", "ignored"} <= outcomes
    assert WebhookEvent.objects.filter(reason__contains="differs from the payment").exists()  # amount mismatch
    assert {"pending", "approved", "rejected"} <= set(ApprovalRequest.objects.values_list("status", flat=True))
    assert not ApprovalRequest.objects.exclude(requested_by__username="finance").exists()
    assert not ApprovalRequest.objects.exclude(status="pending").exclude(approved_by__username="approver").exists()
    assert Broadcast.objects.filter(author__username="support", status=Broadcast.Status.DELIVERED).count() >= 3
    assert Message.objects.filter(broadcast__isnull=False).count() >= 300

    # Payout accounts a transfer can use: full numbers (encrypted), real bank codes, M-Pesa
    # wallets in Kenya, and the one account the sandbox refuses transfers to.
    accounts = BankAccount.objects.filter(owner__in=hosts)
    assert not accounts.filter(account_number_encrypted="").exists()
    amara = accounts.get(owner__username="amara")
    number = crypto.decrypt_account_number(amara)
    assert len(number) == 10 and number.endswith(amara.account_number_last4)  # a NUBAN
    assert amara.bank_code in {"044", "058", "057", "011"}
    assert not accounts.filter(account_type="bank", country__in=["NG", "KE", "ZA", "GH", "UG", "RW"], bank_code="")
    wallets = accounts.filter(account_type="mobile_money")
    assert wallets.count() >= 10 and set(wallets.values_list("country", "bank_code")) == {("KE", "MPESA")}
    assert all(crypto.decrypt_account_number(w).startswith("2547") for w in wallets[:10])
    failing = accounts.filter(account_number_last4=settings.SANDBOX_TRANSFER_FAILS_LAST4)
    assert list(failing.values_list("owner__username", flat=True)) == [demo.FAILING_PAYOUT_HOST]
    # Payouts in flight through the sandbox, sent minutes to a day ago: the Processing tab.
    # The demo's own staff completions send payouts too: those wait for `make run`'s worker to
    # send them, so they have no provider transfer id yet.
    in_flight = Withdrawal.objects.filter(status="processing", payout_method="sandbox")
    assert in_flight.exclude(provider_transfer_id="").count() >= 5
    for withdrawal in in_flight:
        assert withdrawal.transfer_reference == withdrawal.stable_transfer_reference()
        assert withdrawal.payout_sent_at
    ages = sorted(timezone.now() - w.payout_sent_at for w in in_flight)
    assert ages[0] < timedelta(hours=1) and ages[-1] > timedelta(hours=6)

    # Issue 18: refunds in each state, a host owing part of a refund, each kind of difference.
    assert {"succeeded", "failed", "queued"} <= set(ProviderRefund.objects.values_list("status", flat=True))
    assert HostReceivable.objects.filter(recovered__gt=0, recovered__lt=F("amount")).count() == 1
    assert set(ReconciliationLine.objects.values_list("state", flat=True)) == set(ReconciliationLine.State.values)

    # The ledger balances: every movement went through the services.
    assert failing_ledger_checks() == []
    call_command("check_ledger", stdout=io.StringIO())

    call_command("seed_demo", stdout=io.StringIO())

    assert row_counts() == loaded


@pytest.mark.django_db
def test_a_demo_load_that_stopped_part_way_is_completed_by_the_next_run(development, monkeypatch):
    # The first run stops after the money (the later parts never ran, or rolled back).
    monkeypatch.setattr(demo, "PARTS", demo.PARTS[:3])
    call_command("seed_demo", stdout=io.StringIO())
    payments, withdrawals = Payment.objects.count(), Withdrawal.objects.count()
    assert not WebhookEvent.objects.exists() and not Broadcast.objects.exists()
    monkeypatch.undo()

    call_command("seed_demo", stdout=io.StringIO())

    assert WebhookEvent.objects.filter(outcome="flagged").exists()
    assert ApprovalRequest.objects.filter(status="pending").exists()
    assert Broadcast.objects.exists()
    # Nothing loaded twice: the bookings part added no payments, the approvals part three
    # large withdrawals of its own.
    assert Payment.objects.count() == payments
    assert Withdrawal.objects.count() == withdrawals + 3
    assert failing_ledger_checks() == []
