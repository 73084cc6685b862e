"""TransactionService: every write that moves money.

Each money operation is one database transaction that
  1. claims its idempotency key, if given (`finance.idempotency`: a replay returns the
     first result and moves nothing),
  2. locks the rows it changes in one fixed order — payment, withdrawal, original
     transaction, then the wallet, and last the booking, which is never locked
     beforehand and only updated while its payment is locked — so concurrent operations
     never deadlock,
  3. validates against the locked rows (a refusal raises a TransactionError subclass
     and rolls back, so nothing is written),
  4. posts one journal movement (`ledger.post_movement` or `ledger.settle_pending`): the
     wallet is checked (active, available never negative) and updated by the same
     conditional UPDATE that locks it, then the journal legs and the audit record are
     written.

An operation handed a wallet object (credit_wallet, debit_wallet, initiate_withdrawal,
or complete/fail_withdrawal through `withdrawal.wallet`) copies the new balance, held
balance, status and updated_at onto that object, so `wallet.balance` is current without
a `refresh_from_db()`; each says so in its docstring. reverse_transaction, handed only
a reference, updates the wallet object behind a reference those operations handed back
(HandedReference).

The callers are trusted code: webhooks, jobs and `finance.staff_actions`, which checks the
staff member's permission and four-eyes before calling here. `actor`, when given, is only
recorded in the audit trail.
"""

import contextvars
import functools
import inspect
import weakref
from decimal import Decimal
from typing import NamedTuple

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import idempotency, ledger
from .errors import (
    AlreadyReversedError,
    BelowMinimumWithdrawalError,
    CurrencyMismatchError,
    IdempotencyConflictError,
    InsufficientBalanceError,
    InvalidAmountError,
    InvalidStateError,
    NotFoundError,
    PermissionDeniedError,
    RefundExceedsPaymentError,
    TransactionError,
    UnsupportedCurrencyError,
    WalletNotActiveError,
    require_reason,
)
from .metrics import ERROR, OK, record_operation
from .models import (
    BankAccount,
    Booking,
    Payment,
    ProviderRefund,
    SystemAccount,
    Wallet,
    WalletTransaction,
    Withdrawal,
)
from .money import currency_decimals, format_money, parse_amount, round_money

__all__ = [
    "TransactionService",
    "TransactionError",
    "InsufficientBalanceError",
    "WalletNotActiveError",
    "CurrencyMismatchError",
    "InvalidAmountError",
    "UnsupportedCurrencyError",
    "AlreadyReversedError",
    "InvalidStateError",
    "BelowMinimumWithdrawalError",
    "RefundExceedsPaymentError",
    "IdempotencyConflictError",
    "NotFoundError",
    "PermissionDeniedError",
]

Type = WalletTransaction.Type
Status = WalletTransaction.Status
Direction = WalletTransaction.Direction
# A refund the reversal calls off: not yet at the provider, or refused by it.
CANCELLABLE_REFUNDS = (ProviderRefund.Status.QUEUED, ProviderRefund.Status.FAILED)


# --- the operation wrapper ---------------------------------------------------------------

# The operation running in this thread (or task), if any: an operation that calls another
# (a payout creating the host's wallet, a keyed payout calling itself without the key) is
# one operation to the metrics and the log, counted once by the outermost call.
_running_operation: contextvars.ContextVar[str | None] = contextvars.ContextVar("running_operation", default=None)


# Every operation _money_operation wraps, by name: their counters start at 0 (finance/apps.py).
MONEY_OPERATIONS: list[str] = []


