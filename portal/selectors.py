"""Read queries for the portal's pages: dashboard totals and the host statement."""

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Count, Q, Sum
from django.utils import timezone

from finance.models import ApprovalRequest, Wallet, WalletTransaction, WebhookEvent, Withdrawal

Type = WalletTransaction.Type
Status = WalletTransaction.Status


def dashboard_totals() -> dict:
    """Per currency: balances, held, pending withdrawals, today's payments/refunds/reversals."""
    rows: dict[str, dict] = {}

    def row(currency):
        return rows.setdefault(
            currency,
            {
                "currency": currency,
                "wallets": 0,
                "balance": Decimal(0),
                "held": Decimal(0),
                "pending_withdrawals": Decimal(0),
                "pending_withdrawal_count": 0,
                "payments": Decimal(0),
                "refunds": Decimal(0),
                "reversals": Decimal(0),
            },
        )

    for r in Wallet.objects.values("currency").annotate(n=Count("id"), b=Sum("balance"), h=Sum("held_balance")):
        entry = row(r["currency"])
        entry.update(wallets=r["n"], balance=r["b"] or 0, held=r["h"] or 0)
    for r in (
        Withdrawal.objects.filter(status__in=Withdrawal.OPEN_STATUSES)
        .values("currency")
        .annotate(n=Count("id"), total=Sum("amount"))
    ):
        entry = row(r["currency"])
        entry.update(pending_withdrawals=r["total"] or 0, pending_withdrawal_count=r["n"])
    start = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    today = (
        WalletTransaction.objects.filter(
            created_at__gte=start, type__in=[Type.BOOKING_PAYMENT, Type.REFUND, Type.REVERSAL]
        )
        .values("currency", "type")
        .annotate(total=Sum("amount"))
    )
    names = {Type.BOOKING_PAYMENT: "payments", Type.REFUND: "refunds", Type.REVERSAL: "reversals"}
    for r in today:
        row(r["currency"])[names[r["type"]]] = r["total"] or 0
    return {
        "currencies": sorted(rows.values(), key=lambda e: e["currency"]),
        "queue_length": Withdrawal.objects.filter(status__in=Withdrawal.OPEN_STATUSES).count(),
        "pending_approvals": ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING).count(),
    }


def flagged_webhook_events(limit: int = 5):
    """The webhook inbox's events that need staff: flagged (mismatch) or rejected (unreadable)."""
    return WebhookEvent.objects.filter(outcome__in=WebhookEvent.NEEDS_ATTENTION).order_by("-received_at", "-id")[:limit]


# --- the host statement -------------------------------------------------------------------


@dataclass
class StatementLine:
    date: datetime
    reference: str
    description: str
    kind: str
    gross: Decimal | None
    commission: Decimal | None
    amount: Decimal
    balance: Decimal


@dataclass
class CurrencyStatement:
    currency: str
    opening: Decimal
    closing: Decimal = Decimal(0)
    lines: list[StatementLine] = field(default_factory=list)
    totals: dict = field(default_factory=dict)


# Rows that moved the balance: completed ones, and reversed ones (their reversal is its own row).
_EFFECTIVE = Q(status__in=[Status.COMPLETED, Status.REVERSED])


def host_statement(user, start: date, end: date) -> list[CurrencyStatement]:
    """The host's statement per currency over [start, end] (dates inclusive, UTC)."""
    since = timezone.make_aware(datetime.combine(start, time.min))
    until = timezone.make_aware(datetime.combine(end + timedelta(days=1), time.min))
    statements = []
    for wallet in Wallet.objects.filter(user=user).order_by("currency"):
        before = (
            wallet.transactions.filter(_EFFECTIVE, created_at__lt=since)
            .values("direction")
            .annotate(total=Sum("amount"))
        )
        opening = sum((r["total"] if r["direction"] == "in" else -r["total"] for r in before if r["total"]), Decimal(0))
        statement = CurrencyStatement(currency=wallet.currency, opening=opening)
        running = opening
        totals = {"payouts": Decimal(0), "commission": Decimal(0), "refunds": Decimal(0), "withdrawals": Decimal(0)}
        txns = (
            wallet.transactions.filter(_EFFECTIVE, created_at__gte=since, created_at__lt=until)
            .select_related("booking")
            .order_by("created_at", "id")
        )
        for txn in txns:
            signed = txn.signed_amount
            running += signed
            gross = commission = None
            if txn.type == Type.BOOKING_PAYMENT and txn.booking_id:
                gross, commission = txn.booking.grand_total, txn.booking.commission_fee
                totals["payouts"] += txn.amount
                totals["commission"] += commission
            elif txn.type == Type.REFUND:
                gross = Decimal(txn.metadata.get("refund_amount") or txn.amount)
                commission = -Decimal(txn.metadata.get("commission_clawback") or 0)
                totals["refunds"] += txn.amount
            elif txn.type == Type.WITHDRAWAL:
                totals["withdrawals"] += txn.amount
            statement.lines.append(
                StatementLine(
                    date=txn.created_at,
                    reference=txn.reference,
                    description=txn.description,
                    kind=txn.get_type_display(),
                    gross=gross,
                    commission=commission,
                    amount=signed,
                    balance=running,
                )
            )
        statement.closing = running
        statement.totals = totals
        statements.append(statement)
    return statements
