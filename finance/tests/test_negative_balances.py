"""Negative host balances (issue 18): a refund after the host withdrew the payout takes their
wallet below zero by their share; the negative part is a receivable, recovered first from
what next adds to their available balance, oldest receivable first."""

from decimal import Decimal

import pytest
from django.core.management import call_command

from finance import staff_actions
from finance.models import ApprovalRequest, HostReceivable, ReceivableRecovery, Wallet, WalletTransaction
from finance.services import InsufficientBalanceError, TransactionService

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True, params=["single statement", "step by step"])
def posting_path(request, monkeypatch):
    """Both ledger posting paths (PL/pgSQL and the step-by-step path) keep receivables alike."""
    from finance import ledger

    monkeypatch.setattr(ledger, "SINGLE_STATEMENT_ON_POSTGRESQL", request.param == "single statement")
    return request.param


@pytest.fixture(autouse=True)
def small_withdrawals(settings):
    """The 850.00 payouts here may be withdrawn (NGN's minimum is 1,000.00)."""
    settings.MINIMUM_WITHDRAWAL = {}


def assert_ledger_healthy():
    call_command("check_ledger", stdout=open("/dev/null", "w"))


def host_wallet(host) -> Wallet:
    return Wallet.objects.get(user=host, currency="NGN")


def available(host) -> Decimal:
    return host_wallet(host).available_balance


def pay(host, guest, make_booking, make_payment, *, total, commission):
    booking = make_booking(host, guest, total=total, commission=commission)
    return TransactionService.process_booking_payment(booking, make_payment(booking))


@pytest.fixture
def withdrawn(paid_booking, host, bank_account):
    """The 850.00 payout of the paid 1,000.00 booking, withdrawn to the host's bank."""
    withdrawal = TransactionService.initiate_withdrawal(host_wallet(host), bank_account, Decimal("850.00"))
    TransactionService.complete_withdrawal(withdrawal)
    assert available(host) == 0
    return paid_booking


@pytest.fixture
def owing(withdrawn, host):
    """The booking fully refunded after the withdrawal: the host owes their 850.00 share."""
    TransactionService.process_refund(withdrawn, Decimal("1000.00"), "Flooded")
    return HostReceivable.objects.get()


def test_a_refund_after_withdrawal_takes_the_wallet_negative_by_the_hosts_share(withdrawn, host):
    txn = TransactionService.process_refund(withdrawn, Decimal("400.00"), "Two nights cancelled")
    assert txn.status == "completed"
    assert txn.wallet.available_balance == Decimal("-340.00")  # 400.00 less 60.00 commission clawed back
    receivable = HostReceivable.objects.get()
    assert (receivable.wallet_id, receivable.transaction_id) == (txn.wallet.pk, txn.pk)
    assert (receivable.amount, receivable.recovered, receivable.currency) == (Decimal("340.00"), 0, "NGN")
    assert receivable.recovered_at is None
    assert_ledger_healthy()


def test_a_refund_the_balance_partly_covers_records_only_the_negative_part(paid_booking, host):
    TransactionService.debit_wallet(host_wallet(host), Decimal("800.00"))  # 50.00 left
    TransactionService.process_refund(paid_booking, Decimal("1000.00"), "Flooded")
    assert available(host) == Decimal("-800.00")
    assert HostReceivable.objects.get().amount == Decimal("800.00")
    assert_ledger_healthy()


def test_a_refund_the_balance_covers_records_no_receivable(paid_booking, host):
    TransactionService.process_refund(paid_booking, Decimal("1000.00"), "Flooded")
    assert available(host) == 0
    assert not HostReceivable.objects.exists()