def _money_operation(name: str, *, single_statement: bool = False, atomic: bool = True):
    """Run an operation in one database transaction, then count and log its outcome.

    Counted in ledger_operations_total{operation=name} and logged on the "finance" logger
    (finance.metrics.record_operation): "ok" on success, the refusal's stable code on refused
    input (a TransactionError), "error" on anything unexpected; in every failing case the
    transaction has rolled back and nothing is written. The outcome is counted once the
    operation's own transaction has committed or rolled back; inside a caller's transaction
    (a webhook, a staff action) it is counted when the operation returns, so a success that
    the caller's transaction later rolls back still counts as "ok".

    `single_statement` marks operations that, on PostgreSQL and without an idempotency
    key to claim, normally write with one SQL statement (`ledger.posts_in_one_statement`).
    A statement is atomic on its own, so they skip BEGIN and COMMIT: one round trip
    instead of three. Inside a caller's transaction they simply join it. Where such an
    operation needs more than that statement (process_booking_payment when its guarded
    statement fails), it opens its own transaction. `atomic=False`: the operation manages
    its own transaction (create_wallet).
    """

    MONEY_OPERATIONS.append(name)

    def decorate(func):
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            if _running_operation.get() is not None:
                return _run(func, args, kwargs, single_statement=single_statement, atomic=atomic)
            token = _running_operation.set(name)
            try:
                result = _run(func, args, kwargs, single_statement=single_statement, atomic=atomic)
            except TransactionError as error:
                record_operation(name, error.code, message=error.message, **_subject(signature, args, kwargs))
                raise
            except Exception:
                record_operation(name, ERROR, **_subject(signature, args, kwargs))
                raise
            finally:
                _running_operation.reset(token)
            record_operation(name, OK, **_described(result))
            return result

        return wrapper

    return decorate


def _run(func, args, kwargs, *, single_statement: bool, atomic: bool):
    one_statement = single_statement and ledger.posts_in_one_statement() and not kwargs.get("idempotency_key")
    if one_statement or not atomic:
        return func(*args, **kwargs)
    with transaction.atomic():
        return func(*args, **kwargs)


def _described(result) -> dict:
    """What the log says a successful operation produced: a transaction or withdrawal's
    reference, amount and currency; a wallet's id and currency."""
    if isinstance(result, Wallet):
        return {"reference": f"wallet {result.pk}", "currency": result.currency}
    return {
        "reference": str(getattr(result, "reference", "")),
        "amount": getattr(result, "amount", None),
        "currency": getattr(result, "currency", ""),
    }


def _subject(signature: inspect.Signature, args, kwargs) -> dict:
    """What a refused or failed call was about, from its arguments (the amount as given)."""
    try:
        given = signature.bind(*args, **kwargs).arguments
    except TypeError:  # called with the wrong arguments: the call itself says nothing more
        return {}
    thing = next((given[key] for key in ("withdrawal", "wallet", "booking") if given.get(key) is not None), None)
    reference = given.get("txn_reference") or getattr(thing, "reference", "")
    if not reference and thing is not None:
        reference = f"{type(thing).__name__.lower()} {thing.pk}"
    return {
        "reference": str(reference),
        "amount": given.get("amount"),
        "currency": getattr(thing, "currency", "") or given.get("currency") or "",
    }


# --- small shared checks ---------------------------------------------------------------


def _update_in_place(wallet: Wallet, fresh: Wallet) -> None:
    """Copy what a movement changes on a wallet from `fresh` onto the caller's `wallet`."""
    wallet.balance = fresh.balance
    wallet.held_balance = fresh.held_balance
    wallet.status = fresh.status
    wallet.updated_at = fresh.updated_at


def _update_withdrawal_wallet(withdrawal: Withdrawal, fresh: Wallet) -> None:
    """Bring the wallet object the caller's `withdrawal` carries, if any, up to date."""
    if Withdrawal.wallet.is_cached(withdrawal):
        _update_in_place(withdrawal.wallet, fresh)


def check_refundable(payment: Payment | None, amount: Decimal) -> None:
    """Refuse a refund of `amount` against the booking's settled `payment` (None: it has none).

    process_refund checks the locked row; the portal asks the same before it confirms."""
    if payment is None:
        raise InvalidStateError("This booking has no completed payment to refund.")
    if payment.ledger_transaction.status == Status.REVERSED:
        raise InvalidStateError("This booking's payment was reversed; there is nothing to refund.")
    refundable = payment.refundable_amount
    if amount > refundable:
        raise RefundExceedsPaymentError(
            f"At most {format_money(refundable, payment.currency)} can still be refunded.",
            refundable=str(refundable),
        )


