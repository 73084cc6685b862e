"""The posting core: writes one balanced journal movement, and the ledger's other SQL.

Postings (`post_movement`, `settle_pending`) come from `finance.services`, which has
locked the payment, withdrawal or original transaction involved and validated everything
but the wallet; bookings are not locked, only updated as part of a posting (its Followup).
The wallet is checked and changed by one conditional UPDATE — active, and available
(balance − held) not negative afterwards unless the movement is a refund or does not lower
it — which also takes its row lock. A wallet that goes negative records the negative part as
a HostReceivable in the same posting, and later movements recover it (migration 0019). When the UPDATE
matches nothing, a second look at the wallet says why (not found, not active, or the
exact shortfall) and the operation is refused with nothing written; a guarded posting
raises GuardFailed instead. `audit` writes an audit row for actions that move no money
(finance.services and finance.payments call it).

On PostgreSQL the whole movement — wallet update, transaction header, journal legs,
audit row and what its kind changes elsewhere (the Followup) — is one call of a PL/pgSQL
function, one per kind of movement (migration 0005): one plain statement and one round trip
per movement, which is what lets the ledger keep up with the database. The functions'
statements are planned once per server session, which also holds behind PgBouncer in
transaction mode, where prepared statements would not. Elsewhere (SQLite, the embedded dev
default) the same steps run one after another; the two paths share the validation and
produce identical rows, and finance/tests/test_services.py runs every test through both.

The booking payout's own statements (`payout_guard`, `lock_payment_for_payout`) close
the module.
"""

import functools
import json
from dataclasses import dataclass, field
from decimal import Decimal

from django.core.serializers.json import DjangoJSONEncoder
from django.db import DEFAULT_DB_ALIAS, connection
from django.db.models import F
from django.utils import timezone

from . import db
from .errors import InsufficientBalanceError, NotFoundError, WalletNotActiveError
from .models import (
    Booking,
    HostReceivable,
    LedgerAudit,
    LedgerEntry,
    Payment,
    ReceivableRecovery,
    Wallet,
    WalletTransaction,
    Withdrawal,
    new_transaction_reference,
)
from .money import format_money

Status = WalletTransaction.Status

# Tests flip this to run the step-by-step path on PostgreSQL too.
SINGLE_STATEMENT_ON_POSTGRESQL = True


class NewTransaction:
    """Stands for the id of the transaction being posted, in a Followup's `updates`."""


NEW_TRANSACTION = NewTransaction()


class GuardFailed(Exception):
    """An optimistic, guarded posting found its guard false: it wrote nothing."""


@dataclass
class Guard:
    """The optimistic payout's conditions (`payout_guard`), checked inside its posting.

    `args` are finance_post_payout_guarded's arguments after the core ones: the payment's
    id and what the caller read of the payment and booking. When they all hold (under the
    payment's row lock), the wallet posted to is the host's wallet in the booking's
    currency; otherwise the posting writes nothing and GuardFailed is raised.
    """

    args: list


@dataclass(frozen=True)
class Followup:
    """What a kind of movement changes besides the wallet and the journal, for both paths.

    On PostgreSQL the movement is posted by `function` (migration 0005), which makes those
    changes itself, given `args` after the core arguments. The step-by-step path applies
    `updates`, the same changes spelled out: (model, pk, {field: value}) or
    (model, pk, {field: value}, {field: required value}). The builders below keep the two
    side by side, one per kind.
    """

    function: str = "finance_post_movement"
    args: list = field(default_factory=list)
    updates: list = field(default_factory=list)


PLAIN = Followup()


def reversal_followup(original_id: int, now) -> Followup:
    """A reversal marks the transaction it compensates as reversed."""
    return Followup(
        "finance_post_reversal",
        [original_id],
        [(WalletTransaction, original_id, {"status": Status.REVERSED, "updated_at": now})],
    )


def refund_followup(payment: Payment, *, refunded: Decimal, commission_refunded: Decimal, now) -> Followup:
    """A refund records itself on the payment; the one that refunds everything marks the booking refunded."""
    fully = refunded == payment.amount
    payment_status = Payment.Status.REFUNDED if fully else Payment.Status.PARTIALLY_REFUNDED
    booking_status = Booking.Status.REFUNDED if fully else None
    values = {
        "refunded_amount": refunded,
        "commission_refunded": commission_refunded,
        "status": payment_status,
        "updated_at": now,
    }
    updates = [(Payment, payment.pk, values)]
    if booking_status:
        updates.append((Booking, payment.booking_id, {"status": booking_status}))
    return Followup(
        "finance_post_refund", [payment.pk, refunded, commission_refunded, payment_status, booking_status], updates
    )