def test_a_smaller_payout_recovers_part_and_the_wallet_stays_negative(owing, host, guest, make_booking, make_payment):
    payout = pay(host, guest, make_booking, make_payment, total="500.00", commission="75.00")  # 425.00 net
    assert payout.status == "completed"
    assert available(host) == Decimal("-425.00")
    owing.refresh_from_db()
    assert (owing.recovered, owing.outstanding, owing.recovered_at) == (Decimal("425.00"), Decimal("425.00"), None)
    recovery = ReceivableRecovery.objects.get()
    assert (recovery.receivable_id, recovery.transaction_id, recovery.amount) == (
        owing.pk,
        payout.pk,
        Decimal("425.00"),
    )
    assert_ledger_healthy()


def test_a_larger_payout_clears_the_debt_and_the_rest_is_available(owing, host, guest, make_booking, make_payment):
    pay(host, guest, make_booking, make_payment, total="2000.00", commission="300.00")  # 1,700.00 net
    assert available(host) == Decimal("850.00")
    owing.refresh_from_db()
    assert owing.recovered == owing.amount and owing.recovered_at is not None
    assert_ledger_healthy()


def test_receivables_are_recovered_oldest_first(withdrawn, host, guest, make_booking, make_payment):
    TransactionService.process_refund(withdrawn, Decimal("200.00"), "First night")  # owes 170.00
    TransactionService.process_refund(withdrawn, Decimal("400.00"), "Two more nights")  # owes 340.00 more
    first, second = HostReceivable.objects.order_by("id")
    assert (first.amount, second.amount) == (Decimal("170.00"), Decimal("340.00"))
    pay(host, guest, make_booking, make_payment, total="300.00", commission="45.00")  # 255.00 net
    first.refresh_from_db(), second.refresh_from_db()
    assert (first.recovered, second.recovered) == (Decimal("170.00"), Decimal("85.00"))
    assert first.recovered_at is not None and second.recovered_at is None
    assert ReceivableRecovery.objects.count() == 2
    assert available(host) == Decimal("-255.00")
    assert_ledger_healthy()


def test_debit_and_withdrawal_are_refused_while_negative(owing, host, bank_account, unchanged):
    wallet = host_wallet(host)
    with unchanged(), pytest.raises(InsufficientBalanceError, match="short by NGN 860.00"):
        TransactionService.debit_wallet(wallet, Decimal("10.00"))
    with unchanged(), pytest.raises(InsufficientBalanceError):
        TransactionService.initiate_withdrawal(wallet, bank_account, Decimal("1000.00"))


def test_a_credit_into_a_negative_wallet_is_accepted_and_recovers(owing, host):
    TransactionService.credit_wallet(host_wallet(host), Decimal("50.00"))
    assert available(host) == Decimal("-800.00")
    owing.refresh_from_db()
    assert owing.recovered == Decimal("50.00")
    assert_ledger_healthy()


def test_a_failed_withdrawals_release_recovers(paid_booking, host, bank_account):
    withdrawal = TransactionService.initiate_withdrawal(host_wallet(host), bank_account, Decimal("850.00"))
    TransactionService.process_refund(paid_booking, Decimal("1000.00"), "Flooded")  # while the 850.00 is held
    wallet = host_wallet(host)
    assert (wallet.balance, wallet.held_balance, wallet.available_balance) == (0, Decimal("850.00"), Decimal("-850"))
    receivable = HostReceivable.objects.get()
    assert receivable.amount == Decimal("850.00")
    TransactionService.fail_withdrawal(withdrawal, "Bank rejected the account")
    assert available(host) == 0
    receivable.refresh_from_db()
    assert receivable.recovered == receivable.amount
    assert ReceivableRecovery.objects.get().transaction_id == withdrawal.transaction_id
    assert_ledger_healthy()


def test_completing_a_withdrawal_while_negative_keeps_the_debt(paid_booking, host, bank_account):
    withdrawal = TransactionService.initiate_withdrawal(host_wallet(host), bank_account, Decimal("850.00"))
    TransactionService.process_refund(paid_booking, Decimal("1000.00"), "Flooded")
    TransactionService.complete_withdrawal(withdrawal)  # the money had already left: it settles
    wallet = host_wallet(host)
    assert (wallet.balance, wallet.held_balance) == (Decimal("-850.00"), 0)
    assert HostReceivable.objects.get().outstanding == Decimal("850.00")
    assert not ReceivableRecovery.objects.exists()
    assert_ledger_healthy()