def check_reversible(original: WalletTransaction, payment: Payment | None) -> None:
    """Refuse reversing `original` (`payment`: the booking payment's Payment, if it is one).

    reverse_transaction checks the locked rows; staff_actions.request_reversal asks the same
    when a reversal is filed, so a request that could never be carried out is refused then."""
    if original.type == Type.REVERSAL:
        raise InvalidStateError("A reversal cannot itself be reversed.")
    if original.status == Status.REVERSED:
        raise AlreadyReversedError(f"{original.reference} has already been reversed.")
    if original.status != Status.COMPLETED:
        raise InvalidStateError(f"Only completed transactions can be reversed; this one is {original.status}.")
    if original.type == Type.BOOKING_PAYMENT and payment and payment.refunded_amount:
        raise InvalidStateError("Refunds were issued against this payment: reverse those first.")
    if original.type == Type.REFUND:
        check_refund_not_sent(original)


def check_refund_not_sent(refund_txn: WalletTransaction) -> None:
    """Refuse reversing a refund the provider is paying or has paid: the guest has, or will have,
    the money, so taking it back from refunds payable would leave the ledger owing nobody."""
    status, sent_at = ProviderRefund.objects.filter(transaction_id=refund_txn.pk).values_list(
        "status", "sent_at"
    ).first() or (None, None)
    if status == ProviderRefund.Status.QUEUED and sent_at is not None:
        raise InvalidStateError(
            f"Refund {refund_txn.reference} is being sent to the provider: wait for its answer before reversing it."
        )
    if status == ProviderRefund.Status.PROCESSING:
        raise InvalidStateError(
            f"Refund {refund_txn.reference} is being paid to the guest by the provider: it cannot be reversed now."
        )
    if status == ProviderRefund.Status.SUCCEEDED:
        raise InvalidStateError(f"Refund {refund_txn.reference} has reached the guest: it cannot be reversed.")


class HandedReference(str):
    """A transaction's reference as credit_wallet, debit_wallet and initiate_withdrawal hand
    it back (`txn.reference`, `withdrawal.transaction.reference`).

    It is the plain string for every purpose (compares, hashes, stores alike), and it also
    remembers, weakly, the wallet object the caller handed in. reverse_transaction is given
    only a reference, yet its callers read `wallet.balance` on that same object right after
    the reversal; with this, the reversal updates it explicitly, and nothing keeps a
    registry of wallet objects.
    """

    def handed_wallet(self) -> Wallet | None:
        ref = getattr(self, "_wallet", None)
        return ref() if ref is not None else None


def _hand_back_reference(txn: WalletTransaction, wallet: Wallet) -> WalletTransaction:
    reference = HandedReference(txn.reference)
    reference._wallet = weakref.ref(wallet)
    txn.reference = reference
    return txn


def _update_handed_wallet(reference: str, fresh: Wallet) -> None:
    """Update the wallet object behind a HandedReference, if the caller passed one."""
    handed = reference.handed_wallet() if isinstance(reference, HandedReference) else None
    if handed is not None and handed.pk == fresh.pk:
        _update_in_place(handed, fresh)


