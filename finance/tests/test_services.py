"""TransactionService: every operation, every refusal, and that a refusal changes nothing."""

from decimal import Decimal

import pytest
from django.core.management import call_command

from finance.models import (
    LedgerAudit,
    LedgerEntry,
    Payment,
    SystemAccount,
    Wallet,
    WalletTransaction,
)
from finance.services import (
    AlreadyReversedError,
    BelowMinimumWithdrawalError,
    CurrencyMismatchError,
    IdempotencyConflictError,
    InsufficientBalanceError,
    InvalidAmountError,
    InvalidStateError,
    NotFoundError,
    RefundExceedsPaymentError,
    TransactionError,
    TransactionService,
    UnsupportedCurrencyError,
    WalletNotActiveError,
)
from testing.ledger import ledger_snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True, params=["single statement", "step by step"])
def posting_path(request, monkeypatch):
    """Run every test through both ledger posting paths (one statement on PostgreSQL, and the
    step-by-step path SQLite uses), so they cannot drift apart."""
    from finance import ledger

    monkeypatch.setattr(ledger, "SINGLE_STATEMENT_ON_POSTGRESQL", request.param == "single statement")
    return request.param


def system_balance(code, currency):
    return sum(
        LedgerEntry.objects.filter(system_account=code, currency=currency).values_list("amount", flat=True),
        Decimal(0),
    )


def assert_ledger_healthy():
    call_command("check_ledger", stdout=open("/dev/null", "w"))


# --- the contract's example tests, as the original design wrote them (import path aside) ---


@pytest.fixture
def user(host):
    return host


def test_credit_wallet(user):
    wallet = TransactionService.create_wallet(user)
    txn = TransactionService.credit_wallet(wallet, Decimal("100.00"))
    assert txn.status == "completed"
    assert wallet.balance == Decimal("100.00")


def test_debit_insufficient_balance(user):
    wallet = TransactionService.create_wallet(user)
    with pytest.raises(InsufficientBalanceError):
        TransactionService.debit_wallet(wallet, Decimal("100.00"))


def test_reverse_transaction(user):
    wallet = TransactionService.create_wallet(user)
    credit_txn = TransactionService.credit_wallet(wallet, Decimal("100.00"))
    reversal = TransactionService.reverse_transaction(credit_txn.reference)
    assert reversal.status == "completed"
    assert wallet.balance == Decimal("0.00")


def test_booking_payment_flow(host, guest, make_booking, make_payment):
    booking = make_booking(host, guest)
    payment = make_payment(booking)
    payment.status = "success"
    payment.save()

    txn = TransactionService.process_booking_payment(booking, payment)
    assert txn.wallet.user == booking.rental_property.host
    assert txn.amount == booking.grand_total - booking.commission_fee


# --- wallets ------------------------------------------------------------------------------


def test_create_wallet_uses_default_currency_and_is_one_per_currency(host, settings):
    settings.DEFAULT_CURRENCY = "KES"
    wallet = TransactionService.create_wallet(host)
    assert wallet.currency == "KES"
    assert TransactionService.create_wallet(host, "KES").pk == wallet.pk
    assert TransactionService.create_wallet(host, "NGN").pk != wallet.pk
    assert wallet.balance == wallet.held_balance == wallet.available_balance == 0


def test_create_wallet_refuses_unknown_currency(host):
    with pytest.raises(UnsupportedCurrencyError):
        TransactionService.create_wallet(host, "XYZ")
    assert not Wallet.objects.exists()


def test_credit_posts_balanced_entries_and_audit(funded_wallet):
    txn = TransactionService.credit_wallet(funded_wallet, "250.50", description="Goodwill")
    legs = {(e.wallet_id, e.system_account): e.amount for e in txn.entries.all()}
    assert legs == {(funded_wallet.pk, ""): Decimal("250.50"), (None, SystemAccount.ADJUSTMENTS): Decimal("-250.50")}
    assert txn.balance_after == Decimal("10250.50")
    audit = LedgerAudit.objects.get(transaction=txn)
    assert (audit.balance_before, audit.balance_after) == (Decimal("10000.00"), Decimal("10250.50"))
    assert_ledger_healthy()