def withdrawal_followup(withdrawal: Withdrawal) -> Followup:
    """Completing or failing a withdrawal records its outcome on it."""
    values = {
        "status": withdrawal.status,
        "failure_reason": withdrawal.failure_reason,
        "processed_by": withdrawal.processed_by,
        "processed_at": withdrawal.processed_at,
    }
    args = [
        withdrawal.pk,
        withdrawal.status,
        withdrawal.failure_reason,
        withdrawal.processed_by_id,
        withdrawal.processed_at,
    ]
    return Followup("finance_settle_withdrawal", args, [(Withdrawal, withdrawal.pk, values)])


def payout_followup(payment_id: int, booking_id: int, now) -> Followup:
    """A payout applies the payment and confirms the booking if it was pending."""
    payment_values = {"status": Payment.Status.SUCCESS, "ledger_transaction": NEW_TRANSACTION, "updated_at": now}
    return Followup(
        "finance_post_payout",
        [payment_id],
        [
            (Payment, payment_id, payment_values),
            (Booking, booking_id, {"status": Booking.Status.CONFIRMED}, {"status": Booking.Status.PENDING}),
        ],
    )


@dataclass
class Movement:
    """Everything one posting writes."""

    wallet_id: int
    balance_delta: Decimal = Decimal(0)
    held_delta: Decimal = Decimal(0)
    legs: list[tuple[str, Decimal]] = field(default_factory=list)  # (system account, signed amount)
    # The transaction header: a new one, or an existing pending one to settle.
    type: str = ""
    direction: str = ""
    amount: Decimal = Decimal(0)
    status: str = Status.COMPLETED
    description: str = ""
    metadata: dict = field(default_factory=dict)
    reverses_id: int | None = None
    booking_id: int | None = None
    settle: WalletTransaction | None = None
    # The audit row.
    action: str = ""
    actor_id: int | None = None
    reason: str = ""
    # What the kind of movement changes in other tables, in the same posting.
    followup: Followup = PLAIN
    guard: Guard | None = None

    def check_balanced(self) -> None:
        total = self.balance_delta + sum((amount for _, amount in self.legs), Decimal(0))
        if total != 0:
            raise AssertionError(f"Unbalanced movement: wallet {self.balance_delta}, legs {self.legs}")

    def entry_rows(self) -> list[tuple[str, Decimal]]:
        """(system account, signed amount) per journal leg, "" standing for the wallet's own
        leg; zero legs are skipped."""
        rows = [("", self.balance_delta)] if self.balance_delta else []
        return rows + [(account, amount) for account, amount in self.legs if amount]


def post_movement(
    *,
    wallet: Wallet,
    type: str,
    direction: str,
    amount: Decimal,
    legs: list[tuple[str, Decimal]],
    balance_delta: Decimal = Decimal(0),
    held_delta: Decimal = Decimal(0),
    status: str = Status.COMPLETED,
    description: str = "",
    metadata: dict | None = None,
    reverses: WalletTransaction | None = None,
    booking_id: int | None = None,
    actor=None,
    reason: str = "",
    followup: Followup = PLAIN,
    guard: Guard | None = None,
) -> WalletTransaction:
    """Record one new movement on `wallet`; return its transaction with `.wallet` current.

    With a `guard` (PostgreSQL's single-statement path only) the wallet is found by the
    guard instead, and GuardFailed means nothing was written.
    """
    movement = Movement(
        wallet_id=wallet.pk if wallet is not None else None,
        balance_delta=balance_delta,
        held_delta=held_delta,
        legs=legs,
        type=type,
        direction=direction,
        amount=amount,
        status=status,
        description=description[:255],
        metadata=metadata or {},
        reverses_id=reverses.pk if reverses else None,
        booking_id=booking_id,
        action=f"transaction.{type}",
        actor_id=_actor_id(actor),
        reason=reason,
        followup=followup,
        guard=guard,
    )
    return _post(movement)


def settle_pending(
    txn: WalletTransaction,
    *,
    status: str,
    legs: list[tuple[str, Decimal]],
    balance_delta: Decimal = Decimal(0),
    held_delta: Decimal = Decimal(0),
    actor=None,
    reason: str = "",
    followup: Followup = PLAIN,
) -> WalletTransaction:
    """Resolve a pending transaction (a withdrawal): post its legs and set its final status."""
    movement = Movement(
        wallet_id=txn.wallet_id,
        balance_delta=balance_delta,
        held_delta=held_delta,
        legs=legs,
        amount=txn.amount,
        status=status,
        metadata={**txn.metadata, "reason": reason} if reason else txn.metadata,
        settle=txn,
        action=f"transaction.{txn.type}.{status}",
        actor_id=_actor_id(actor),
        reason=reason,
        followup=followup,
    )
    return _post(movement)


