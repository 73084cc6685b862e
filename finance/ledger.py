"""The posting core: writes one balanced journal movement, and the ledger's other SQL.

Postings (`post_movement`, `settle_pending`) come from `finance.services`, which has
locked the payment, withdrawal or original transaction involved and validated everything
but the wallet; bookings are not locked, only updated as a posting's related updates.
The wallet is checked and changed by one conditional UPDATE — active, and available
(balance − held) not negative afterwards — which also takes its row lock. When the UPDATE
matches nothing, a second look at the wallet says why (not found, not active, or the
exact shortfall) and the operation is refused with nothing written; a guarded posting
raises GuardFailed instead. `audit` writes an audit row for actions that move no money
(finance.services and finance.payments call it).

On PostgreSQL the whole movement — wallet update, transaction header, journal legs,
audit row and the caller's related updates — is a single statement (a chain of
data-modifying CTEs): one round trip per movement, which is what lets the ledger keep up
with the database. Elsewhere (SQLite, the embedded dev default) the same steps run one
after another; the two paths share the validation and produce identical rows, and
finance/tests/test_services.py runs every test through both.

The booking payout's own statements (`payout_guard`, `lock_payment_for_payout`) close
the module.
"""

import functools
import json
from dataclasses import dataclass, field
from decimal import Decimal

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models
from django.utils import timezone

from . import db
from .errors import InsufficientBalanceError, NotFoundError, WalletNotActiveError
from .models import Booking, LedgerAudit, LedgerEntry, Payment, Wallet, WalletTransaction, new_transaction_reference
from .money import format_money

Status = WalletTransaction.Status

# Tests flip this to run the step-by-step path on PostgreSQL too.
SINGLE_STATEMENT_ON_POSTGRESQL = True


class NewTransaction:
    """Stands for the id of the transaction being posted, in `related_updates`."""


NEW_TRANSACTION = NewTransaction()


class GuardFailed(Exception):
    """An optimistic, guarded posting found its guard false: it wrote nothing."""


@dataclass
class Guard:
    """Conditions a single-statement posting must find true, checked in the statement.

    `sql` is a SELECT (it may lock, with FOR UPDATE) returning one row with an `owner_id`
    column when everything holds; the wallet posted to is then `owner_id`'s wallet in
    `currency`. No row means the posting writes nothing and GuardFailed is raised.
    """

    sql: str
    params: list
    currency: str


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
    # Rows of other tables to update in the same statement:
    # (model, pk, {field: value}) or (model, pk, {field: value}, {field: required value}).
    related_updates: list = field(default_factory=list)
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
    related_updates=(),
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
        related_updates=list(related_updates),
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
    related_updates=(),
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
        related_updates=list(related_updates),
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
    return connection.vendor == "postgresql" and SINGLE_STATEMENT_ON_POSTGRESQL


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

WALLET_UPDATE = """
    UPDATE finance_wallet
       SET balance = balance + %s, held_balance = held_balance + %s, updated_at = %s
     WHERE id = %s AND status = 'active'
       AND balance + %s >= held_balance + %s AND held_balance + %s >= 0
    RETURNING id, user_id, currency, balance, held_balance"""


# The single statement's form after a guard (the CTE `g`): the wallet is the guard's owner's.
GUARDED_WALLET_UPDATE = """
    UPDATE finance_wallet
       SET balance = balance + %s, held_balance = held_balance + %s, updated_at = %s
     WHERE user_id = (SELECT owner_id FROM g) AND currency = %s AND status = 'active'
       AND balance + %s >= held_balance + %s AND held_balance + %s >= 0
    RETURNING id, user_id, currency, balance, held_balance"""


def _wallet_update_params(movement: Movement, now) -> list:
    bd, hd = movement.balance_delta, movement.held_delta
    return [bd, hd, now, movement.wallet_id, bd, hd, hd]


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
    for model, pk, values, *only_if in movement.related_updates:
        rows = model.objects.filter(pk=pk, **(only_if[0] if only_if else {}))
        rows.update(**{k: txn.pk if v is NEW_TRANSACTION else v for k, v in values.items()})
    txn.wallet = wallet
    return txn


def _wallet_from_row(row, now) -> Wallet:
    """The wallet as the UPDATE left it (which matches active wallets only)."""
    wallet_id, user_id, currency, balance, held = row
    balance, held = db.money(balance), db.money(held)
    wallet = Wallet(
        pk=wallet_id,
        user_id=user_id,
        currency=currency,
        status=Wallet.Status.ACTIVE,
        balance=balance,
        held_balance=held,
        updated_at=now,
    )
    wallet._state.adding = False
    return wallet


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
    sql, params, header = _build_statement(movement, now)
    row = db.fetch_one(sql, params)
    if row is None:
        if movement.guard is not None:
            raise GuardFailed()
        _refuse(movement)
    txn_id, *wallet_row = row
    wallet = _wallet_from_row(wallet_row, now)
    if movement.settle is None:
        txn = WalletTransaction(
            pk=txn_id,
            wallet=wallet,
            currency=wallet.currency,
            balance_after=wallet.balance,
            created_at=now,
            updated_at=now,
            **header,
        )
        txn._state.adding = False
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