def test_debit_reduces_balance(funded_wallet):
    txn = TransactionService.debit_wallet(funded_wallet, Decimal("400.00"))
    funded_wallet.refresh_from_db()
    assert funded_wallet.balance == Decimal("9600.00")
    assert txn.direction == "out" and txn.signed_amount == Decimal("-400.00")


@pytest.mark.parametrize(
    "amount",
    ["0", "-5", "0.001", "NaN", "Infinity", "abc", 12.5, True, None, "1e400"],
)
def test_bad_amounts_are_refused_and_change_nothing(funded_wallet, unchanged, amount):
    with unchanged(), pytest.raises(InvalidAmountError):
        TransactionService.credit_wallet(funded_wallet, amount)
    with unchanged(), pytest.raises(InvalidAmountError):
        TransactionService.debit_wallet(funded_wallet, amount)


def test_overdraw_names_the_shortfall(funded_wallet, unchanged):
    with unchanged(), pytest.raises(InsufficientBalanceError) as refused:
        TransactionService.debit_wallet(funded_wallet, Decimal("10000.01"))
    assert "0.01" in str(refused.value)


@pytest.mark.parametrize("status", [Wallet.Status.FROZEN, Wallet.Status.CLOSED])
def test_inactive_wallet_refuses_every_movement(funded_wallet, bank_account, unchanged, status):
    Wallet.objects.filter(pk=funded_wallet.pk).update(status=status)
    with unchanged():
        for call in (
            lambda: TransactionService.credit_wallet(funded_wallet, "10"),
            lambda: TransactionService.debit_wallet(funded_wallet, "10"),
            lambda: TransactionService.initiate_withdrawal(
                wallet=funded_wallet, bank_account=bank_account, amount="2000"
            ),
        ):
            with pytest.raises(WalletNotActiveError):
                call()


def test_zero_decimal_currency(make_user):
    wallet = TransactionService.create_wallet(make_user("host"), "UGX")
    TransactionService.credit_wallet(wallet, "15000")
    with pytest.raises(InvalidAmountError):
        TransactionService.credit_wallet(wallet, "1.5")
    assert wallet.balance == Decimal("15000")


def test_three_decimal_currency(make_user):
    wallet = TransactionService.create_wallet(make_user("host"), "TND")
    TransactionService.credit_wallet(wallet, "10.125")
    with pytest.raises(InvalidAmountError):
        TransactionService.credit_wallet(wallet, "0.0001")
    assert wallet.balance == Decimal("10.125")


def test_credit_and_debit_are_mirror_images(funded_wallet):
    """One movement in, the same movement out: opposite legs, their own defaults and keys."""
    clearing = SystemAccount.PROVIDER_CLEARING
    ticket = {"ticket": "T-1"}
    credit = TransactionService.credit_wallet(
        funded_wallet, "75", source=clearing, metadata=ticket, idempotency_key="m-1"
    )
    assert funded_wallet.balance == Decimal("10075.00")
    debit = TransactionService.debit_wallet(
        funded_wallet, "75", destination=clearing, metadata=ticket, idempotency_key="m-1"
    )
    assert funded_wallet.balance == Decimal("10000.00")
    assert (credit.type, credit.direction, credit.description, credit.metadata) == ("credit", "in", "Credit", ticket)
    assert (debit.type, debit.direction, debit.description, debit.metadata) == ("debit", "out", "Debit", ticket)
    wallet_leg, clearing_leg = (funded_wallet.pk, ""), (None, clearing)
    assert journal_legs(credit) == {wallet_leg: Decimal("75"), clearing_leg: Decimal("-75")}
    assert journal_legs(debit) == {wallet_leg: Decimal("-75"), clearing_leg: Decimal("75")}
    assert system_balance(clearing, "NGN") == 0
    actions = (
        LedgerAudit.objects.filter(transaction__in=[credit, debit]).order_by("pk").values_list("action", flat=True)
    )
    assert list(actions) == ["transaction.credit", "transaction.debit"]
    replay = TransactionService.debit_wallet(funded_wallet, "75", destination=clearing, idempotency_key="m-1")
    assert replay.pk == debit.pk
    with pytest.raises(IdempotencyConflictError):
        TransactionService.debit_wallet(funded_wallet, "75", idempotency_key="m-1")
    assert funded_wallet.balance == Decimal("10000.00")
    assert_ledger_healthy()


