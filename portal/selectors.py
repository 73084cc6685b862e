"""Read queries for the portal's pages: dashboard totals, the transaction page and the host statement."""

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import ClassVar

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Count, DecimalField, F, Q, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone
from wagtail.models import ModelLogEntry

from finance.models import (
    ApprovalRequest,
    Booking,
    LedgerAudit,
    Payment,
    ReceivableRecovery,
    Wallet,
    WalletTransaction,
    WebhookEvent,
    Withdrawal,
)
from finance.money import COLUMN_DECIMALS, COLUMN_DIGITS, format_money, round_money

Type = WalletTransaction.Type
Status = WalletTransaction.Status


def _metadata_amount(key: str):
    """A money amount the services store as a decimal string in a transaction's metadata, summed in SQL."""
    return Cast(
        KeyTextTransform(key, "metadata"), DecimalField(max_digits=COLUMN_DIGITS, decimal_places=COLUMN_DECIMALS)
    )


# Today's figures per currency: (name, aggregate). Each names exactly what it adds up.
_PAYOUT, _REFUND, _REVERSAL = Q(type=Type.BOOKING_PAYMENT), Q(type=Type.REFUND), Q(type=Type.REVERSAL)
_TODAY_FIGURES = {
    # A booking payout's metadata carries the guest's payment (gross) and the commission kept;
    # its amount is the host's share, credited to the host's wallet.
    "payment_count": Count("id", filter=_PAYOUT),
    "guest_payments": Sum(_metadata_amount("gross"), filter=_PAYOUT),
    "commission_earned": Sum(_metadata_amount("commission"), filter=_PAYOUT),
    "host_payouts": Sum("amount", filter=_PAYOUT),
    # A refund's amount is what the host gives back (the host's debit); the guest gets
    # metadata["refund_amount"], the difference being the commission the platform returns.
    "refund_count": Count("id", filter=_REFUND),
    "refunded_to_guests": Sum(_metadata_amount("refund_amount"), filter=_REFUND),
    "clawed_back": Sum("amount", filter=_REFUND),
    "commission_returned": Sum(_metadata_amount("commission_clawback"), filter=_REFUND),
    "reversal_count": Count("id", filter=_REVERSAL),
    "reversals": Sum("amount", filter=_REVERSAL),
}


def today_start() -> datetime:
    """Midnight today in the site's time zone: where the dashboard's "today" begins."""
    return timezone.make_aware(datetime.combine(timezone.localdate(), time.min))


def dashboard_totals() -> dict:
    """Per currency: wallet balances, held, pending withdrawals, what hosts owe (wallets below
    zero); and today's payments, refunds, reversals.

    Amounts are Decimals (never None): the template formats each at its currency's precision."""
    rows: dict[str, dict] = {}
    owed_by_hosts: list[dict] = []  # the "Owed by hosts" card: currencies in which some host owes
    zero = Decimal(0)

    def row(currency):
        return rows.setdefault(
            currency,
            {
                "currency": currency,
                "wallets": 0,
                "balance": zero,
                "held": zero,
                "pending_withdrawals": zero,
                "pending_withdrawal_count": 0,
            },
        )

    # A wallet below zero (balance less held): what its host owes, by the ledger's invariant the
    # outstanding of its receivables (check_ledger), read in the same query. One wallet per host
    # and currency, so the wallets counted are the hosts.
    below_zero = Q(balance__lt=F("held_balance"))
    for r in Wallet.objects.values("currency").annotate(
        n=Count("id"),
        b=Sum("balance"),
        h=Sum("held_balance"),
        owed=Sum(F("held_balance") - F("balance"), filter=below_zero),
        owing=Count("id", filter=below_zero),
    ):
        entry = row(r["currency"])
        entry.update(wallets=r["n"], balance=r["b"] or zero, held=r["h"] or zero)
        if r["owing"]:
            owed_by_hosts.append({"currency": r["currency"], "outstanding": r["owed"], "hosts": r["owing"]})
    for r in (
        Withdrawal.objects.filter(status__in=Withdrawal.OPEN_STATUSES)
        .values("currency")
        .annotate(n=Count("id"), total=Sum("amount"))
    ):
        entry = row(r["currency"])
        entry.update(pending_withdrawals=r["total"] or zero, pending_withdrawal_count=r["n"])
    start = today_start()
    # Today's rows only, found by the txn_created_id index.
    today = (
        WalletTransaction.objects.filter(
            created_at__gte=start, type__in=[Type.BOOKING_PAYMENT, Type.REFUND, Type.REVERSAL]
        )
        .order_by()
        .values("currency")
        .annotate(**_TODAY_FIGURES)
    )
    today_rows = [
        {name: (value if value is not None else zero) for name, value in r.items()}
        for r in sorted(today, key=lambda r: r["currency"])
    ]
    return {
        "currencies": sorted(rows.values(), key=lambda e: e["currency"]),
        "owed_by_hosts": sorted(owed_by_hosts, key=lambda e: e["currency"]),
        "today": today_rows,
        "today_start": start,
        "queue_length": sum(r["pending_withdrawal_count"] for r in rows.values()),
        "pending_approvals": ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING).count(),
    }


