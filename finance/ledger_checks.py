"""Whole-database checks of the ledger's invariants.

Used by `manage.py check_ledger` (exits non-zero on any violation) and by the finance
dashboard's ledger-health panel. Each check is one aggregate query, so a full run stays
fast on millions of entries.
"""

from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import DecimalField, Exists, F, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce, Greatest

from .models import (
    MONEY,
    HostReceivable,
    LedgerEntry,
    ProviderRefund,
    ReceivableRecovery,
    SystemAccount,
    Wallet,
    WalletTransaction,
    Withdrawal,
)

MAX_REPORTED = 20  # violations listed per check; the count is always exact
ZERO = Value(Decimal(0), output_field=DecimalField(**MONEY))
# Stored amounts have 4 decimals, so any real discrepancy is at least 0.0001. Comparing
# with half of that keeps PostgreSQL's exact sums exact and ignores SQLite's float noise
# (SQLite aggregates DECIMAL columns as floats; it is only the embedded dev default).
HALF_UNIT = Decimal("0.00005")


def _nonzero(name: str) -> Q:
    return Q(**{f"{name}__gte": HALF_UNIT}) | Q(**{f"{name}__lte": -HALF_UNIT})


@dataclass
class CheckResult:
    name: str
    description: str
    violations: list[str] = field(default_factory=list)
    violation_count: int = 0

    @property
    def ok(self) -> bool:
        return self.violation_count == 0


def _result(name: str, description: str, rows, describe) -> CheckResult:
    rows = list(rows)
    return CheckResult(name, description, [describe(row) for row in rows[:MAX_REPORTED]], len(rows))


def _sum_per_row(related, parent: str, summed="amount"):
    """For each row of the outer query: the sum of `summed` over the `related` rows whose
    `parent` is that row (zero when there are none), as one correlated subquery."""
    per_parent = related.filter(**{parent: OuterRef("pk")}).values(parent).annotate(total=Sum(summed)).values("total")
    return Coalesce(Subquery(per_parent), ZERO)


def _totals_per_currency(queryset) -> dict:
    """{currency: sum of amount} over `queryset`."""
    return dict(queryset.values("currency").annotate(total=Sum("amount")).values_list("currency", "total").order_by())


def journal_balances_per_currency() -> CheckResult:
    rows = LedgerEntry.objects.values("currency").annotate(total=Sum("amount")).filter(_nonzero("total"))
    return _result(
        "journal_zero_sum",
        "The journal sums to zero in every currency.",
        rows,
        lambda r: f"{r['currency']} journal sums to {r['total']}",
    )


def transactions_balance() -> CheckResult:
    rows = LedgerEntry.objects.values("transaction__reference").annotate(total=Sum("amount")).filter(_nonzero("total"))
    return _result(
        "transaction_zero_sum",
        "Every transaction's entries sum to zero.",
        rows,
        lambda r: f"{r['transaction__reference']} entries sum to {r['total']}",
    )


def entry_currencies_match() -> CheckResult:
    rows = (
        LedgerEntry.objects.filter(wallet__isnull=False)
        .exclude(currency=F("wallet__currency"))
        .values("id", "currency", "wallet__currency")
    )
    return _result(
        "entry_currency",
        "Every wallet entry is in its wallet's currency.",
        rows,
        lambda r: f"entry {r['id']} in {r['currency']} on a {r['wallet__currency']} wallet",
    )


def wallet_balances_match_entries() -> CheckResult:
    rows = (
        Wallet.objects.annotate(journal=_sum_per_row(LedgerEntry.objects, "wallet"))
        .annotate(difference=F("balance") - F("journal"))
        .filter(_nonzero("difference"))
        .values("id", "balance", "journal")
    )
    return _result(
        "wallet_balance",
        "Each wallet's balance equals the sum of its entries.",
        rows,
        lambda r: f"wallet {r['id']}: balance {r['balance']}, entries sum {r['journal']}",
    )


def negative_only_by_receivables() -> CheckResult:
    """Held ≥ 0; a wallet's available balance is negative only by its outstanding receivables
    (max(0, held − balance) = Σ amount − recovered); each receivable's recovered is the sum of
    its recoveries."""
    outstanding = _sum_per_row(HostReceivable.objects, "wallet", F("amount") - F("recovered"))
    debt = Greatest(F("held_balance") - F("balance"), ZERO)
    wallets = (
        Wallet.objects.annotate(owed=outstanding, difference=debt - F("owed"))
        .filter(Q(held_balance__lt=0) | _nonzero("difference"))
        .values("id", "balance", "held_balance", "owed")
        .order_by("id")
    )
    receivables = (
        HostReceivable.objects.annotate(recovery_sum=_sum_per_row(ReceivableRecovery.objects, "receivable"))
        .annotate(difference=F("recovered") - F("recovery_sum"))
        .filter(_nonzero("difference"))
        .values("id", "wallet_id", "recovered", "recovery_sum")
        .order_by("id")
    )
    return _result(
        "negative_only_by_receivables",
        "Held ≥ 0 in every wallet, a wallet is negative (held > balance) only by its outstanding "
        "receivables, and each receivable's recovered amount is the sum of its recoveries.",
        [*wallets, *receivables],
        _describe_debt_violation,
    )


def _describe_debt_violation(row: dict) -> str:
    if "recovery_sum" in row:
        return (
            f"receivable {row['id']} of wallet {row['wallet_id']}: recovered {row['recovered']}, "
            f"recoveries sum {row['recovery_sum']}"
        )
    return (
        f"wallet {row['id']}: balance {row['balance']}, held {row['held_balance']}, "
        f"outstanding receivables {row['owed']}"
    )