def journal_legs(txn):
    return {(entry.wallet_id, entry.system_account): entry.amount for entry in txn.entries.all()}


# --- idempotency ---------------------------------------------------------------------------


def test_idempotent_replay_returns_first_result_and_moves_nothing(funded_wallet):
    first = TransactionService.credit_wallet(funded_wallet, "100", idempotency_key="k-1")
    entries = LedgerEntry.objects.count()
    again = TransactionService.credit_wallet(funded_wallet, "100.00", idempotency_key="k-1")
    assert again.pk == first.pk
    assert LedgerEntry.objects.count() == entries
    assert funded_wallet.balance == Decimal("10100.00")


def test_idempotency_key_with_other_parameters_conflicts(funded_wallet, unchanged):
    TransactionService.credit_wallet(funded_wallet, "100", idempotency_key="k-2")
    with unchanged(), pytest.raises(IdempotencyConflictError):
        TransactionService.credit_wallet(funded_wallet, "101", idempotency_key="k-2")


def test_refused_operation_does_not_burn_its_idempotency_key(funded_wallet):
    with pytest.raises(InsufficientBalanceError):
        TransactionService.debit_wallet(funded_wallet, "20000", idempotency_key="k-3")
    TransactionService.credit_wallet(funded_wallet, "10000")
    txn = TransactionService.debit_wallet(funded_wallet, "20000", idempotency_key="k-3")
    assert txn.status == "completed"


# --- reversals -------------------------------------------------------------------------------


def test_reversal_is_compensating_and_happens_once(funded_wallet, unchanged):
    debit = TransactionService.debit_wallet(funded_wallet, "300")
    reversal = TransactionService.reverse_transaction(debit.reference, "Charged twice")
    debit.refresh_from_db()
    assert debit.status == "reversed" and reversal.reverses_id == debit.pk
    assert funded_wallet.balance == Decimal("10000.00")
    assert sorted(e.amount for e in reversal.entries.all()) == [Decimal("-300"), Decimal("300")]
    with unchanged(), pytest.raises(AlreadyReversedError):
        TransactionService.reverse_transaction(debit.reference, "again")
    with unchanged(), pytest.raises(InvalidStateError):
        TransactionService.reverse_transaction(reversal.reference, "reverse the reversal")
    assert_ledger_healthy()


def test_reversal_refused_when_it_would_overdraw(funded_wallet, unchanged):
    credit = TransactionService.credit_wallet(funded_wallet, "500")
    TransactionService.debit_wallet(funded_wallet, "10200")
    with unchanged(), pytest.raises(InsufficientBalanceError):
        TransactionService.reverse_transaction(credit.reference, "mistaken credit")


def test_reversal_of_unknown_or_pending_transaction(funded_wallet, bank_account, unchanged):
    withdrawal = TransactionService.initiate_withdrawal(wallet=funded_wallet, bank_account=bank_account, amount="2000")
    with unchanged():
        with pytest.raises(NotFoundError):
            TransactionService.reverse_transaction("TXN-NOPE", "x")
        with pytest.raises(InvalidStateError):
            TransactionService.reverse_transaction(withdrawal.transaction.reference, "pending")


# --- booking payments and refunds ------------------------------------------------------------


