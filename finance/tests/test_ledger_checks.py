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
