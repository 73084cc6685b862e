"""Exact money: parsing and rounding amounts with each currency's ISO 4217 precision.

Amounts are `Decimal` from the edge inward. A float is refused outright: by the time a
float exists the exact value the user typed is already lost.
"""

import re
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

# Every money column (finance.models.MONEY): 20 digits, 4 of them decimals.
COLUMN_DIGITS = 20
COLUMN_DECIMALS = 4
# Largest absolute amount those columns hold in whole units.
MAX_AMOUNT = Decimal(10) ** (COLUMN_DIGITS - COLUMN_DECIMALS) - 1
# An amount as people and providers write it: ASCII digits, one optional point, an optional
# exponent. No underscores, no other scripts' digits, no NaN or Infinity spelled any way.
_AMOUNT_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_LONGEST_TEXT = 64
# An amount as a person types it in the portal: digits with commas only between groups of
# three ("1,234,567.50"), or none ("50000.5"); an optional point and decimals; an optional
# currency code in front ("NGN 50,000", as the portal shows amounts).
_TYPED_AMOUNT = re.compile(r"(?:(\d{1,3}(?:,\d{3})+)|(\d+))(\.\d*)?|(\.\d+)", re.ASCII)
_TYPED_EXAMPLE = "e.g. 50,000 or 2500.50"


def currency_decimals(currency: str) -> int:
    extra = getattr(settings, "EXTRA_CURRENCY_DECIMALS", {})
    decimals = extra.get(currency, CURRENCY_DECIMALS.get(currency))
    if decimals is None:
        raise UnsupportedCurrencyError(f"Unsupported currency: {currency!r}.", currency=currency)
    return decimals


def supported_currencies() -> list[str]:
    """Every currency the ledger can hold, with EXTRA_CURRENCY_DECIMALS added."""
    return sorted({*CURRENCY_DECIMALS, *getattr(settings, "EXTRA_CURRENCY_DECIMALS", {})})


def quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-currency_decimals(currency))


def parse_amount(value, currency: str, *, allow_zero: bool = False) -> Decimal:
    """Return `value` as an exact Decimal in `currency`, or raise InvalidAmountError.

    The one rule for every amount that enters (API, portal forms, webhooks, services):
    Decimal, int or a plain decimal string; finite; positive (zero only with allow_zero);
    no more decimals than the currency has; small enough for the money columns. Floats,
    booleans, NaN, infinities, empty or overlong strings are refused, never an exception
    of another kind.
    """
    places = currency_decimals(currency)
    if isinstance(value, bool) or isinstance(value, float):
        raise InvalidAmountError("Amounts must be decimal strings, not floating-point numbers.")
    if isinstance(value, str):
        value = value.strip()
        if len(value) > _LONGEST_TEXT or not _AMOUNT_TEXT.fullmatch(value):
            raise InvalidAmountError(f"{value[:_LONGEST_TEXT]!r} is not a valid amount.")
    elif not isinstance(value, (int, Decimal)):
        raise InvalidAmountError(f"{value!r} is not a valid amount.")
    try:
        amount = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidAmountError(f"{value!r} is not a valid amount.") from None
    if not amount.is_finite():
        raise InvalidAmountError("Amount must be a finite number.")
    if amount < 0 or (amount == 0 and not allow_zero):
        raise InvalidAmountError("Amount must be greater than zero.")
    # Size first: only an amount that fits the column may be quantized (a longer one
    # would overflow the decimal context).
    if amount > MAX_AMOUNT:
        raise InvalidAmountError(f"Amount is too large: at most {MAX_AMOUNT:,}.")
    try:
        exact = amount.quantize(quantum(currency), rounding=ROUND_HALF_EVEN)
    except InvalidOperation:  # an exponent beyond what the decimal context can represent
        raise InvalidAmountError(f"{value!r} is not a valid amount.") from None
    if exact != amount:
        raise InvalidAmountError(f"{currency} amounts have at most {places} decimal places.")
    return exact


def parse_typed_amount(value, currency: str) -> Decimal:
    """An amount typed by staff in a portal form, or InvalidAmountError saying what to fix.

    Lenient only about how people write numbers: "50,000" and "1,234,567.50" (a comma only
    as the thousands separator, in groups of three), "50000.5", surrounding blanks, and the
    currency's own code in front. Anything else ("50,00", "5,0000", "1,2", "abc") is refused
    with a sentence; the canonical digits then go through `parse_amount`, the one rule for
    every amount (precision, size, positive). The REST API calls `parse_amount` directly and
    stays strict: "50,000" is refused there.
    """
    if not isinstance(value, str):
        raise InvalidAmountError(f"Enter the amount as a number, {_TYPED_EXAMPLE}.")
    text = value.strip()
    if len(text) > _LONGEST_TEXT:
        raise InvalidAmountError("That amount is too long to be an amount.")
    if text[:3].upper() == currency and text[3:4] in ("", " ", "\u00a0"):
        text = text[3:].strip()
    if not text:
        raise InvalidAmountError(f"Enter an amount, {_TYPED_EXAMPLE}.")
    match = _TYPED_AMOUNT.fullmatch(text)
    if match is None:
        if "," in text and re.fullmatch(r"[\d,.]+", text, re.ASCII):
            raise InvalidAmountError(
                f"“{text}” is not an amount: use a comma only between groups of three digits "
                "(50,000 or 1,234,567.50), and a point for decimals."
            )
        raise InvalidAmountError(f"“{text}” is not an amount: enter a number, {_TYPED_EXAMPLE}.")
    grouped, plain, decimals, only_decimals = match.groups()
    whole = grouped.replace(",", "") if grouped else plain
    canonical = only_decimals or f"{whole}{decimals or ''}"
    return parse_amount(canonical.rstrip("."), currency)


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round a computed amount (a proportion, say) to the currency's precision, half-even."""
    return amount.quantize(quantum(currency), rounding=ROUND_HALF_EVEN)


def to_minor_units(amount: Decimal, currency: str) -> int:
    return int(amount.scaleb(currency_decimals(currency)).to_integral_exact())


def from_minor_units(minor: int, currency: str) -> Decimal:
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise InvalidAmountError("Minor-unit amounts must be integers.")
    if abs(minor) > MAX_AMOUNT.scaleb(currency_decimals(currency)):
        raise InvalidAmountError(f"Amount is too large: at most {MAX_AMOUNT:,}.")
    return Decimal(minor).scaleb(-currency_decimals(currency)).quantize(quantum(currency))


def format_money(amount: Decimal, currency: str) -> str:
    return f"{currency} {round_money(amount, currency):,}"