class TransactionService:
    """Every operation that moves money: wallets, reversals, booking payments and refunds,
    withdrawals. All methods are static and atomic."""

    # --- wallets ---------------------------------------------------------------------

    @staticmethod
    @_money_operation("create_wallet", atomic=False)
    def create_wallet(user, currency: str | None = None, *, actor=None) -> Wallet:
        """Return the user's wallet in `currency` (DEFAULT_CURRENCY if omitted), creating it if needed."""
        currency = (currency or settings.DEFAULT_CURRENCY).upper()
        currency_decimals(currency)  # refuses unknown currencies
        try:
            with transaction.atomic():
                wallet, created = Wallet.objects.get_or_create(user=user, currency=currency)
                if created:
                    ledger.audit(action="wallet.create", actor=actor, wallet=wallet, currency=currency)
        except IntegrityError:  # a concurrent call created it first
            wallet = Wallet.objects.get(user=user, currency=currency)
        return wallet

    @staticmethod
    @_money_operation("credit_wallet", single_statement=True)
    def credit_wallet(
        wallet: Wallet,
        amount,
        *,
        description: str = "",
        source: str = SystemAccount.ADJUSTMENTS,
        metadata: dict | None = None,
        idempotency_key: str | None = None,
        actor=None,
    ) -> WalletTransaction:
        """Add money to a wallet, taken from a system account (manual adjustments by default).

        Updates `wallet` in place.
        """
        return _adjust(
            wallet,
            amount,
            credit=True,
            account=source,
            description=description,
            metadata=metadata,
            idempotency_key=idempotency_key,
            actor=actor,
        )

    @staticmethod
    @_money_operation("debit_wallet", single_statement=True)
    def debit_wallet(
        wallet: Wallet,
        amount,
        *,
        description: str = "",
        destination: str = SystemAccount.ADJUSTMENTS,
        metadata: dict | None = None,
        idempotency_key: str | None = None,
        actor=None,
    ) -> WalletTransaction:
        """Take money out of a wallet's available balance, into a system account.

        Updates `wallet` in place.
        """
        return _adjust(
            wallet,
            amount,
            credit=False,
            account=destination,
            description=description,
            metadata=metadata,
            idempotency_key=idempotency_key,
            actor=actor,
        )

    # --- reversals -------------------------------------------------------------------

    @staticmethod
    @_money_operation("reverse_transaction")
    def reverse_transaction(
        txn_reference: str, reason: str = "", *, idempotency_key: str | None = None, actor=None
    ) -> WalletTransaction:
        """Post compensating entries for a completed transaction and mark it reversed.

        When `txn_reference` is the `.reference` of a transaction credit_wallet, debit_wallet
        or initiate_withdrawal handed back, updates in place the wallet object handed to
        that call.
        """
        record, previous = idempotency.claim(idempotency_key, "reverse", {"reference": txn_reference, "reason": reason})
        if previous:
            _update_handed_wallet(txn_reference, previous.wallet)
            return previous
        original, payment = _lock_for_reversal(txn_reference)
        check_reversible(original, payment)
        entries = list(original.entries.all())
        balance_delta = -sum((e.amount for e in entries if e.wallet_id), Decimal(0))
        txn = ledger.post_movement(
            wallet=original.wallet,
            type=Type.REVERSAL,
            direction=Direction.IN if balance_delta >= 0 else Direction.OUT,
            amount=abs(balance_delta),
            balance_delta=balance_delta,
            legs=[(e.system_account, -e.amount) for e in entries if not e.wallet_id],
            description=f"Reversal of {original.reference}",
            metadata={"reason": reason, "reverses": original.reference},
            reverses=original,
            booking_id=original.booking_id,
            actor=actor,
            reason=reason,
            followup=ledger.reversal_followup(original.pk, timezone.now()),
        )
        if original.type == Type.REFUND:
            # A refund not yet paid to the guest (queued, failed) is called off with it.
            ProviderRefund.objects.filter(transaction_id=original.pk, status__in=CANCELLABLE_REFUNDS).update(
                status=ProviderRefund.Status.CANCELLED, updated_at=timezone.now()
            )
        if original.type == Type.REFUND and payment:
            _restore_refundable(payment, original)
        elif original.type == Type.BOOKING_PAYMENT:
            Booking.objects.filter(pk=original.booking_id).update(status=Booking.Status.CANCELLED)
        idempotency.remember(record, transaction=txn)
        _update_handed_wallet(txn_reference, txn.wallet)
        return txn

    # --- bookings --------------------------------------------------------------------

    @staticmethod
    @_money_operation("process_booking_payment", single_statement=True)
    def process_booking_payment(
        booking: Booking, payment: Payment, *, idempotency_key: str | None = None, actor=None
    ) -> WalletTransaction:
        """Pay the host grand_total − commission and platform revenue the commission.

        At most once per payment: a second call returns the first transaction. The
        payment row's lock serialises concurrent calls; platform revenue is a journal
        account with no row to lock, so payments for different bookings never wait on
        each other.

        On PostgreSQL the payout is first tried as one guarded statement
        (`ledger.payout_guard`) that checks, under the payment's lock, everything the
        careful path below checks. If anything differs (already applied, amounts changed,
        no host wallet yet...) it writes nothing, and the careful path decides what to do.
        """
        if idempotency_key:
            record, previous = idempotency.claim(
                idempotency_key, "payout", {"booking": booking.pk, "payment": payment.pk}
            )
            if previous:
                return previous
            txn = TransactionService.process_booking_payment(booking, payment, actor=actor)
            idempotency.remember(record, transaction=txn)
            return txn
        if ledger.posts_in_one_statement():
            try:
                return _post_payout(booking, payment, actor, guard=ledger.payout_guard(booking, payment))
            except ledger.GuardFailed:
                pass
        with transaction.atomic():
            payment = ledger.lock_payment_for_payout(payment.pk)
            if payment.ledger_transaction_id:
                return WalletTransaction.objects.select_related("wallet").get(pk=payment.ledger_transaction_id)
            if payment.booking_id != booking.pk:
                raise InvalidStateError("This payment belongs to another booking.")
            booking = payment.booking
            if payment.status not in (Payment.Status.PENDING, Payment.Status.SUCCESS):
                raise InvalidStateError(f"A {payment.status} payment cannot be applied.")
            if payment.currency != booking.currency:
                raise CurrencyMismatchError(f"Payment is in {payment.currency}, the booking in {booking.currency}.")
            if payment.amount != booking.grand_total:
                raise InvalidStateError(
                    f"Payment amount {payment.amount} differs from the booking total {booking.grand_total}."
                )
            return _post_payout(booking, payment, actor, wallet=_host_wallet(payment))

    @staticmethod
    @_money_operation("process_refund")
    def process_refund(
        booking: Booking, amount, reason: str, *, idempotency_key: str | None = None, actor=None
    ) -> WalletTransaction:
        """Refund the guest part or all of what they paid; commission is clawed back in proportion."""
        amount = parse_amount(amount, booking.currency)
        record, previous = idempotency.claim(
            idempotency_key, "refund", {"booking": booking.pk, "amount": amount, "reason": reason}
        )
        if previous:
            return previous
        payment = (
            Payment.objects.select_for_update(of=("self",))
            .select_related("booking", "ledger_transaction")
            .refundable_for(booking)
            .first()
        )
        if payment is not None:
            # Lock the payout transaction too, after the payment (the order reverse_transaction
            # uses), and read its status afresh: a reversal that committed while this waited for
            # the payment's lock must be seen, or the host would give the money back twice.
            payment.ledger_transaction = WalletTransaction.objects.select_for_update().get(
                pk=payment.ledger_transaction_id
            )
        check_refundable(payment, amount)
        booking = payment.booking
        split = refund_split(payment, amount)  # what the portal's confirmation showed
        commission_back = split.commission_back
        followup = ledger.refund_followup(
            payment,
            refunded=payment.refunded_amount + amount,
            commission_refunded=payment.commission_refunded + commission_back,
            now=timezone.now(),
        )
        txn = ledger.post_movement(
            wallet=payment.ledger_transaction.wallet,
            type=Type.REFUND,
            direction=Direction.OUT,
            amount=split.host_debit,
            balance_delta=-split.host_debit,
            legs=[
                (SystemAccount.PLATFORM_REVENUE, -commission_back),
                (SystemAccount.REFUNDS_PAYABLE, amount),
            ],
            description=f"Refund for booking #{booking.pk}",
            metadata={
                "refund_amount": str(amount),
                "commission_clawback": str(commission_back),
                "payment_reference": payment.reference,
                "reason": reason,
            },
            booking_id=booking.pk,
            actor=actor,
            reason=reason,
            followup=followup,
        )
        # The refund's journey at the provider starts in the same transaction (finance.refunds).
        from .refunds import open_provider_refund

        open_provider_refund(payment, txn)
        idempotency.remember(record, transaction=txn)
        return txn

    @staticmethod
    @_money_operation("settle_provider_refund")
    def settle_provider_refund(refund: ProviderRefund, *, note: str = "", actor=None) -> ProviderRefund:
        """The guest has the refund's money (the provider confirmed it, or staff paid it by hand):
        move its amount out of refunds payable and back out of provider clearing, on the refund's
        own transaction (no wallet changes), and mark the refund succeeded. Once: a refund that is
        not open is refused (finance.refunds calls this under the refund's row lock and decides
        what a repeat means)."""
        locked = (
            ProviderRefund.objects.select_for_update(of=("self",))
            .select_related("transaction")
            .filter(pk=refund.pk)
            .first()
        )
        if locked is None:
            raise NotFoundError("Refund not found.")
        if not locked.is_open:
            raise InvalidStateError(
                f"Refund {locked.refund_reference} is already {locked.get_status_display().lower()}."
            )
        if locked.transaction.status != Status.COMPLETED:
            raise InvalidStateError(
                f"Refund transaction {locked.transaction.reference} is {locked.transaction.status}."
            )
        ledger.post_legs(
            locked.transaction,
            legs=[(SystemAccount.REFUNDS_PAYABLE, -locked.amount), (SystemAccount.PROVIDER_CLEARING, locked.amount)],
            action="refund.settled",
            actor=actor,
            reason=note,
            metadata={
                "refund_reference": locked.refund_reference,
                "provider": locked.provider,
                "provider_refund_id": locked.provider_refund_id,
            },
        )
        locked.status = ProviderRefund.Status.SUCCEEDED
        locked.settled_at = timezone.now()
        locked.failure_reason = ""
        locked.last_error = ""
        locked.save(update_fields=["status", "settled_at", "failure_reason", "last_error", "updated_at"])
        return locked

    # --- withdrawals -----------------------------------------------------------------

    @staticmethod
    @_money_operation("initiate_withdrawal")
    def initiate_withdrawal(
        wallet: Wallet, bank_account: BankAccount, amount, *, idempotency_key: str | None = None, actor=None
    ) -> Withdrawal:
        """Hold `amount` of the wallet's available balance for a payout to the bank account.

        Updates `wallet` in place, and the withdrawal returned carries that same object
        as `.wallet`, so completing or failing it updates it again (and reversing its
        `.transaction.reference` once completed, see HandedReference).
        """
        amount = parse_amount(amount, wallet.currency)
        record, previous = idempotency.claim(
            idempotency_key, "withdraw", {"wallet": wallet.pk, "bank": bank_account.pk, "amount": amount}
        )
        if previous:
            _update_in_place(wallet, previous.wallet)
            previous.wallet = wallet
            _hand_back_reference(previous.transaction, wallet)
            return previous
        if bank_account.owner_id != wallet.user_id:
            raise NotFoundError("Bank account not found.", field="bank_account")
        if not bank_account.takes(wallet.currency):
            raise CurrencyMismatchError(
                f"The bank account takes {bank_account.currency}; the wallet holds {wallet.currency}.",
                field="bank_account",
            )
        minimum = settings.MINIMUM_WITHDRAWAL.get(wallet.currency)
        if minimum is not None and amount < minimum:
            raise BelowMinimumWithdrawalError(
                f"The minimum withdrawal is {format_money(minimum, wallet.currency)}.", minimum=str(minimum)
            )
        txn = ledger.post_movement(
            wallet=wallet,
            type=Type.WITHDRAWAL,
            direction=Direction.OUT,
            status=Status.PENDING,
            amount=amount,
            held_delta=amount,
            legs=[],
            description=f"Withdrawal to {bank_account}",
            actor=actor,
        )
        _update_in_place(wallet, txn.wallet)
        withdrawal = Withdrawal.objects.create(
            wallet=wallet,
            bank_account=bank_account,
            amount=amount,
            currency=wallet.currency,
            transaction=_hand_back_reference(txn, wallet),
        )
        idempotency.remember(record, withdrawal=withdrawal)
        return withdrawal

    @staticmethod
    @_money_operation("complete_withdrawal")
    def complete_withdrawal(withdrawal: Withdrawal, *, idempotency_key: str | None = None, actor=None) -> Withdrawal:
        """Settle the held funds to payouts in transit. Resolves the withdrawal once.

        Returns the withdrawal as now stored. Updates `withdrawal.wallet` in place when the
        `withdrawal` passed in carries its wallet object (`withdrawal` itself is not refreshed).
        """
        record, previous = idempotency.claim(idempotency_key, "complete", {"withdrawal": withdrawal.pk})
        if previous:
            _update_withdrawal_wallet(withdrawal, previous.wallet)
            return previous
        locked = _lock_open_withdrawal(withdrawal.pk)
        locked.status = Withdrawal.Status.COMPLETED
        resolved = _resolve_withdrawal(
            locked,
            actor,
            balance_delta=-locked.amount,
            legs=[(SystemAccount.PAYOUTS_IN_TRANSIT, locked.amount)],
        )
        idempotency.remember(record, withdrawal=resolved)
        _update_withdrawal_wallet(withdrawal, resolved.wallet)
        return resolved

    @staticmethod
    @_money_operation("fail_withdrawal")
    def fail_withdrawal(
        withdrawal: Withdrawal, reason: str, *, idempotency_key: str | None = None, actor=None
    ) -> Withdrawal:
        """Release the held funds back to available. Resolves the withdrawal once.

        Returns the withdrawal as now stored. Updates `withdrawal.wallet` in place when the
        `withdrawal` passed in carries its wallet object (`withdrawal` itself is not refreshed).
        """
        reason = require_reason(reason)
        record, previous = idempotency.claim(idempotency_key, "fail", {"withdrawal": withdrawal.pk, "reason": reason})
        if previous:
            _update_withdrawal_wallet(withdrawal, previous.wallet)
            return previous
        locked = _lock_open_withdrawal(withdrawal.pk)
        locked.status = Withdrawal.Status.FAILED
        locked.failure_reason = reason
        resolved = _resolve_withdrawal(locked, actor, reason=reason)
        idempotency.remember(record, withdrawal=resolved)
        _update_withdrawal_wallet(withdrawal, resolved.wallet)
        return resolved