def test_booking_payment_splits_host_and_commission(paid_booking, host):
    wallet = Wallet.objects.get(user=host, currency="NGN")
    assert wallet.balance == Decimal("850.00")
    assert system_balance(SystemAccount.PLATFORM_REVENUE, "NGN") == Decimal("150.00")
    assert system_balance(SystemAccount.PROVIDER_CLEARING, "NGN") == Decimal("-1000.00")
    assert paid_booking.status == "confirmed"
    assert paid_booking.payments.get().status == "success"
    assert_ledger_healthy()


def test_booking_payment_applies_once(paid_booking, unchanged):
    payment = paid_booking.payments.get()
    first = payment.ledger_transaction
    with unchanged():
        again = TransactionService.process_booking_payment(paid_booking, payment)
    assert again.pk == first.pk


def test_booking_payment_refuses_mismatches(host, guest, make_booking, make_payment, unchanged):
    booking = make_booking(host, guest)
    other = make_booking(host, guest)
    payment = make_payment(booking)
    with unchanged():
        with pytest.raises(InvalidStateError):
            TransactionService.process_booking_payment(other, payment)
        Payment.objects.filter(pk=payment.pk).update(currency="KES")
    with pytest.raises(CurrencyMismatchError):
        TransactionService.process_booking_payment(booking, payment)
    Payment.objects.filter(pk=payment.pk).update(currency="NGN", amount=Decimal("999"))
    with pytest.raises(InvalidStateError):
        TransactionService.process_booking_payment(booking, payment)
    Payment.objects.filter(pk=payment.pk).update(amount=booking.grand_total, status="failed")
    with pytest.raises(InvalidStateError):
        TransactionService.process_booking_payment(booking, payment)
    assert not WalletTransaction.objects.exists()


def test_partial_then_full_refund_claws_back_commission_in_proportion(paid_booking, host):
    first = TransactionService.process_refund(paid_booking, Decimal("400.00"), "Early checkout")
    assert first.amount == Decimal("340.00")  # 400 less 15 % commission (60.00)
    assert system_balance(SystemAccount.PLATFORM_REVENUE, "NGN") == Decimal("90.00")
    TransactionService.process_refund(paid_booking, Decimal("600.00"), "Cancelled")
    assert system_balance(SystemAccount.PLATFORM_REVENUE, "NGN") == Decimal("0")
    assert system_balance(SystemAccount.REFUNDS_PAYABLE, "NGN") == Decimal("1000.00")
    assert Wallet.objects.get(user=host).balance == Decimal("0")
    paid_booking.refresh_from_db()
    assert paid_booking.status == "refunded"
    assert_ledger_healthy()


def test_refund_rounding_never_leaves_a_stray_unit(host, guest, make_booking, make_payment):
    booking = make_booking(host, guest, total="100.00", commission="10.01")
    TransactionService.process_booking_payment(booking, make_payment(booking))
    for _ in range(3):
        TransactionService.process_refund(booking, Decimal("33.33"), "split")
    TransactionService.process_refund(booking, Decimal("0.01"), "rest")
    assert system_balance(SystemAccount.PLATFORM_REVENUE, "NGN") == 0
    assert_ledger_healthy()


def test_refund_cannot_exceed_payment(paid_booking, unchanged):
    TransactionService.process_refund(paid_booking, Decimal("900.00"), "most")
    with unchanged(), pytest.raises(RefundExceedsPaymentError):
        TransactionService.process_refund(paid_booking, Decimal("100.01"), "too much")


def test_refund_the_host_cannot_cover_takes_their_wallet_negative(paid_booking, host):
    """Issue 18: the guest is refunded all the same; the host owes the platform the shortfall."""
    wallet = Wallet.objects.get(user=host)
    TransactionService.debit_wallet(wallet, Decimal("800.00"))
    txn = TransactionService.process_refund(paid_booking, Decimal("100.00"), "late")
    assert txn.wallet.available_balance == Decimal("-35.00")
    assert txn.receivable.amount == Decimal("35.00")
    assert_ledger_healthy()


def test_refund_of_unpaid_booking_is_refused(host, guest, make_booking, unchanged):
    booking = make_booking(host, guest)
    with unchanged(), pytest.raises(InvalidStateError):
        TransactionService.process_refund(booking, Decimal("10"), "nothing paid")


