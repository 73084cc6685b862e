"""The ledger's payout statements (finance/ledger.py), below TransactionService."""

from decimal import Decimal

import pytest
from django.db import transaction

from finance import ledger
from finance.errors import NotFoundError
from finance.models import Booking, LedgerEntry, WalletTransaction
from finance.services import TransactionService

pytestmark = pytest.mark.django_db


def test_lock_payment_for_payout_reads_booking_host_and_host_wallet(host, guest, make_booking, make_payment):
    booking = make_booking(host, guest, total="1000.00", commission="150.00")
    payment = make_payment(booking)
    with transaction.atomic():
        locked = ledger.lock_payment_for_payout(payment.pk)
    assert (locked.reference, locked.amount, locked.currency, locked.status) == (
        payment.reference,
        Decimal("1000.00"),
        "NGN",
        "pending",
    )
    assert (locked.booking.pk, locked.booking.grand_total, locked.booking.commission_fee) == (
        booking.pk,
        Decimal("1000.00"),
        Decimal("150.00"),
    )
    assert (locked.host_id, locked.host_wallet_id, locked.ledger_transaction_id) == (host.pk, None, None)
    wallet = TransactionService.create_wallet(host, "NGN")
    assert ledger.lock_payment_for_payout(payment.pk).host_wallet_id == wallet.pk


def test_lock_payment_for_payout_refuses_an_unknown_payment():
    with pytest.raises(NotFoundError):
        ledger.lock_payment_for_payout(0)


def test_payout_guard_writes_nothing_when_the_booking_changed(host, guest, make_booking, make_payment):
    """Guarded postings are PostgreSQL's single statement; the Django suites run on PostgreSQL."""
    booking = make_booking(host, guest)
    payment = make_payment(booking)
    TransactionService.create_wallet(host, "NGN")
    stale = ledger.payout_guard(booking, payment)
    Booking.objects.filter(pk=booking.pk).update(commission_fee=Decimal("100.00"))
    with pytest.raises(ledger.GuardFailed):
        ledger.post_movement(
            wallet=None,
            guard=stale,
            type=WalletTransaction.Type.BOOKING_PAYMENT,
            direction=WalletTransaction.Direction.IN,
            amount=Decimal("850.00"),
            balance_delta=Decimal("850.00"),
            legs=[("provider_clearing", Decimal("-1000.00")), ("platform_revenue", Decimal("150.00"))],
        )
    assert not WalletTransaction.objects.exists() and not LedgerEntry.objects.exists()