def _adjust(
    wallet: Wallet, amount, *, credit: bool, account: str, description: str, metadata, idempotency_key, actor
) -> WalletTransaction:
    """credit_wallet and debit_wallet: move `amount` between `wallet` and the system
    account `account`, into the wallet when `credit`, out of its available balance if not.

    Updates `wallet` in place, on a replay too; the transaction's `.reference` remembers
    it for reverse_transaction (see HandedReference).
    """
    amount = parse_amount(amount, wallet.currency)
    operation, account_param = ("credit", "source") if credit else ("debit", "destination")
    record, previous = idempotency.claim(
        idempotency_key, operation, {"wallet": wallet.pk, "amount": amount, account_param: account}
    )
    if previous:
        previous.wallet = Wallet.objects.get(pk=wallet.pk)
        _update_in_place(wallet, previous.wallet)
        return _hand_back_reference(previous, wallet)
    delta = amount if credit else -amount
    txn = ledger.post_movement(
        wallet=wallet,
        type=Type.CREDIT if credit else Type.DEBIT,
        direction=Direction.IN if credit else Direction.OUT,
        amount=amount,
        balance_delta=delta,
        legs=[(account, -delta)],
        description=description or ("Credit" if credit else "Debit"),
        metadata=metadata,
        actor=actor,
    )
    idempotency.remember(record, transaction=txn)
    _update_in_place(wallet, txn.wallet)
    return _hand_back_reference(txn, wallet)