def flagged_webhook_events(limit: int = 5):
    """The webhook inbox's events that need staff: flagged (mismatch) or rejected (unreadable)."""
    return WebhookEvent.objects.filter(outcome__in=WebhookEvent.NEEDS_ATTENTION).order_by("-received_at", "-id")[:limit]


# --- what hosts owe the platform (receivables) --------------------------------------------


@dataclass
class WalletReceivables:
    """The wallet page's "Owed by the host" panel."""

    outstanding: Decimal  # the total of the open receivables
    open: list  # HostReceivable, oldest first (recovery order), with their refund transaction and booking
    recoveries: list  # ReceivableRecovery, newest first, with the movement that recovered and the refund


RECENT_RECOVERIES = 20


def wallet_receivables(wallet: Wallet) -> WalletReceivables | None:
    """What the wallet's owner owes the platform and what has been recovered so far, or None when
    the wallet never owed anything (no query beyond the first)."""
    receivables = list(wallet.receivables.select_related("transaction__booking").order_by("created_at", "id"))
    if not receivables:
        return None
    recoveries = list(
        ReceivableRecovery.objects.filter(receivable__wallet=wallet)
        .select_related("transaction", "receivable__transaction")
        .order_by("-created_at", "-id")[:RECENT_RECOVERIES]
    )
    still_open = [r for r in receivables if r.outstanding > 0]
    return WalletReceivables(
        outstanding=sum((r.outstanding for r in still_open), Decimal(0)),
        open=still_open,
        recoveries=recoveries,
    )


# --- the transaction page -----------------------------------------------------------------

# What a reference can look like: the column's length, and the characters references are made of.
# Anything else cannot name a transaction, so it is not looked up at all (a 404, never a 500).
_REFERENCE_LENGTH = WalletTransaction._meta.get_field("reference").max_length
_REFERENCE = re.compile(rf"[A-Za-z0-9_-]{{1,{_REFERENCE_LENGTH}}}")


def is_reference(value: str) -> bool:
    return bool(_REFERENCE.fullmatch(value or ""))


def _metadata_decimal(metadata: dict, key: str) -> Decimal | None:
    """An amount the services stored as a decimal string in a transaction's metadata, or None."""
    try:
        return Decimal(str(metadata[key]))
    except (KeyError, ArithmeticError, ValueError, TypeError):
        return None


def _one_to_one(instance, name: str):
    """A reverse one-to-one (loaded with select_related) or None when there is none."""
    try:
        return getattr(instance, name)
    except ObjectDoesNotExist:
        return None


@dataclass
class TransactionTrail:
    """Everything one movement of money touched, for the transaction page."""

    txn: WalletTransaction
    entries: list
    entries_total: Decimal
    ledger_audit: list
    actor: object  # the person who moved it (the first ledger audit row's actor), or None: the system
    withdrawal: Withdrawal | None
    payment: Payment | None
    payout: WalletTransaction | None  # for a refund: the booking payout it draws on
    refunds: list  # refunds of the same booking (booking payouts and refunds)
    reversal: WalletTransaction | None  # the reversal of this transaction
    approvals: list
    log_entries: list
    webhook_events: list

    @property
    def booking(self) -> Booking | None:
        return self.txn.booking

    @property
    def entries_balance(self) -> bool:
        return self.entries_total == 0


