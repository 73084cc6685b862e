"""Errors raised by the ledger. Each carries a stable `code` the API reports as is."""


class TransactionError(Exception):
    """Base exception for transaction errors: nothing was written."""

    code = "transaction_error"
    status = 400

    def __init__(self, message: str = "", **details):
        super().__init__(message or self.__doc__)
        self.message = message or (self.__doc__ or "").strip()
        self.details = details


class InsufficientBalanceError(TransactionError):
    """The wallet's available balance does not cover the amount."""

    code = "insufficient_balance"
    status = 409


class WalletNotActiveError(TransactionError):
    """The wallet is frozen or closed."""

    code = "wallet_not_active"
    status = 409


class CurrencyMismatchError(TransactionError):
    """The amount's currency differs from the wallet's or the booking's."""

    code = "currency_mismatch"


class InvalidAmountError(TransactionError):
    """The amount is not a positive number with the currency's precision."""

    code = "invalid_amount"


class UnsupportedCurrencyError(TransactionError):
    """The currency is not one the ledger knows."""

    code = "unsupported_currency"


class AlreadyReversedError(TransactionError):
    """The transaction has already been reversed."""

    code = "already_reversed"
    status = 409


class InvalidStateError(TransactionError):
    """The object is not in a state that allows this operation."""

    code = "invalid_state"
    status = 409


class BelowMinimumWithdrawalError(TransactionError):
    """The withdrawal is below the currency's minimum."""

    code = "below_minimum_withdrawal"


class RefundExceedsPaymentError(TransactionError):
    """Refunds would exceed what the guest paid."""

    code = "refund_exceeds_payment"
    status = 409


class IdempotencyConflictError(TransactionError):
    """The idempotency key was already used with different parameters."""

    code = "idempotency_conflict"
    status = 409


class NotFoundError(TransactionError):
    """The referenced object does not exist."""

    code = "not_found"
    status = 404


class PermissionDeniedError(TransactionError):
    """The acting user lacks the permission this operation needs."""

    code = "permission_denied"
    status = 403


class TransferInFlightError(TransactionError):
    """A provider is moving this withdrawal's money: only its answer can settle it now."""

    code = "transfer_in_flight"
    status = 409


def require_reason(reason: str | None, message: str = "A reason is required.", *, field: str = "reason") -> str:
    """The one rule for reasons and notes that go in the audit log: required, not blank."""
    reason = (reason or "").strip()
    if not reason:
        raise TransactionError(message, field=field)
    return reason


class BankDetailsKeyError(TransactionError):
    """A stored account number cannot be read: no configured key (BANK_DETAILS_KEY or
    BANK_DETAILS_KEY_PREVIOUS) decrypts it. The message never contains the number."""

    code = "bank_details_unreadable"
    status = 409


class InvalidBankDetailsError(TransactionError):
    """The account number, account type or bank code cannot receive a payout: a number of the
    wrong length for the country, a mobile-money number that is not an M-Pesa phone number, or
    no bank code where a provider pays the country's banks."""

    code = "invalid_bank_details"
