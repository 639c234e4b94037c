"""Prices: what a token costs, what a bundle costs, how its price splits, what a refund returns.

Pure rules, no I/O. Every amount is an exact `Decimal` in cents; the only rounding is
`money.quantize` (half-even to 0.01), applied where a discount makes fractions of a cent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType

from zenzefi_core.domain.tokens import AccessToken, TokenScope
from zenzefi_core.errors import (
    InvalidAmount,
    InvalidDuration,
    InvalidInput,
    InvalidScope,
    TokenAlreadyActivated,
    TokenAlreadyRevoked,
)
from zenzefi_core.money import CENT, ZERO, Sign, parse_amount, quantize

#: Hours of access -> ZNC: the product documents' defaults, replaced by `ZENZEFI_TOKENS_PRICES`.
DEFAULT_PRICES: Mapping[int, Decimal] = MappingProxyType(
    {
        1: Decimal("1.00"),
        12: Decimal("10.00"),
        24: Decimal("18.00"),
        168: Decimal("100.00"),
        720: Decimal("300.00"),
    }
)

#: A bundle holds 1 to this many tokens: enough for any offer, small enough for one insert.
MAX_BUNDLE_TOKENS = 100
HUNDRED = Decimal("100")


def parse_scope(value: str) -> TokenScope:
    try:
        return TokenScope(value)
    except ValueError:
        raise InvalidScope(value, tuple(scope.value for scope in TokenScope)) from None


def _price_table(prices: Mapping[int, Decimal]) -> Mapping[int, Decimal]:
    if not prices:
        raise InvalidInput("the price table must sell at least one duration")
    checked: dict[int, Decimal] = {}
    for hours, price in prices.items():
        if isinstance(hours, bool) or not isinstance(hours, int) or hours <= 0:
            raise InvalidInput(f"token durations must be positive whole hours, not {hours!r}")
        checked[hours] = parse_amount(price, sign=Sign.POSITIVE, maximum=None)
    return MappingProxyType(dict(sorted(checked.items())))


@dataclass(frozen=True, slots=True)
class PriceTable:
    """What a single token of each duration costs. Durations not listed cannot be bought."""

    prices: Mapping[int, Decimal] = field(default_factory=lambda: DEFAULT_PRICES)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prices", _price_table(self.prices))

    @property
    def durations(self) -> tuple[int, ...]:
        return tuple(self.prices)

    def price_for(self, duration_hours: int) -> Decimal:
        """The price of one token; `InvalidDuration` for a duration that is not for sale."""
        price = None
        if isinstance(duration_hours, int) and not isinstance(duration_hours, bool):
            price = self.prices.get(duration_hours)
        if price is None:
            raise InvalidDuration(duration_hours, self.durations)
        return price


def parse_discount(value: object) -> Decimal:
    """A bundle discount in percent: 0 or more, below 100, at most two decimals."""
    try:
        discount = parse_amount(value, sign=Sign.NON_NEGATIVE, maximum=None)
    except InvalidAmount as error:
        raise InvalidInput(f"discount_percent: {error}") from None
    if discount >= HUNDRED:
        raise InvalidInput("discount_percent must be below 100")
    return discount


@dataclass(frozen=True, slots=True)
class BundlePrice:
    base_price: Decimal
    total_price: Decimal


def price_bundle(token_count: int, unit_price: Decimal, discount_percent: Decimal) -> BundlePrice:
    """`base = count x unit price`; `total = base x (1 - discount/100)`, rounded half-even.

    Refuses a bundle whose discount leaves less than 0.01 per token, so that every token of it
    has a price to refund.
    """
    if isinstance(token_count, bool) or not 1 <= token_count <= MAX_BUNDLE_TOKENS:
        raise InvalidInput(f"token_count must be between 1 and {MAX_BUNDLE_TOKENS}")
    discount = parse_discount(discount_percent)
    base = unit_price * token_count
    total = quantize(base * (HUNDRED - discount) / HUNDRED)
    if total < CENT * token_count:
        raise InvalidInput("the discount leaves less than 0.01 ZNC per token")
    return BundlePrice(base_price=base, total_price=total)


def split_price(total: Decimal, count: int) -> tuple[Decimal, ...]:
    """Split `total` into `count` shares that add up to it exactly.

    Every share is the same whole number of cents, except the first, which also takes the
    cents left over: 81.00 over 5 is 16.20 each, 10.00 over 3 is 3.34, 3.33, 3.33.
    """
    if count < 1:
        raise InvalidInput("a price is split over at least one share")
    if total < ZERO or total != quantize(total):
        raise InvalidAmount("only a non-negative amount in cents can be split")
    try:
        cents = int(total / CENT)
    except (InvalidOperation, OverflowError):
        raise InvalidAmount("amount is too large") from None
    share, remainder = divmod(cents, count)
    first = quantize(Decimal(share + remainder) * CENT)
    rest = quantize(Decimal(share) * CENT)
    return (first,) + (rest,) * (count - 1)


def refund_for(token: AccessToken) -> Decimal:
    """What revoking `token` gives back: exactly what it cost, and only before its first use."""
    if token.revoked_at is not None:
        raise TokenAlreadyRevoked()
    if token.activated_at is not None:
        raise TokenAlreadyActivated()
    return token.price_paid