def transaction_trail(reference: str) -> TransactionTrail | None:
    """The transaction `reference` and everything it touched, or None when there is none.

    About a dozen indexed queries whatever the size of the ledger: the header with its wallet,
    booking, withdrawal and payment in one; then the legs, the ledger audit rows, the reversal,
    the booking's refunds, the approval requests, the webhook events and the staff log entries."""
    if not is_reference(reference):
        return None
    txn = (
        WalletTransaction.objects.select_related(
            "wallet__user",
            "reverses",
            "booking__rental_property__host",
            "booking__guest",
            "withdrawal__bank_account",
            "withdrawal__processed_by",
            "payment",
        )
        .filter(reference=reference)
        .first()
    )
    if txn is None:
        return None
    entries = list(txn.entries.select_related("wallet__user").order_by("id"))
    ledger_audit = list(
        LedgerAudit.objects.filter(transaction=txn).select_related("actor").order_by("created_at", "id")
    )
    withdrawal = _one_to_one(txn, "withdrawal")
    reversal = txn.reversals.first()

    # The payment behind it: a booking payout's own; a refund's is named in its metadata; a
    # reversal belongs to the payment of the transaction it reverses.
    subject = txn.reverses if txn.type == Type.REVERSAL and txn.reverses else txn
    payment = payout = None
    if subject.type == Type.BOOKING_PAYMENT:
        payment = (
            _one_to_one(txn, "payment")
            if subject is txn
            else Payment.objects.filter(ledger_transaction=subject).first()
        )
        payout = None if subject is txn else subject
    elif subject.type == Type.REFUND and subject.metadata.get("payment_reference"):
        payment = (
            Payment.objects.select_related("ledger_transaction")
            .filter(reference=str(subject.metadata["payment_reference"])[:32])
            .first()
        )
        payout = payment.ledger_transaction if payment else None
    refunds = []
    if txn.booking_id and txn.type in (Type.BOOKING_PAYMENT, Type.REFUND):
        refunds = list(
            WalletTransaction.objects.filter(booking_id=txn.booking_id, type=Type.REFUND).order_by("created_at", "id")
        )
        for refund in refunds:  # what the guest got back (the refund's amount is the host's debit)
            refund.guest_refund = _metadata_decimal(refund.metadata, "refund_amount")

    # Approval requests about it: its reversal (or the reversal this is), its withdrawal, its booking's refunds.
    about = Q(transaction_id__in=[pk for pk in (txn.pk, txn.reverses_id) if pk])
    if withdrawal:
        about |= Q(withdrawal_id=withdrawal.pk)
    if txn.booking_id and subject.type in (Type.BOOKING_PAYMENT, Type.REFUND):
        about |= Q(booking_id=txn.booking_id)
    approvals = list(
        ApprovalRequest.objects.filter(about).select_related("requested_by", "approved_by").order_by("-created_at")
    )
    webhook_events = list(payment.webhook_events.order_by("-received_at", "-id")) if payment else []

    return TransactionTrail(
        txn=txn,
        entries=entries,
        entries_total=sum((e.amount for e in entries), Decimal(0)),
        ledger_audit=ledger_audit,
        actor=next((a.actor for a in ledger_audit if a.actor_id), None),
        withdrawal=withdrawal,
        payment=payment,
        payout=payout,
        refunds=refunds,
        reversal=reversal,
        approvals=approvals,
        log_entries=_log_entries(txn, withdrawal=withdrawal, approvals=approvals, webhook_events=webhook_events),
        webhook_events=webhook_events,
    )


