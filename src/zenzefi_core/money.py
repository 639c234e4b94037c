"""ZNC amounts: `Decimal` with exactly two places, rounded half-even, never a float.

Every amount that enters the system goes through `parse_amount`, so a value with a third decimal,
a float, NaN or infinity is refused at the edge instead of being rounded silently somewhere inside.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import Enum

from zenzefi_core.errors import InvalidAmount

CENT = Decimal("0.01")
# ASCII digits only: Decimal() alone would also take "1_000", "1e3" and non-Latin digits.
_AMOUNT_TEXT = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")
_MAX_TEXT = 64
ZERO = Decimal("0.00")
CURRENCY = "ZNC"

#: The largest amount a single operation may carry unless a setting says otherwise.
DEFAULT_MAXIMUM = Decimal("1000000.00")


class Sign(Enum):
    """Which amounts `parse_amount` accepts."""

    POSITIVE = "positive"
    NON_NEGATIVE = "non-negative"
    ANY = "any"


def quantize(value: Decimal) -> Decimal:
    """Round a computed amount (a discount, a percentage) to cents, half-even."""
    if not value.is_finite():
        raise InvalidAmount("amount must be a finite number")
    try:
        return value.quantize(CENT, rounding=ROUND_HALF_EVEN)
    except InvalidOperation:
        # More digits than the decimal context holds: far beyond any amount the system moves.
        raise InvalidAmount("amount is too large") from None


def parse_amount(
    value: object,
    *,
    sign: Sign = Sign.POSITIVE,
    maximum: Decimal | None = DEFAULT_MAXIMUM,
) -> Decimal:
    """Turn user input into an exact amount, refusing anything that is not already exact.

    Accepts `Decimal`, `int` and strings such as ``"81"``, ``"81.5"`` or ``"81.50"``.
    Refuses floats (they cannot carry cents exactly), booleans, NaN and infinities, more than
    two decimal places, amounts of the wrong sign and amounts whose magnitude exceeds `maximum`.
    """
    if isinstance(value, (bool, float)):
        raise InvalidAmount('amount must be a decimal string such as "10.00", not a float')
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_TEXT or not _AMOUNT_TEXT.match(text):
            raise InvalidAmount(_why_not_an_amount(text))
        number = Decimal(text)
    else:
        raise InvalidAmount('amount must be a decimal string such as "10.00"')

    if not number.is_finite():
        raise InvalidAmount("amount must be a finite number")
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise InvalidAmount("amount must have at most two decimal places")
    number = quantize(number)

    if sign is Sign.POSITIVE and number <= ZERO:
        raise InvalidAmount("amount must be greater than zero")
    if sign is Sign.NON_NEGATIVE and number < ZERO:
        raise InvalidAmount("amount must not be negative")
    if sign is Sign.ANY and number == ZERO:
        raise InvalidAmount("amount must not be zero")
    if maximum is not None and abs(number) > maximum:
        raise InvalidAmount(f"amount must not exceed {maximum} {CURRENCY}")
    return number


def _why_not_an_amount(text: str) -> str:
    lowered = text.lower()
    if "nan" in lowered or "inf" in lowered:
        return "amount must be a finite number"
    if len(text) <= _MAX_TEXT and "e" in lowered and not lowered.strip("+-0123456789.e"):
        return "amount must be written without an exponent"
    return f'amount {text[:_MAX_TEXT]!r} is not a number; write digits such as "10.00"'


def format_amount(value: Decimal) -> str:
    """Render an amount the way the API shows it: exactly two decimals, no exponent."""
    return f"{quantize(value):.2f}"