# --- withdrawals -----------------------------------------------------------------------------


def test_withdrawal_holds_then_completes(funded_wallet, bank_account, finance_user):
    withdrawal = TransactionService.initiate_withdrawal(
        wallet=funded_wallet, bank_account=bank_account, amount=Decimal("3000.00")
    )
    assert (funded_wallet.balance, funded_wallet.held_balance) == (Decimal("10000"), Decimal("3000"))
    assert funded_wallet.available_balance == Decimal("7000")
    assert withdrawal.transaction.status == "pending"
    TransactionService.complete_withdrawal(withdrawal, actor=finance_user)
    withdrawal.refresh_from_db()
    assert withdrawal.status == "completed" and withdrawal.processed_by == finance_user
    assert (funded_wallet.balance, funded_wallet.held_balance) == (Decimal("7000"), Decimal("0"))
    assert system_balance(SystemAccount.PAYOUTS_IN_TRANSIT, "NGN") == Decimal("3000")
    assert_ledger_healthy()


def test_failed_withdrawal_releases_funds(funded_wallet, bank_account, unchanged):
    withdrawal = TransactionService.initiate_withdrawal(
        wallet=funded_wallet, bank_account=bank_account, amount=Decimal("3000.00")
    )
    with unchanged(), pytest.raises(TransactionError):
        TransactionService.fail_withdrawal(withdrawal, "  ")
    TransactionService.fail_withdrawal(withdrawal, "Account closed at bank")
    withdrawal.refresh_from_db()
    assert withdrawal.status == "failed" and withdrawal.failure_reason == "Account closed at bank"
    assert withdrawal.transaction.status == "failed"
    assert (funded_wallet.balance, funded_wallet.held_balance) == (Decimal("10000"), Decimal("0"))
    assert_ledger_healthy()


def test_withdrawal_resolves_exactly_once(funded_wallet, bank_account, unchanged):
    withdrawal = TransactionService.initiate_withdrawal(wallet=funded_wallet, bank_account=bank_account, amount="2000")
    TransactionService.complete_withdrawal(withdrawal)
    with unchanged():
        with pytest.raises(InvalidStateError):
            TransactionService.complete_withdrawal(withdrawal)
        with pytest.raises(InvalidStateError):
            TransactionService.fail_withdrawal(withdrawal, "too late")


def test_withdrawal_refusals(funded_wallet, bank_account, other_host, unchanged, settings):
    from finance.models import BankAccount

    foreign = BankAccount.objects.create(
        owner=other_host, bank_name="KCB", account_name="x", account_number_last4="9999"
    )
    kes_account = BankAccount.objects.create(
        owner=funded_wallet.user, bank_name="KCB", account_name="x", account_number_last4="1111", currency="KES"
    )
    with unchanged():
        with pytest.raises(NotFoundError):
            TransactionService.initiate_withdrawal(wallet=funded_wallet, bank_account=foreign, amount="2000")
        with pytest.raises(CurrencyMismatchError):
            TransactionService.initiate_withdrawal(wallet=funded_wallet, bank_account=kes_account, amount="2000")
        with pytest.raises(BelowMinimumWithdrawalError):
            TransactionService.initiate_withdrawal(wallet=funded_wallet, bank_account=bank_account, amount="999.99")
        with pytest.raises(InsufficientBalanceError):
            TransactionService.initiate_withdrawal(wallet=funded_wallet, bank_account=bank_account, amount="10000.01")


def test_held_funds_cannot_be_spent_twice(funded_wallet, bank_account, unchanged):
    TransactionService.initiate_withdrawal(wallet=funded_wallet, bank_account=bank_account, amount="6000")
    with unchanged():
        with pytest.raises(InsufficientBalanceError):
            TransactionService.initiate_withdrawal(wallet=funded_wallet, bank_account=bank_account, amount="5000")
        with pytest.raises(InsufficientBalanceError):
            TransactionService.debit_wallet(funded_wallet, "4000.01")


