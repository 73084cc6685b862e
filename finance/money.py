"""Exact money: parsing and rounding amounts with each currency's ISO 4217 precision.

Amounts are `Decimal` from the edge inward. A float is refused outright: by the time a
float exists the exact value the user typed is already lost.
"""

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from django.conf import settings

from .errors import InvalidAmountError, UnsupportedCurrencyError

# Minor-unit exponent per currency (ISO 4217).
CURRENCY_DECIMALS = {
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "NGN": 2,
    "KES": 2,
    "ZAR": 2,
    "GHS": 2,
    "TZS": 2,
    "EGP": 2,
    "MAD": 2,
    "XOF": 0,
    "UGX": 0,
    "RWF": 0,
    "TND": 3,
}

# Largest absolute amount the database columns hold (20 digits, 4 of them decimals).
MAX_AMOUNT = Decimal("9999999999999999")


def currency_decimals(currency: str) -> int:
    extra = getattr(settings, "EXTRA_CURRENCY_DECIMALS", {})
    decimals = extra.get(currency, CURRENCY_DECIMALS.get(currency))
    if decimals is None:
        raise UnsupportedCurrencyError(f"Unsupported currency: {currency!r}.", currency=currency)
    return decimals


def quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-currency_decimals(currency))


def parse_amount(value, currency: str, *, allow_zero: bool = False) -> Decimal:
    """Return `value` as an exact Decimal in `currency`, or raise InvalidAmountError.

    Accepts Decimal, int and decimal strings. Refuses floats, booleans, NaN, infinities,
    non-positive amounts (zero only with allow_zero) and more decimals than the currency has.
    """
    places = currency_decimals(currency)
    if isinstance(value, bool) or isinstance(value, float):
        raise InvalidAmountError("Amounts must be decimal strings, not floating-point numbers.")
    if isinstance(value, str):
        value = value.strip()
    try:
        amount = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidAmountError(f"{value!r} is not a valid amount.") from None
    if not amount.is_finite():
        raise InvalidAmountError("Amount must be a finite number.")
    if amount < 0 or (amount == 0 and not allow_zero):
        raise InvalidAmountError("Amount must be greater than zero.")
    if amount.as_tuple().exponent < -places and amount != amount.quantize(quantum(currency)):
        raise InvalidAmountError(f"{currency} amounts have at most {places} decimal places.")
    if amount > MAX_AMOUNT:
        raise InvalidAmountError("Amount is too large.")
    return amount.quantize(quantum(currency))


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round a computed amount (a proportion, say) to the currency's precision, half-even."""
    return amount.quantize(quantum(currency), rounding=ROUND_HALF_EVEN)


def to_minor_units(amount: Decimal, currency: str) -> int:
    return int(amount.scaleb(currency_decimals(currency)).to_integral_exact())


def from_minor_units(minor: int, currency: str) -> Decimal:
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise InvalidAmountError("Minor-unit amounts must be integers.")
    return Decimal(minor).scaleb(-currency_decimals(currency)).quantize(quantum(currency))


def format_money(amount: Decimal, currency: str) -> str:
    return f"{currency} {round_money(amount, currency):,}"
