"""Amount parsing and rounding: exact, per-currency precision, never a float."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from finance.errors import InvalidAmountError, UnsupportedCurrencyError
from finance.money import (
    CURRENCY_DECIMALS,
    currency_decimals,
    from_minor_units,
    parse_amount,
    round_money,
    to_minor_units,
)

currencies = st.sampled_from(sorted(CURRENCY_DECIMALS))


@given(currencies, st.integers(min_value=1, max_value=10**15))
def test_minor_units_round_trip_exactly(currency, minor):
    amount = from_minor_units(minor, currency)
    assert to_minor_units(amount, currency) == minor
    assert parse_amount(str(amount), currency) == amount
    assert -amount.as_tuple().exponent == currency_decimals(currency)


@given(currencies, st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("1e12"), places=4))
def test_parse_accepts_exactly_the_amounts_the_currency_can_hold(currency, value):
    places = currency_decimals(currency)
    representable = value == value.quantize(Decimal(1).scaleb(-places))
    if representable:
        assert parse_amount(str(value), currency) == value
    else:
        with pytest.raises(InvalidAmountError):
            parse_amount(str(value), currency)


@given(currencies, st.decimals(allow_nan=False, allow_infinity=False, max_value=Decimal(0)))
def test_zero_and_negative_amounts_are_refused(currency, value):
    with pytest.raises(InvalidAmountError):
        parse_amount(value, currency)


@given(currencies, st.floats(allow_nan=True, allow_infinity=True))
def test_floats_are_always_refused(currency, value):
    with pytest.raises(InvalidAmountError):
        parse_amount(value, currency)


@given(currencies, st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=8))
def test_rounding_is_half_even_to_the_currency_precision(currency, value):
    rounded = round_money(value, currency)
    step = Decimal(1).scaleb(-currency_decimals(currency))
    assert abs(rounded - value) <= step / 2
    assert rounded == rounded.quantize(step)


@pytest.mark.parametrize("text", ["NaN", "sNaN", "Infinity", "-Infinity", "", "1,000", "1e400", "0x10", None])
def test_nonsense_is_refused(text):
    with pytest.raises(InvalidAmountError):
        parse_amount(text, "USD")


@pytest.mark.parametrize(
    ("currency", "text", "expected"),
    [("UGX", "15000", Decimal("15000")), ("TND", "1.005", Decimal("1.005")), ("NGN", " 12.50 ", Decimal("12.50"))],
)
def test_examples(currency, text, expected):
    assert parse_amount(text, currency) == expected


def test_unknown_currency():
    with pytest.raises(UnsupportedCurrencyError):
        parse_amount("1", "ABC")


# --- amounts as staff type them in the portal (parse_typed_amount) ---------------------------------


@pytest.mark.parametrize(
    ("typed", "currency", "expected"),
    [
        ("50,000", "NGN", "50000"),
        ("1,234,567.50", "NGN", "1234567.50"),
        ("50000.5", "NGN", "50000.5"),
        (" 270,000.00 ", "NGN", "270000.00"),
        ("NGN 50,000", "NGN", "50000"),
        ("ngn 1,000.25", "NGN", "1000.25"),
        ("999", "NGN", "999"),
        ("1,000", "UGX", "1000"),
        (".5", "USD", "0.5"),
    ],
)
def test_typed_amounts_accept_thousands_separators_in_groups_of_three(typed, currency, expected):
    from finance.money import parse_typed_amount

    assert parse_typed_amount(typed, currency) == Decimal(expected)


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("50,00", "use a comma only between groups of three digits"),
        ("5,0000", "use a comma only between groups of three digits"),
        ("1,2", "use a comma only between groups of three digits"),
        (",500", "use a comma only between groups of three digits"),
        ("1,000.5,0", "use a comma only between groups of three digits"),
        ("abc", "is not an amount: enter a number"),
        ("1e3", "is not an amount: enter a number"),
        ("50 000", "is not an amount: enter a number"),
        ("-5", "is not an amount: enter a number"),
        ("USD 5", "is not an amount: enter a number"),
        ("", "Enter an amount"),
        ("0", "greater than zero"),
        ("1.001", "at most 2 decimal places"),
    ],
)
def test_typed_amounts_refuse_what_is_not_an_amount_with_a_sentence(typed, message):
    from finance.money import parse_typed_amount

    with pytest.raises(InvalidAmountError, match=message):
        parse_typed_amount(typed, "NGN")


def test_the_strict_parse_amount_still_refuses_a_thousands_separator():
    with pytest.raises(InvalidAmountError):
        parse_amount("50,000", "NGN")
