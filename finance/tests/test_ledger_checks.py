"""check_ledger (finance/ledger_checks.py): healthy on a sound ledger, non-zero on a broken invariant."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from finance.models import LedgerEntry, SystemAccount, Wallet

pytestmark = pytest.mark.django_db


def assert_ledger_healthy():
    call_command("check_ledger", stdout=StringIO())


def test_check_ledger_exits_non_zero_on_a_broken_invariant(funded_wallet):
    from django.core.management.base import CommandError

    assert_ledger_healthy()
    Wallet.objects.filter(pk=funded_wallet.pk).update(balance=Decimal("10000.01"))
    with pytest.raises(CommandError, match="violation"):
        assert_ledger_healthy()


def test_check_ledger_reports_unbalanced_journal(funded_wallet):
    from django.core.management.base import CommandError

    txn = funded_wallet.transactions.first()
    LedgerEntry.objects.create(transaction=txn, system_account=SystemAccount.ADJUSTMENTS, currency="NGN", amount=1)
    with pytest.raises(CommandError):
        assert_ledger_healthy()


@pytest.mark.parametrize(
    ("broken", "words"),
    [
        ({"transfer_reference": ""}, "transfer reference 'none'"),
        ({"payout_sent_at": None}, "sent never"),
        ({"payout_method": "manual"}, "payout method 'manual'"),
    ],
)
def test_check_ledger_catches_a_payout_in_flight_that_cannot_be_traced(
    settings, funded_wallet, host, finance_user, broken, words
):
    from django.core.management.base import CommandError

    from finance import staff_actions
    from finance.ledger_checks import payouts_traceable
    from finance.models import BankAccount, Withdrawal
    from finance.services import TransactionService

    settings.SANDBOX_PAYMENTS_ENABLED = True
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("1000000")}
    account = BankAccount.objects.create(
        owner=host, bank_name="GTBank", account_name="Host", account_number_last4="4321", account_number_encrypted="x"
    )
    withdrawal = TransactionService.initiate_withdrawal(funded_wallet, account, Decimal("1000.00"))
    staff_actions.complete_withdrawal(withdrawal=withdrawal, actor=finance_user, idempotency_key="k")
    assert Withdrawal.objects.get(pk=withdrawal.pk).status == "processing"
    assert_ledger_healthy()

    Withdrawal.objects.filter(pk=withdrawal.pk).update(**broken)

    [violation] = payouts_traceable().violations
    assert withdrawal.reference in violation and words in violation
    with pytest.raises(CommandError, match="violation"):
        assert_ledger_healthy()


@pytest.mark.parametrize(
    ("break_it", "words"),
    [
        ("settled_without_legs", "refunds payable is 400.0000, open refunds add up to 0"),
        ("orphan", "has no provider refund"),
        ("payable_moved", "refunds payable is 399.0000, open refunds add up to 400"),
    ],
)
def test_check_ledger_catches_refunds_payable_that_disagrees_with_open_refunds(paid_booking, break_it, words):
    from django.core.management.base import CommandError

    from finance.ledger_checks import refunds_payable_match_open_refunds
    from finance.models import ProviderRefund
    from finance.services import TransactionService

    txn = TransactionService.process_refund(paid_booking, Decimal("400.00"), "guest cancelled")
    assert ProviderRefund.objects.get(transaction=txn).status == "queued"
    assert_ledger_healthy()

    if break_it == "settled_without_legs":  # marked paid, but the money never left refunds payable
        ProviderRefund.objects.filter(transaction=txn).update(status="succeeded")
    elif break_it == "orphan":
        ProviderRefund.objects.filter(transaction=txn).delete()
    else:
        LedgerEntry.objects.create(
            transaction=txn, system_account=SystemAccount.REFUNDS_PAYABLE, currency="NGN", amount=Decimal("-1")
        )
        LedgerEntry.objects.create(
            transaction=txn, system_account=SystemAccount.ADJUSTMENTS, currency="NGN", amount=Decimal("1")
        )

    violations = refunds_payable_match_open_refunds().violations
    assert any(words in violation for violation in violations), violations
    with pytest.raises(CommandError, match="violation"):
        assert_ledger_healthy()


@pytest.mark.parametrize(
    ("break_it", "words"),
    [
        # A wallet negative by more than its receivables say (only the wallet row is wrong).
        (lambda r: Wallet.objects.filter(pk=r.wallet_id).update(balance=Decimal("-900.00")), "outstanding receivables"),
        # A receivable whose recovered amount no recovery accounts for.
        (lambda r: type(r).objects.filter(pk=r.pk).update(recovered=Decimal("10.00")), "recoveries sum"),
    ],
)
def test_check_ledger_holds_a_wallet_negative_only_by_its_receivables(
    settings, paid_booking, host, bank_account, break_it, words
):
    from django.core.management.base import CommandError

    from finance.ledger_checks import negative_only_by_receivables
    from finance.models import HostReceivable
    from finance.services import TransactionService

    settings.MINIMUM_WITHDRAWAL = {}
    wallet = Wallet.objects.get(user=host)
    TransactionService.complete_withdrawal(
        TransactionService.initiate_withdrawal(wallet, bank_account, Decimal("850.00"))
    )
    TransactionService.process_refund(paid_booking, Decimal("1000.00"), "Flooded")  # the host owes 850.00
    assert_ledger_healthy()

    break_it(HostReceivable.objects.get())

    # (A receivable's recovered amount changed alone also leaves its wallet's outstanding wrong.)
    violations = negative_only_by_receivables().violations
    assert any(words in violation for violation in violations), violations
    with pytest.raises(CommandError, match="violation"):
        assert_ledger_healthy()