def _log_entries(txn, *, withdrawal, approvals, webhook_events) -> list:
    """The staff log entries (Wagtail's ModelLogEntry) about the transaction, newest first.

    What each staff action logs on (finance/staff_actions.py, finance/approvals.py): a reversal
    on the original transaction (data: reference = the reversal, reverses = the original); a
    refund on its booking (reference = the refund); a withdrawal's completion or failure on the
    withdrawal; approval requests and decisions on the request; a webhook replay on the event.
    Found by (content type, object id), both indexed: never a scan of the JSON data."""
    types = ContentType.objects.get_for_models(WalletTransaction, Withdrawal, Booking, ApprovalRequest, WebhookEvent)
    ref = txn.reference

    def on(model, *ids, **data):
        return Q(content_type=types[model], object_id__in=[str(pk) for pk in ids], **data)

    about = on(WalletTransaction, txn.pk)
    if txn.reverses_id:
        about |= on(WalletTransaction, txn.reverses_id, data__reference=ref)
    if txn.booking_id and txn.type == Type.BOOKING_PAYMENT:
        about |= on(Booking, txn.booking_id)  # the refunds of the booking it paid out
    elif txn.booking_id:
        about |= on(Booking, txn.booking_id, data__reference=ref)
    if withdrawal:
        about |= on(Withdrawal, withdrawal.pk)
    if approvals:
        about |= on(ApprovalRequest, *(a.pk for a in approvals))
    if webhook_events:
        about |= on(WebhookEvent, *(e.pk for e in webhook_events))
    return list(ModelLogEntry.objects.filter(about).select_related("user").order_by("-timestamp", "-id")[:100])


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
    # What the host owes the platform (HostReceivable, ReceivableRecovery): how much of this
    # movement repaid it, and how far below zero this movement (a refund) took the wallet.
    repaid: Decimal | None = None
    went_below_zero: Decimal | None = None
    note: str = ""  # those two in words, for every format of the statement


def _owed_note(*, kind: str, currency: str, repaid: Decimal | None, went_below_zero: Decimal | None) -> str:
    notes = []
    if went_below_zero:
        notes.append(
            f"Your wallet went below zero by {format_money(went_below_zero, currency)}: StayAfrica paid the "
            "guest and recovers it from your next booking payouts."
        )
    if repaid:
        what = "payout" if kind == Type.BOOKING_PAYMENT else "movement"
        notes.append(f"{format_money(repaid, currency)} of this {what} repaid what you owed.")
    return " ".join(notes)


@dataclass
class StatementSummary:
    """The period's movements in a few sums, like a bank statement's summary box: opening plus
    every sum below (each already signed: money out is negative) is the closing balance.

    A payout credits the booking total less StayAfrica's commission; a refund debits what the
    guest got back less the commission StayAfrica returns. Both are split into their gross part
    (payouts, refunds) and the commission part, so the commission line is what StayAfrica kept
    net of what it gave back."""

    FIGURES: ClassVar = ("opening", "payouts", "commission", "refunds", "withdrawals", "adjustments")

    currency: str
    opening: Decimal
    payouts: Decimal = Decimal(0)
    commission: Decimal = Decimal(0)
    refunds: Decimal = Decimal(0)
    withdrawals: Decimal = Decimal(0)
    adjustments: Decimal = Decimal(0)  # staff credits and debits, reversals
    # Not a movement, so not in the sum: what the host owed StayAfrica at the period's end (a
    # refund their wallet could not give back, not yet recovered). It is why a closing balance
    # is below zero; it is recovered first from the host's next booking payouts.
    owed: Decimal = Decimal(0)

    def add(self, line: StatementLine, txn_type: str) -> None:
        commission = line.commission or Decimal(0)
        if txn_type == Type.BOOKING_PAYMENT:
            self.payouts += line.amount + commission
            self.commission -= commission
        elif txn_type == Type.REFUND:
            self.refunds += line.amount + commission  # commission is negative here: returned
            self.commission -= commission
        elif txn_type == Type.WITHDRAWAL:
            self.withdrawals += line.amount
        else:
            self.adjustments += line.amount

    @property
    def closing(self) -> Decimal:
        return self.opening + self.payouts + self.commission + self.refunds + self.withdrawals + self.adjustments

    def rounded(self) -> "StatementSummary":
        """Every figure at the currency's precision (the ledger keeps 4 decimals)."""
        figures = {name: round_money(getattr(self, name), self.currency) for name in (*self.FIGURES, "owed")}
        return StatementSummary(currency=self.currency, **figures)