def _resolve_withdrawal(withdrawal: Withdrawal, actor, *, balance_delta=Decimal(0), legs=(), reason="") -> Withdrawal:
    """Release the hold and settle the pending transaction to the withdrawal's new status."""
    withdrawal.processed_by = actor if getattr(actor, "pk", None) else None
    withdrawal.processed_at = timezone.now()
    txn = ledger.settle_pending(
        withdrawal.transaction,
        status=Status.COMPLETED if withdrawal.status == Withdrawal.Status.COMPLETED else Status.FAILED,
        balance_delta=balance_delta,
        held_delta=-withdrawal.amount,
        legs=list(legs),
        actor=actor,
        reason=reason,
        followup=ledger.withdrawal_followup(withdrawal),
    )
    withdrawal.wallet = txn.wallet
    return withdrawal


def _post_payout(booking: Booking, payment: Payment, actor, *, wallet=None, guard=None) -> WalletTransaction:
    """Post a booking's payout to `wallet`, or to the wallet `guard` finds (see ledger.payout_guard)."""
    net = booking.grand_total - booking.commission_fee
    return ledger.post_movement(
        wallet=wallet,
        guard=guard,
        type=Type.BOOKING_PAYMENT,
        direction=Direction.IN,
        amount=net,
        balance_delta=net,
        legs=[
            (SystemAccount.PROVIDER_CLEARING, -booking.grand_total),
            (SystemAccount.PLATFORM_REVENUE, booking.commission_fee),
        ],
        description=f"Payout for booking #{booking.pk}",
        metadata={
            "gross": str(booking.grand_total),
            "commission": str(booking.commission_fee),
            "payment_reference": payment.reference,
            "provider": payment.provider,
        },
        booking_id=booking.pk,
        actor=actor,
        followup=ledger.payout_followup(payment.pk, booking.pk, timezone.now()),
    )