def audit(
    *, action: str, actor=None, wallet=None, transaction=None, amount=None, currency="", reason="", metadata=None
) -> LedgerAudit:
    """An audit row for an action that moves no money (creating a wallet, a webhook outcome)."""
    return LedgerAudit.objects.create(
        action=action,
        actor_id=_actor_id(actor),
        wallet=wallet,
        transaction=transaction,
        amount=amount,
        currency=currency,
        reason=reason,
        metadata=metadata or {},
    )


def _actor_id(actor) -> int | None:
    return getattr(actor, "pk", None)


def posts_in_one_statement() -> bool:
    """Whether a posting is one SQL statement on this connection (PostgreSQL)."""
    return SINGLE_STATEMENT_ON_POSTGRESQL and _on_postgresql()


@functools.cache
def _on_postgresql() -> bool:
    # Asked several times per operation; reaching `connection` goes through a thread-local
    # lookup each time, and the default database's kind never changes in a process.
    return connection.vendor == "postgresql"


def _post(movement: Movement) -> WalletTransaction:
    movement.check_balanced()
    if posts_in_one_statement():
        return _post_in_one_statement(movement)
    if movement.guard is not None:
        raise AssertionError("Guarded postings need PostgreSQL's single-statement path.")
    return _post_step_by_step(movement)


# --- refusals ---------------------------------------------------------------------------


def _refuse(movement: Movement):
    """The conditional wallet UPDATE matched nothing: raise the error that says why."""
    wallet = Wallet.objects.filter(pk=movement.wallet_id).first()
    if wallet is None:
        raise NotFoundError("Wallet not found.")
    if not wallet.is_active:
        raise WalletNotActiveError(f"Wallet is {wallet.status}.", wallet=wallet.pk)
    needed = movement.held_delta - movement.balance_delta
    shortfall = needed - wallet.available_balance
    currency = wallet.currency
    raise InsufficientBalanceError(
        f"Insufficient balance: available {format_money(wallet.available_balance, currency)}, "
        f"needed {format_money(needed, currency)} (short by {format_money(shortfall, currency)}).",
        available=str(wallet.available_balance),
        shortfall=str(shortfall),
    )


# --- the wallet UPDATE every posting starts with -------------------------------------------

# Available (balance − held) may not go below zero, except that a refund may take it there
# (the host's share of a refund after they withdrew the payout), and a movement that does not
# lower it (a payout, a credit, a released or settled hold) passes while the wallet stays
# negative. Held never goes below zero.
WALLET_UPDATE = """
    UPDATE finance_wallet
       SET balance = balance + %s, held_balance = held_balance + %s, updated_at = %s
     WHERE id = %s AND status = 'active' AND held_balance + %s >= 0
       AND (balance + %s >= held_balance + %s OR %s OR %s)
    RETURNING id, user_id, currency, balance, held_balance"""


def _wallet_update_params(movement: Movement, now) -> list:
    bd, hd = movement.balance_delta, movement.held_delta
    may_go_negative = movement.type == WalletTransaction.Type.REFUND
    return [bd, hd, now, movement.wallet_id, hd, bd, hd, bd - hd >= 0, may_go_negative]


# --- the step-by-step path (any database) ------------------------------------------------


def _post_step_by_step(movement: Movement) -> WalletTransaction:
    now = timezone.now()
    row = db.fetch_one(WALLET_UPDATE, _wallet_update_params(movement, now))
    if row is None:
        _refuse(movement)
    wallet = _wallet_from_row(row, now)
    if movement.settle is None:
        txn = WalletTransaction.objects.create(
            **_header_fields(movement), wallet=wallet, currency=wallet.currency, balance_after=wallet.balance
        )
    else:
        txn = movement.settle
        txn.status, txn.balance_after, txn.metadata = movement.status, wallet.balance, movement.metadata
        txn.save(update_fields=["status", "balance_after", "metadata", "updated_at"])
    LedgerEntry.objects.bulk_create(
        LedgerEntry(
            transaction=txn,
            wallet_id=None if account else wallet.pk,
            system_account=account,
            currency=wallet.currency,
            amount=amount,
        )
        for account, amount in movement.entry_rows()
    )
    LedgerAudit.objects.create(**_audit_fields(movement, wallet, txn.pk))
    _keep_receivables(movement, wallet, txn.pk, now)
    for model, pk, values, *only_if in movement.followup.updates:
        rows = model.objects.filter(pk=pk, **(only_if[0] if only_if else {}))
        rows.update(**{k: txn.pk if v is NEW_TRANSACTION else v for k, v in values.items()})
    txn.wallet = wallet
    return txn