def _build_statement(movement: Movement, now) -> tuple[str, list, dict]:
    params: list = []
    parts = []
    if movement.guard is None:
        parts.append("w AS (" + WALLET_UPDATE + ")")
        params += _wallet_update_params(movement, now)
    else:
        parts.append("g AS (" + movement.guard.sql + ")")
        params += movement.guard.params
        parts.append("w AS (" + GUARDED_WALLET_UPDATE + ")")
        bd, hd = movement.balance_delta, movement.held_delta
        params += [bd, hd, now, movement.guard.currency, bd, hd, hd]
    metadata = json.dumps(movement.metadata, cls=DjangoJSONEncoder)
    header: dict = {}
    if movement.settle is None:
        header = _header_fields(movement)
        parts.append(
            """t AS (
            INSERT INTO finance_wallettransaction (reference, wallet_id, type, status, direction, amount, currency,
                balance_after, reverses_id, booking_id, description, metadata, created_at, updated_at)
            SELECT %s, w.id, %s, %s, %s, %s, w.currency, w.balance, %s, %s, %s, %s::jsonb, %s, %s FROM w
            RETURNING id)"""
        )
        params += [
            header["reference"],
            movement.type,
            movement.status,
            movement.direction,
            movement.amount,
            movement.reverses_id,
            movement.booking_id,
            movement.description,
            metadata,
            now,
            now,
        ]
    else:
        parts.append(
            """t AS (
            UPDATE finance_wallettransaction SET status = %s, balance_after = w.balance, metadata = %s::jsonb,
                   updated_at = %s
              FROM w WHERE finance_wallettransaction.id = %s
            RETURNING finance_wallettransaction.id)"""
        )
        params += [movement.status, metadata, now, movement.settle.pk]
    entries = movement.entry_rows()
    if entries:
        values = ", ".join(["(%s, %s::numeric)"] * len(entries))
        parts.append(
            f"""e AS (
            INSERT INTO finance_ledgerentry (transaction_id, wallet_id, system_account, currency, amount, created_at)
            SELECT t.id, CASE WHEN x.account = '' THEN w.id END, x.account, w.currency, x.amount, %s
              FROM t, w, (VALUES {values}) AS x(account, amount))"""
        )
        params.append(now)
        for account, amount in entries:
            params += [account, amount]
    parts.append(
        """a AS (
        INSERT INTO finance_ledgeraudit (created_at, actor_id, action, wallet_id, transaction_id, amount, currency,
            reason, balance_before, balance_after, held_before, held_after, metadata)
        SELECT %s, %s, %s, w.id, t.id, %s, w.currency, %s, w.balance - %s, w.balance, w.held_balance - %s,
               w.held_balance, '{}'::jsonb
          FROM t, w)"""
    )
    params += [
        now,
        movement.actor_id,
        movement.action,
        movement.amount,
        movement.reason,
        movement.balance_delta,
        movement.held_delta,
    ]
    for n, (model, pk, values, *only_if) in enumerate(movement.related_updates):
        assignments, update_params = _assignments(model, values)
        conditions, condition_params = _assignments(model, only_if[0] if only_if else {}, separator=" AND ")
        parts.append(
            f"r{n} AS (UPDATE {_quoted_table(model)} SET {assignments} "
            f"WHERE id = %s AND EXISTS (SELECT 1 FROM t){' AND ' + conditions if conditions else ''})"
        )
        params += update_params + [pk] + condition_params
    sql = (
        "WITH " + ",\n".join(parts) + "\nSELECT t.id, w.id, w.user_id, w.currency, w.balance, w.held_balance FROM t, w"
    )
    return sql, params, header


def _assignments(model, values: dict, separator: str = ", ") -> tuple[str, list]:
    clauses, params = [], []
    for name, value in values.items():
        column = _quoted_column(model, name)
        if value is NEW_TRANSACTION:
            clauses.append(f"{column} = (SELECT id FROM t)")
        else:
            clauses.append(f"{column} = %s")
            params.append(value.pk if isinstance(value, models.Model) else value)
    return separator.join(clauses), params


@functools.cache
def _quoted_column(model, name: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(name).column)


@functools.cache
def _quoted_table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


# --- booking payouts: the statements behind process_booking_payment ----------------------

PAYOUT_GUARD = """
    SELECT pr.host_id AS owner_id
      FROM finance_payment p
      JOIN finance_booking b ON b.id = p.booking_id
      JOIN finance_property pr ON pr.id = b.rental_property_id
     WHERE p.id = %s AND p.booking_id = %s AND p.reference = %s AND p.provider = %s
       AND p.ledger_transaction_id IS NULL AND p.status IN ('pending', 'success')
       AND p.amount = %s AND p.currency = %s
       AND b.grand_total = %s AND b.commission_fee = %s AND b.currency = %s
       FOR UPDATE OF p"""


def payout_guard(booking: Booking, payment: Payment) -> Guard:
    """The payout's checks as a Guard, on the caller's view of the booking and payment.

    It holds (and locks the payment) when the payment is this booking's, not yet applied,
    pending or successful, for the booking's grand total in its currency, and the booking
    still has the total, commission and currency the caller read. The posting then goes to
    the host's wallet in that currency.
    """
    params = [payment.pk, booking.pk, payment.reference, payment.provider, booking.grand_total, booking.currency]
    params += [booking.grand_total, booking.commission_fee, booking.currency]
    return Guard(PAYOUT_GUARD, params, booking.currency)


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