def _host_wallet(payment: Payment) -> Wallet:
    """The host's wallet in the booking's currency, created on their first payout."""
    currency = payment.booking.currency
    if payment.host_wallet_id:
        return Wallet(pk=payment.host_wallet_id, currency=currency)
    host = get_user_model().objects.get(pk=payment.host_id)
    return TransactionService.create_wallet(host, currency)


def _lock_for_reversal(reference: str) -> tuple[WalletTransaction, Payment | None]:
    """Lock, in the global order, the payment (when the transaction is a booking payment
    or a refund) and then the transaction a reversal touches. The booking is not locked:
    the reversal only updates it, after these locks."""
    peek = WalletTransaction.objects.filter(reference=reference).values("pk", "type", "booking_id", "metadata").first()
    if peek is None:
        raise NotFoundError(f"No transaction with reference {reference}.")
    payment = None
    if peek["booking_id"] and peek["type"] in (Type.BOOKING_PAYMENT, Type.REFUND):
        payments = Payment.objects.select_for_update()
        if peek["type"] == Type.BOOKING_PAYMENT:
            payment = payments.filter(ledger_transaction_id=peek["pk"]).first()
        else:
            payment = payments.filter(reference=peek["metadata"].get("payment_reference")).first()
    if peek["type"] == Type.REFUND:
        # Its provider refund, after the payment and before the transaction (finance.refunds'
        # order), so a send or a callback cannot move it on while the reversal decides.
        list(ProviderRefund.objects.select_for_update().filter(transaction_id=peek["pk"]))
    original = WalletTransaction.objects.select_for_update(of=("self",)).select_related("wallet").get(pk=peek["pk"])
    return original, payment