def _keep_receivables(movement: Movement, wallet: Wallet, txn_id: int, now) -> None:
    """Keep the wallet's receivables in step with its debt (what it is negative by), as
    migration 0019's finance_post_movement does: a debt that grew is a new receivable on this
    transaction; one that shrank is recovered from the open receivables, oldest first. The
    wallet UPDATE's row lock serialises this per wallet. No query unless the wallet is or was
    negative."""
    debt_after = max(Decimal(0), wallet.held_balance - wallet.balance)
    held_before = wallet.held_balance - movement.held_delta
    debt_before = max(Decimal(0), held_before - (wallet.balance - movement.balance_delta))
    if debt_after > debt_before:
        HostReceivable.objects.create(
            wallet_id=wallet.pk,
            transaction_id=txn_id,
            currency=wallet.currency,
            amount=debt_after - debt_before,
            created_at=now,
        )
    elif debt_after < debt_before:
        _recover(wallet.pk, debt_before - debt_after, txn_id, now)


def _recover(wallet_id: int, amount: Decimal, txn_id: int, now) -> None:
    """Recover `amount` from the wallet's open receivables, oldest first."""
    open_receivables = HostReceivable.objects.filter(wallet_id=wallet_id, recovered__lt=F("amount")).order_by("id")
    for receivable in open_receivables:
        if amount <= 0:
            break
        taken = min(amount, receivable.outstanding)
        receivable.recovered += taken
        receivable.recovered_at = now if receivable.recovered == receivable.amount else None
        receivable.save(update_fields=["recovered", "recovered_at"])
        ReceivableRecovery.objects.create(receivable=receivable, transaction_id=txn_id, amount=taken, created_at=now)
        amount -= taken


def _wallet_from_row(row, now) -> Wallet:
    """The wallet as the UPDATE left it (which matches active wallets only)."""
    wallet_id, user_id, currency, balance, held = row
    return _loaded(
        Wallet,
        id=wallet_id,
        user_id=user_id,
        currency=currency,
        status=Wallet.Status.ACTIVE,
        balance=db.money(balance),
        held_balance=db.money(held),
        updated_at=now,
    )


def _loaded(model, **values):
    """A model instance for a row the ledger's SQL wrote, as if read from the database.

    Model.from_db with every column given takes the ORM's positional constructor, about
    twice as fast as keyword arguments: it matters, every posting builds two instances.
    Columns not given (a wallet's created_at) are None, as they were with keywords.
    """
    names = _column_names(model)
    return model.from_db(DEFAULT_DB_ALIAS, names, [values.get(name) for name in names])


@functools.cache
def _column_names(model) -> list[str]:
    return [f.attname for f in model._meta.concrete_fields]


def _header_fields(movement: Movement) -> dict:
    """A new transaction's fields, but for those that come from the updated wallet."""
    return {
        "reference": new_transaction_reference(),
        "type": movement.type,
        "status": movement.status,
        "direction": movement.direction,
        "amount": movement.amount,
        "reverses_id": movement.reverses_id,
        "booking_id": movement.booking_id,
        "description": movement.description,
        "metadata": movement.metadata,
    }


def _audit_fields(movement: Movement, wallet: Wallet, txn_id: int) -> dict:
    return {
        "action": movement.action,
        "actor_id": movement.actor_id,
        "wallet_id": wallet.pk,
        "transaction_id": txn_id,
        "amount": movement.amount,
        "currency": wallet.currency,
        "reason": movement.reason,
        "balance_before": wallet.balance - movement.balance_delta,
        "balance_after": wallet.balance,
        "held_before": wallet.held_balance - movement.held_delta,
        "held_after": wallet.held_balance,
        "metadata": {},
    }


# --- the single-statement path (PostgreSQL) ------------------------------------------------


def _post_in_one_statement(movement: Movement) -> WalletTransaction:
    now = timezone.now()
    reference = new_transaction_reference() if movement.settle is None else None
    function, extra_args = _function_call(movement)
    row = db.call(function, _core_args(movement, reference, now) + extra_args)
    if row[0] is None:  # the function wrote nothing
        if movement.guard is not None:
            raise GuardFailed()
        _refuse(movement)
    txn_id, *wallet_row = row
    wallet = _wallet_from_row(wallet_row, now)
    if movement.settle is None:
        txn = _loaded(
            WalletTransaction,
            id=txn_id,
            reference=reference,
            wallet_id=wallet.pk,
            type=movement.type,
            status=movement.status,
            direction=movement.direction,
            amount=movement.amount,
            currency=wallet.currency,
            balance_after=wallet.balance,
            reverses_id=movement.reverses_id,
            booking_id=movement.booking_id,
            description=movement.description,
            metadata=movement.metadata,
            created_at=now,
            updated_at=now,
        )
    else:
        txn = movement.settle
        txn.status, txn.balance_after, txn.metadata, txn.updated_at = (
            movement.status,
            wallet.balance,
            movement.metadata,
            now,
        )
    txn.wallet = wallet
    return txn


