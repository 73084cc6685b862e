"""A snapshot of every row a money operation could change, to prove a refusal changed nothing;
and the ledger checks a test expects to pass."""


def ledger_snapshot() -> dict:
    """Everything a money operation could change."""
    from finance.models import (
        HostReceivable,
        IdempotencyRecord,
        LedgerAudit,
        LedgerEntry,
        Payment,
        ReceivableRecovery,
        Wallet,
        WalletTransaction,
        Withdrawal,
    )

    return {
        "wallets": sorted(Wallet.objects.values_list("id", "balance", "held_balance", "status")),
        "transactions": sorted(WalletTransaction.objects.values_list("id", "status")),
        "entries": LedgerEntry.objects.count(),
        "withdrawals": sorted(Withdrawal.objects.values_list("id", "status")),
        "payments": sorted(Payment.objects.values_list("id", "status", "refunded_amount")),
        "audit": LedgerAudit.objects.count(),
        "idempotency": IdempotencyRecord.objects.count(),
        "receivables": sorted(HostReceivable.objects.values_list("id", "recovered")),
        "recoveries": ReceivableRecovery.objects.count(),
    }


def failing_ledger_checks() -> list[str]:
    """The names of check_ledger's checks that fail now (a sound ledger: [])."""
    from finance.ledger_checks import run_ledger_checks

    return [check.name for check in run_ledger_checks() if not check.ok]