def _restore_refundable(payment: Payment, refund: WalletTransaction) -> None:
    """A reversed refund gives its amount back to what may still be refunded."""
    payment.refunded_amount -= Decimal(refund.metadata["refund_amount"])
    payment.commission_refunded -= Decimal(refund.metadata["commission_clawback"])
    payment.status = Payment.Status.PARTIALLY_REFUNDED if payment.refunded_amount else Payment.Status.SUCCESS
    payment.save(update_fields=["refunded_amount", "commission_refunded", "status", "updated_at"])
    Booking.objects.filter(pk=payment.booking_id, status=Booking.Status.REFUNDED).update(
        status=Booking.Status.CONFIRMED
    )


def _lock_open_withdrawal(withdrawal_id: int) -> Withdrawal:
    """Lock the withdrawal and its pending transaction (PostgreSQL: one SELECT ... FOR UPDATE)."""
    try:
        withdrawal = Withdrawal.objects.select_for_update().select_related("transaction").get(pk=withdrawal_id)
    except Withdrawal.DoesNotExist:
        raise NotFoundError("Withdrawal not found.") from None
    if not withdrawal.is_open:
        raise InvalidStateError(f"Withdrawal {withdrawal.reference} is already {withdrawal.status}.")
    return withdrawal


class RefundSplit(NamedTuple):
    """Who gives back what in a refund: the guest gets `guest_refund`; `commission_back` comes
    out of platform revenue and `host_debit` out of the host's wallet (they add up to it)."""

    guest_refund: Decimal
    commission_back: Decimal
    host_debit: Decimal


def refund_split(payment: Payment, amount: Decimal) -> RefundSplit:
    """How a refund of `amount` against `payment` (as it stands: earlier refunds counted) is
    split. process_refund posts exactly this, and the portal's confirmation shows it."""
    commission_back = _commission_clawback(payment.booking, payment, amount)
    return RefundSplit(amount, commission_back, amount - commission_back)


def _commission_clawback(booking: Booking, payment: Payment, amount: Decimal) -> Decimal:
    """The commission share of a refund, in proportion to the booking's commission.

    The refund that brings the total to the full payment takes whatever commission is
    left, so rounding never leaves a stray minor unit in platform revenue.
    """
    if payment.refunded_amount + amount == payment.amount:
        return booking.commission_fee - payment.commission_refunded
    if booking.grand_total == 0:
        return Decimal(0)
    share = round_money(amount * booking.commission_fee / booking.grand_total, booking.currency)
    return min(share, booking.commission_fee - payment.commission_refunded)