def _function_call(movement: Movement) -> tuple[str, list]:
    """The posting function for this movement (migration 0005) and its arguments after the core ones."""
    if movement.guard is not None:
        return "finance_post_payout_guarded", movement.guard.args
    return movement.followup.function, movement.followup.args


def _core_args(movement: Movement, reference: str | None, now) -> list:
    """The arguments every posting function takes first, in the order of migration 0005's CORE_PARAMS."""
    entries = movement.entry_rows()
    return [
        movement.wallet_id,
        movement.balance_delta,
        movement.held_delta,
        [account for account, _ in entries],
        [amount for _, amount in entries],
        movement.settle.pk if movement.settle is not None else None,
        reference,
        movement.type,
        movement.status,
        movement.direction,
        movement.amount,
        movement.reverses_id,
        movement.booking_id,
        movement.description,
        _json(movement.metadata),
        movement.action,
        movement.actor_id,
        movement.reason,
        now,
    ]


def _json(metadata: dict) -> str:
    # Most postings carry no metadata: skip the encoder for them.
    return json.dumps(metadata, cls=DjangoJSONEncoder) if metadata else "{}"


# --- booking payouts: the statements behind process_booking_payment ----------------------


def payout_guard(booking: Booking, payment: Payment) -> Guard:
    """The payout's checks as a Guard, on the caller's view of the booking and payment.

    It holds (and locks the payment) when the payment is this booking's, not yet applied,
    pending or successful, for the booking's grand total in its currency, and the booking
    still has the total, commission and currency the caller read. The posting then goes to
    the host's wallet in that currency. (finance_post_payout_guarded checks it; the booking
    is the posting's `booking_id`.)
    """
    return Guard(
        [
            payment.pk,
            payment.reference,
            payment.provider,
            booking.grand_total,
            booking.currency,
            booking.grand_total,
            booking.commission_fee,
            booking.currency,
        ]
    )


# One statement locks the payment and reads what a payout needs, the host's wallet
# included: booking payments are the hottest path, and the ORM would take three queries.
PAYMENT_FOR_PAYOUT = """
    SELECT p.reference, p.booking_id, p.provider, p.amount, p.currency, p.status, p.ledger_transaction_id,
           b.grand_total, b.commission_fee, b.currency, b.status, pr.host_id,
           (SELECT w.id FROM finance_wallet w WHERE w.user_id = pr.host_id AND w.currency = b.currency)
      FROM finance_payment p
      JOIN finance_booking b ON b.id = p.booking_id
      JOIN finance_property pr ON pr.id = b.rental_property_id
     WHERE p.id = %s"""


def lock_payment_for_payout(payment_id: int) -> Payment:
    """Lock the payment and read it with its booking, host and host wallet id.

    Returns an unsaved Payment with `.booking` set (total, commission, currency, status),
    plus `.host_id` and `.host_wallet_id` (None while the host has no wallet in the
    booking's currency). PostgreSQL locks the payment row (FOR UPDATE OF p); SQLite has no
    row locks, its writers take the whole database in turn.
    """
    lock = " FOR UPDATE OF p" if connection.vendor == "postgresql" else ""
    row = db.fetch_one(PAYMENT_FOR_PAYOUT + lock, [payment_id])
    if row is None:
        raise NotFoundError("Payment not found.")
    reference, booking_id, provider, amount, currency, status, ledger_txn_id, *booking_row = row
    grand_total, commission_fee, booking_currency, booking_status, host_id, host_wallet_id = booking_row
    amount, grand_total, commission_fee = db.money(amount), db.money(grand_total), db.money(commission_fee)
    booking = Booking(
        pk=booking_id,
        grand_total=grand_total,
        commission_fee=commission_fee,
        currency=booking_currency,
        status=booking_status,
    )
    payment = Payment(
        pk=payment_id,
        reference=reference,
        booking=booking,
        provider=provider,
        amount=amount,
        currency=currency,
        status=status,
        ledger_transaction_id=ledger_txn_id,
    )
    payment.host_id, payment.host_wallet_id = host_id, host_wallet_id
    return payment
