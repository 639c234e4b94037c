"""Amounts: what `parse_amount` lets in, how amounts round and how they are shown."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zenzefi_core.errors import InvalidAmount
from zenzefi_core.money import (
    DEFAULT_MAXIMUM,
    Sign,
    format_amount,
    parse_amount,
    quantize,
)

CENTS_IN_RANGE = st.decimals(
    min_value=Decimal("0.01"), max_value=DEFAULT_MAXIMUM, places=2, allow_nan=False
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10", "10.00"),
        ("10.5", "10.50"),
        ("10.50", "10.50"),
        (" 10.50 ", "10.50"),
        ("0.01", "0.01"),
        (Decimal("7.25"), "7.25"),
        (Decimal("7"), "7.00"),
        (42, "42.00"),
        ("1000000.00", "1000000.00"),
    ],
)
def test_parse_amount_accepts_exact_values(value: object, expected: str) -> None:
    amount = parse_amount(value)
    assert isinstance(amount, Decimal)
    assert str(amount) == expected


def test_parse_amount_always_returns_two_places() -> None:
    assert parse_amount("3").as_tuple().exponent == -2
    assert parse_amount(Decimal("3.5")).as_tuple().exponent == -2


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (10.5, "not a float"),
        (10.0, "not a float"),
        (True, "not a float"),
        (False, "not a float"),
        ("NaN", "finite"),
        ("nan", "finite"),
        ("sNaN", "finite"),
        ("Infinity", "finite"),
        ("-Infinity", "finite"),
        ("inf", "finite"),
        (Decimal("NaN"), "finite"),
        (Decimal("Infinity"), "finite"),
        ("1e3", "exponent"),
        ("1E3", "exponent"),
        ("1.5e1", "exponent"),
        ("10.005", "two decimal places"),
        ("1.500", "two decimal places"),
        (Decimal("1.500"), "two decimal places"),
        (Decimal("0.001"), "two decimal places"),
        ("ten", "not a number"),
        ("", "not a number"),
        ("10,50", "not a number"),
        ("1_000", "not a number"),
        ("\u0661\u0660", "not a number"),
        ("1 000", "not a number"),
        ("0x10", "not a number"),
        ("9" * 200, "not a number"),
        (None, "decimal string"),
        ([10], "decimal string"),
        ("1000000.01", "must not exceed"),
        (10**7, "must not exceed"),
    ],
)
def test_parse_amount_refuses(value: object, message: str) -> None:
    with pytest.raises(InvalidAmount, match=message):
        parse_amount(value)


@pytest.mark.parametrize(
    ("value", "sign", "accepted"),
    [
        ("0", Sign.POSITIVE, False),
        ("0.00", Sign.POSITIVE, False),
        ("-0.01", Sign.POSITIVE, False),
        ("0.01", Sign.POSITIVE, True),
        ("0", Sign.NON_NEGATIVE, True),
        ("-0.01", Sign.NON_NEGATIVE, False),
        ("5", Sign.NON_NEGATIVE, True),
        ("0", Sign.ANY, False),
        ("-0", Sign.ANY, False),
        ("-5.25", Sign.ANY, True),
        ("5.25", Sign.ANY, True),
    ],
)
def test_parse_amount_sign(value: str, sign: Sign, accepted: bool) -> None:
    if accepted:
        assert parse_amount(value, sign=sign) == Decimal(value)
    else:
        with pytest.raises(InvalidAmount):
            parse_amount(value, sign=sign)


def test_parse_amount_maximum_applies_to_magnitude() -> None:
    assert parse_amount("-1000000", sign=Sign.ANY) == Decimal("-1000000.00")
    with pytest.raises(InvalidAmount, match="must not exceed"):
        parse_amount("-1000000.01", sign=Sign.ANY)


def test_parse_amount_custom_and_no_maximum() -> None:
    assert parse_amount("50", maximum=Decimal("50")) == Decimal("50.00")
    with pytest.raises(InvalidAmount, match="must not exceed 50 ZNC"):
        parse_amount("50.01", maximum=Decimal("50"))
    assert parse_amount("99999999.99", maximum=None) == Decimal("99999999.99")


@pytest.mark.parametrize("value", ["1" + "0" * 30, 10**30, Decimal("1E+30")])
def test_parse_amount_refuses_huge_values_as_invalid_amount(value: object) -> None:
    # Values beyond the decimal context's precision must still be a domain error, not a crash.
    with pytest.raises(InvalidAmount):
        parse_amount(value)
    with pytest.raises(InvalidAmount):
        parse_amount(value, maximum=None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.125", "0.12"),
        ("0.135", "0.14"),
        ("0.145", "0.14"),
        ("0.155", "0.16"),
        ("2.675", "2.68"),
        ("-0.125", "-0.12"),
        ("-0.135", "-0.14"),
        ("0.1251", "0.13"),
        ("10", "10.00"),
    ],
)
def test_quantize_rounds_half_even(value: str, expected: str) -> None:
    assert str(quantize(Decimal(value))) == expected


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_quantize_refuses_non_finite(value: Decimal) -> None:
    with pytest.raises(InvalidAmount, match="finite"):
        quantize(value)


def test_quantize_refuses_values_beyond_decimal_precision() -> None:
    with pytest.raises(InvalidAmount, match="too large"):
        quantize(Decimal("1E+30"))
    with pytest.raises(InvalidAmount, match="too large"):
        format_amount(Decimal(10**30))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("10"), "10.00"),
        (Decimal("10.5"), "10.50"),
        (Decimal("0.125"), "0.12"),
        (Decimal("1E+3"), "1000.00"),
        (Decimal("1000000.00"), "1000000.00"),
        (Decimal("-3.1"), "-3.10"),
    ],
)
def test_format_amount(value: Decimal, expected: str) -> None:
    assert format_amount(value) == expected


@given(CENTS_IN_RANGE)
def test_parse_of_format_round_trips(amount: Decimal) -> None:
    parsed = parse_amount(format_amount(amount))
    assert parsed == amount
    assert parsed.as_tuple().exponent == -2


@given(CENTS_IN_RANGE)
def test_negative_amounts_round_trip_with_sign_any(amount: Decimal) -> None:
    assert parse_amount(format_amount(-amount), sign=Sign.ANY) == -amount


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_any_float_is_refused(value: float) -> None:
    with pytest.raises(InvalidAmount, match="float"):
        parse_amount(value)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=3))
def test_three_written_places_are_refused(value: Decimal) -> None:
    # `places=3` yields values written with three places, even when the last one is a 0.
    assert value.as_tuple().exponent == -3
    with pytest.raises(InvalidAmount):
        parse_amount(str(value), sign=Sign.ANY, maximum=None)


@given(
    st.decimals(
        min_value=Decimal("-1e12"),
        max_value=Decimal("1e12"),
        allow_nan=False,
        allow_infinity=False,
        places=4,
    )
)
def test_quantize_is_idempotent_and_close(value: Decimal) -> None:
    once = quantize(value)
    assert quantize(once) == once
    assert abs(once - value) <= Decimal("0.005")
    assert once.as_tuple().exponent == -2


@given(st.integers(min_value=1, max_value=int(DEFAULT_MAXIMUM)))
def test_whole_numbers_in_range_are_accepted(value: int) -> None:
    assert parse_amount(value) == Decimal(value)
    assert parse_amount(str(value)) == Decimal(value)