def held_matches_open_withdrawals() -> CheckResult:
    open_withdrawals = Withdrawal.objects.filter(status__in=Withdrawal.OPEN_STATUSES)
    rows = (
        Wallet.objects.annotate(open_total=_sum_per_row(open_withdrawals, "wallet"))
        .annotate(difference=F("held_balance") - F("open_total"))
        .filter(_nonzero("difference"))
        .values("id", "held_balance", "open_total")
    )
    return _result(
        "held_matches_withdrawals",
        "Each wallet's held amount equals the sum of its open withdrawals.",
        rows,
        lambda r: f"wallet {r['id']}: held {r['held_balance']}, open withdrawals {r['open_total']}",
    )


def withdrawal_states_agree() -> CheckResult:
    Status = Withdrawal.Status
    TxnStatus = WalletTransaction.Status
    agree = (
        Q(status__in=Withdrawal.OPEN_STATUSES, transaction__status=TxnStatus.PENDING)
        | Q(status=Status.COMPLETED, transaction__status__in=[TxnStatus.COMPLETED, TxnStatus.REVERSED])
        | Q(status=Status.FAILED, transaction__status=TxnStatus.FAILED)
    )
    rows = Withdrawal.objects.exclude(agree).values("reference", "status", "transaction__status")
    return _result(
        "withdrawal_states",
        "Each withdrawal's status agrees with its transaction's.",
        rows,
        lambda r: f"{r['reference']} is {r['status']} but its transaction is {r['transaction__status']}",
    )


def reversals_consistent() -> CheckResult:
    reversal = WalletTransaction.objects.filter(reverses=OuterRef("pk"))
    rows = (
        WalletTransaction.objects.annotate(has_reversal=Exists(reversal))
        .filter(
            Q(status=WalletTransaction.Status.REVERSED, has_reversal=False)
            | (~Q(status=WalletTransaction.Status.REVERSED) & Q(has_reversal=True))
        )
        .values("reference", "status")
    )
    return _result(
        "reversals",
        "A transaction is marked reversed exactly when a reversal points at it.",
        rows,
        lambda r: f"{r['reference']} is {r['status']} and its reversal disagrees",
    )


def pending_transactions_have_no_entries() -> CheckResult:
    rows = (
        WalletTransaction.objects.filter(status__in=[WalletTransaction.Status.PENDING, WalletTransaction.Status.FAILED])
        .filter(Exists(LedgerEntry.objects.filter(transaction=OuterRef("pk"))))
        .values("reference", "status")
    )
    return _result(
        "pending_without_entries",
        "Pending and failed transactions moved no money.",
        rows,
        lambda r: f"{r['reference']} is {r['status']} but has journal entries",
    )


def payouts_traceable() -> CheckResult:
    """A payout a provider is moving (or moved) can be traced with it: a processing withdrawal
    was sent to a provider (not manual) with a transfer reference and a sent time, and any
    withdrawal with a transfer reference names the provider it went to. (Its hold, and a
    settled one's transaction, are held_matches_withdrawals' and withdrawal_states'.)"""
    provider_sent = ~Q(payout_method__in=("", "manual")) & ~Q(transfer_reference="") & Q(payout_sent_at__isnull=False)
    rows = (
        Withdrawal.objects.filter(
            (Q(status=Withdrawal.Status.PROCESSING) & ~provider_sent) | (~Q(transfer_reference="") & ~provider_sent)
        )
        .values("reference", "status", "payout_method", "transfer_reference", "payout_sent_at")
        .order_by("pk")
    )
    return _result(
        "payouts_traceable",
        "Each payout sent to a provider has its provider, transfer reference and sent time.",
        rows,
        lambda r: (
            f"{r['reference']} is {r['status']} with payout method {r['payout_method'] or 'none'!r}, "
            f"transfer reference {r['transfer_reference'] or 'none'!r}, sent {r['payout_sent_at'] or 'never'}"
        ),
    )


def refunds_payable_match_open_refunds() -> CheckResult:
    """Refunds payable holds exactly what is owed to guests: per currency, the account's balance
    equals the open provider refunds (queued, processing, failed), and every refund transaction
    that moved money (completed, or reversed since) has its provider refund."""
    payable = _totals_per_currency(LedgerEntry.objects.filter(system_account=SystemAccount.REFUNDS_PAYABLE))
    owed = _totals_per_currency(ProviderRefund.objects.filter(status__in=ProviderRefund.OPEN_STATUSES))
    problems = []
    for currency in sorted(set(payable) | set(owed)):
        balance, open_total = payable.get(currency) or Decimal(0), owed.get(currency) or Decimal(0)
        if abs(balance - open_total) >= HALF_UNIT:
            problems.append(f"{currency} refunds payable is {balance}, open refunds add up to {open_total}")
    orphans = (
        WalletTransaction.objects.filter(
            type=WalletTransaction.Type.REFUND,
            status__in=(WalletTransaction.Status.COMPLETED, WalletTransaction.Status.REVERSED),
        )
        .filter(~Exists(ProviderRefund.objects.filter(transaction=OuterRef("pk"))))
        .values_list("reference", flat=True)
        .order_by("pk")
    )
    problems += [f"refund {reference} has no provider refund" for reference in orphans]
    return _result(
        "refunds_payable_match_open_refunds",
        "Refunds payable equals the open refunds in each currency, and every refund has its provider refund.",
        problems,
        str,
    )


ALL_CHECKS = (
    journal_balances_per_currency,
    transactions_balance,
    entry_currencies_match,
    wallet_balances_match_entries,
    negative_only_by_receivables,
    held_matches_open_withdrawals,
    withdrawal_states_agree,
    reversals_consistent,
    pending_transactions_have_no_entries,
    payouts_traceable,
    refunds_payable_match_open_refunds,
)


def run_ledger_checks() -> list[CheckResult]:
    return [check() for check in ALL_CHECKS]