def test_completed_withdrawal_can_be_reversed_when_the_bank_returns_it(funded_wallet, bank_account):
    withdrawal = TransactionService.initiate_withdrawal(wallet=funded_wallet, bank_account=bank_account, amount="2000")
    TransactionService.complete_withdrawal(withdrawal)
    TransactionService.reverse_transaction(withdrawal.transaction.reference, "Returned by bank")
    assert funded_wallet.balance == Decimal("10000")
    assert system_balance(SystemAccount.PAYOUTS_IN_TRANSIT, "NGN") == 0
    assert_ledger_healthy()


# --- reversals that touch bookings -------------------------------------------------------------


def test_reversed_payment_cannot_be_refunded(paid_booking, unchanged):
    TransactionService.reverse_transaction(paid_booking.payments.get().ledger_transaction.reference, "chargeback")
    paid_booking.refresh_from_db()
    assert paid_booking.status == "cancelled"
    with unchanged(), pytest.raises(InvalidStateError):
        TransactionService.process_refund(paid_booking, Decimal("10"), "after reversal")


def test_payment_with_refunds_cannot_be_reversed(paid_booking, unchanged):
    TransactionService.process_refund(paid_booking, Decimal("100"), "partial")
    payment_txn = paid_booking.payments.get().ledger_transaction
    with unchanged(), pytest.raises(InvalidStateError, match="reverse those first"):
        TransactionService.reverse_transaction(payment_txn.reference, "chargeback")


def test_reversing_a_refund_makes_it_refundable_again(paid_booking):
    refund = TransactionService.process_refund(paid_booking, Decimal("1000.00"), "full")
    TransactionService.reverse_transaction(refund.reference, "refunded by mistake")
    payment = paid_booking.payments.get()
    assert (payment.refunded_amount, payment.commission_refunded, payment.status) == (0, 0, "success")
    paid_booking.refresh_from_db()
    assert paid_booking.status == "confirmed"
    TransactionService.process_refund(paid_booking, Decimal("1000.00"), "full, for real")
    assert system_balance(SystemAccount.PLATFORM_REVENUE, "NGN") == 0
    assert_ledger_healthy()


def test_every_money_operation_replays_by_idempotency_key(
    paid_booking, funded_wallet, bank_account, host, guest, make_booking, make_payment
):
    first = TransactionService.initiate_withdrawal(
        wallet=funded_wallet, bank_account=bank_account, amount="2000", idempotency_key="w-1"
    )
    completed = TransactionService.complete_withdrawal(first, idempotency_key="c-1")
    assert TransactionService.complete_withdrawal(first, idempotency_key="c-1").pk == completed.pk
    second = TransactionService.initiate_withdrawal(
        wallet=funded_wallet, bank_account=bank_account, amount="2000", idempotency_key="w-2"
    )
    TransactionService.fail_withdrawal(second, "Bank closed", idempotency_key="f-1")
    before = ledger_snapshot()
    assert TransactionService.fail_withdrawal(second, "Bank closed", idempotency_key="f-1").status == "failed"
    assert ledger_snapshot() == before
    booking = make_booking(host, guest)
    payment = make_payment(booking)
    payout = TransactionService.process_booking_payment(booking, payment, idempotency_key="p-1")
    assert TransactionService.process_booking_payment(booking, payment, idempotency_key="p-1").pk == payout.pk
    with pytest.raises(IdempotencyConflictError):
        TransactionService.fail_withdrawal(second, "Another reason", idempotency_key="f-1")
    refund = TransactionService.process_refund(paid_booking, "10.00", "r", idempotency_key="r-1")
    assert TransactionService.process_refund(paid_booking, "10.00", "r", idempotency_key="r-1").pk == refund.pk
    assert TransactionService.reverse_transaction(refund.reference, "x", idempotency_key="v-1").pk == (
        TransactionService.reverse_transaction(refund.reference, "x", idempotency_key="v-1").pk
    )