def test_reversing_the_refund_recovers_its_receivable(owing, host):
    TransactionService.reverse_transaction(owing.transaction.reference, "Refunded by mistake")
    assert available(host) == 0
    owing.refresh_from_db()
    assert owing.recovered == owing.amount
    reversal = WalletTransaction.objects.get(type="reversal")
    assert ReceivableRecovery.objects.get().transaction_id == reversal.pk
    assert_ledger_healthy()


# --- four-eyes: how far below zero a refund may take a host without a second approver ----------


def staff_refund(booking, actor, key, amount="1000.00"):
    return staff_actions.refund_booking(
        booking=booking, amount=amount, reason="Flooded", actor=actor, idempotency_key=key
    )


@pytest.fixture
def thresholds_out_of_the_way(settings):
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("1000000.00")}


def test_a_refund_within_the_limit_goes_straight_through(
    settings, thresholds_out_of_the_way, withdrawn, host, finance_user
):
    settings.NEGATIVE_BALANCE_APPROVAL_LIMITS = {"NGN": Decimal("850.00")}
    outcome = staff_refund(withdrawn, finance_user, "within")
    assert not outcome.needs_approval
    assert available(host) == Decimal("-850.00")


def test_a_refund_beyond_the_limit_waits_for_a_second_approver_who_carries_it_out(
    settings, thresholds_out_of_the_way, withdrawn, host, finance_user, approver, unchanged
):
    settings.NEGATIVE_BALANCE_APPROVAL_LIMITS = {"NGN": Decimal("500.00"), "KES": Decimal("100000.00")}
    with unchanged():
        outcome = staff_refund(withdrawn, finance_user, "beyond")
    assert outcome.needs_approval
    assert outcome.approval.approval_reason == (
        "This refund would leave the host's wallet at −NGN 850.00, beyond the NGN 500.00 a refund may take "
        "a host below zero without a second approver."
    )
    staff_actions.approve_request(request=outcome.approval, actor=approver, note="Host agreed to repay")
    assert ApprovalRequest.objects.get().status == ApprovalRequest.Status.APPROVED
    assert available(host) == Decimal("-850.00")
    assert HostReceivable.objects.get().amount == Decimal("850.00")
    assert_ledger_healthy()


def test_a_currency_without_a_limit_needs_approval_for_any_negative_balance(
    settings, thresholds_out_of_the_way, withdrawn, host, finance_user
):
    settings.NEGATIVE_BALANCE_APPROVAL_LIMITS = {"KES": Decimal("100000.00")}
    outcome = staff_refund(withdrawn, finance_user, "no-limit", amount="1.00")
    assert outcome.needs_approval
    assert "no negative-balance limit is configured for NGN" in outcome.approval.approval_reason
    assert "−NGN 0.85" in outcome.approval.approval_reason


def test_a_covered_refund_needs_no_limit(settings, thresholds_out_of_the_way, paid_booking, finance_user):
    settings.NEGATIVE_BALANCE_APPROVAL_LIMITS = {}
    assert not staff_refund(paid_booking, finance_user, "covered").needs_approval


def test_refund_effect_describes_the_wallet_after(settings, withdrawn, host):
    settings.NEGATIVE_BALANCE_APPROVAL_LIMITS = {"NGN": Decimal("100.00")}
    payment = withdrawn.payments.get()
    wallet = host_wallet(host)
    effect = staff_actions.refund_effect(payment, wallet, Decimal("200.00"))
    assert (effect.available_before, effect.available_after, effect.new_receivable) == (
        0,
        Decimal("-170.00"),
        Decimal("170.00"),
    )
    assert "−NGN 170.00, beyond the NGN 100.00" in effect.approval_reason
    assert staff_actions.refund_effect(payment, wallet, Decimal("100.00")).approval_reason == ""