@dataclass
class CurrencyStatement:
    currency: str
    opening: Decimal
    closing: Decimal = Decimal(0)
    lines: list[StatementLine] = field(default_factory=list)
    summary: StatementSummary | None = None
    held: Decimal = Decimal(0)  # now, not at the period's end: money held for pending withdrawals
    available: Decimal = Decimal(0)  # now: the balance less what is held

    @property
    def withdrawable(self) -> Decimal:
        """What the host can withdraw now: nothing while the wallet is below zero."""
        return max(self.available, Decimal(0))

    @property
    def owed_now(self) -> Decimal:
        """What the host owes StayAfrica now: how far the available balance is below zero."""
        return max(-self.available, Decimal(0))


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
        statement = CurrencyStatement(
            currency=wallet.currency,
            opening=opening,
            held=wallet.held_balance,
            available=wallet.available_balance,
        )
        owed = _owed_in_period(wallet, until)
        summary = StatementSummary(currency=wallet.currency, opening=opening, owed=owed.at_end)
        running = opening
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
            elif txn.type == Type.REFUND:
                gross = Decimal(txn.metadata.get("refund_amount") or txn.amount)
                commission = -Decimal(txn.metadata.get("commission_clawback") or 0)
            line = StatementLine(
                date=txn.created_at,
                reference=txn.reference,
                description=txn.description,
                kind=txn.get_type_display(),
                gross=gross,
                commission=commission,
                amount=signed,
                balance=running,
                repaid=owed.repaid_by.get(txn.pk),
                went_below_zero=owed.created_by.get(txn.pk),
            )
            line.note = _owed_note(
                kind=txn.type, currency=wallet.currency, repaid=line.repaid, went_below_zero=line.went_below_zero
            )
            statement.lines.append(line)
            summary.add(line, txn.type)
        statement.closing = running
        statement.summary = summary
        statements.append(statement)
    return statements


@dataclass
class OwedInPeriod:
    at_end: Decimal  # outstanding at the period's end
    created_by: dict  # transaction id -> the receivable it recorded (a refund's)
    repaid_by: dict  # transaction id -> how much of the receivables it recovered


def _owed_in_period(wallet: Wallet, until: datetime) -> OwedInPeriod:
    """What the wallet's owner owed the platform at `until`, and which movements before then
    recorded or recovered it: two indexed queries per wallet."""
    created = dict(wallet.receivables.filter(created_at__lt=until).values_list("transaction_id", "amount").order_by())
    repaid = dict(
        ReceivableRecovery.objects.filter(receivable__wallet=wallet, created_at__lt=until)
        .values("transaction_id")
        .annotate(total=Sum("amount"))
        .values_list("transaction_id", "total")
        .order_by()
    )
    return OwedInPeriod(
        at_end=sum(created.values(), Decimal(0)) - sum(repaid.values(), Decimal(0)),
        created_by=created,
        repaid_by=repaid,
    )


@dataclass
class HostTransaction:
    """One line of a host's statement, on a page of its own."""

    txn: WalletTransaction
    gross: Decimal | None  # what the guest paid (payouts) or is refunded (refunds)
    commission: Decimal | None  # the commission kept (payouts) or returned (refunds, negative)
    withdrawal: Withdrawal | None
    reversal: WalletTransaction | None

    @property
    def booking(self) -> Booking | None:
        return self.txn.booking

    @property
    def commission_amount(self) -> Decimal | None:
        """The commission as a positive amount: kept (payouts) or given back (refunds)."""
        return None if self.commission is None else abs(self.commission)

    @property
    def guest_name(self) -> str:
        guest = self.txn.booking.guest if self.txn.booking else None
        return (guest.first_name or guest.username) if guest else ""


def host_transaction(user, reference: str) -> HostTransaction | None:
    """The transaction `reference` of one of `user`'s own wallets, or None (someone else's, or none)."""
    if not is_reference(reference):
        return None
    txn = (
        WalletTransaction.objects.select_related(
            "wallet", "reverses", "booking__rental_property", "booking__guest", "withdrawal__bank_account"
        )
        .filter(reference=reference, wallet__user=user)
        .first()
    )
    if txn is None:
        return None
    gross = commission = None
    if txn.type == Type.BOOKING_PAYMENT and txn.booking_id:
        gross, commission = txn.booking.grand_total, txn.booking.commission_fee
    elif txn.type == Type.REFUND:
        gross = Decimal(txn.metadata.get("refund_amount") or txn.amount)
        commission = -Decimal(txn.metadata.get("commission_clawback") or 0)
    return HostTransaction(
        txn=txn,
        gross=gross,
        commission=commission,
        withdrawal=_one_to_one(txn, "withdrawal"),
        reversal=txn.reversals.first(),
    )
