"""The referral programme's rules: what a purchase earns the referrer, and what a refund takes back.

Pure rules, no I/O. The default policy is the product documents': 10 % of every purchase the
referee makes, rounded to 0.01. Operators may add a minimum purchase, limit the bonus to the
referee's first purchase, and cap what one referrer keeps per calendar month (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from zenzefi_core.errors import InvalidAmount, InvalidInput
from zenzefi_core.money import ZERO, Sign, parse_amount, quantize
from zenzefi_core.pricing import HUNDRED, split_price

DEFAULT_PERCENT = Decimal("10")


def _amount(value: Decimal, name: str) -> Decimal:
    try:
        return parse_amount(value, sign=Sign.NON_NEGATIVE, maximum=None)
    except InvalidAmount as error:
        raise InvalidInput(f"{name}: {error}") from None


@dataclass(frozen=True, slots=True)
class ReferralPolicy:
    percent: Decimal = DEFAULT_PERCENT
    #: Purchases below this amount earn nothing.
    minimum_purchase: Decimal = ZERO
    #: Only the referee's first purchase earns a bonus.
    first_purchase_only: bool = False
    #: The most one referrer keeps from bonuses earned in one calendar month; None: no cap.
    monthly_cap: Decimal | None = None

    def __post_init__(self) -> None:
        percent = Decimal(self.percent)
        if not percent.is_finite() or not ZERO <= percent <= HUNDRED:
            raise InvalidInput("the referral percentage must be between 0 and 100")
        object.__setattr__(self, "percent", percent)
        object.__setattr__(
            self, "minimum_purchase", _amount(self.minimum_purchase, "minimum_purchase")
        )
        if self.monthly_cap is not None:
            object.__setattr__(self, "monthly_cap", _amount(self.monthly_cap, "monthly_cap"))

    def bonus_for(
        self,
        purchase_amount: Decimal,
        *,
        first_purchase: bool,
        kept_this_month: Decimal = ZERO,
    ) -> Decimal:
        """The bonus a purchase of `purchase_amount` earns; ZERO when it earns none.

        `kept_this_month` is what the referrer already holds from bonuses earned this month
        (bonuses minus what refunds reversed); the bonus never lifts it above the cap.
        """
        if purchase_amount <= ZERO or purchase_amount < self.minimum_purchase:
            return ZERO
        if self.first_purchase_only and not first_purchase:
            return ZERO
        bonus = quantize(purchase_amount * self.percent / HUNDRED)
        if self.monthly_cap is not None:
            bonus = min(bonus, max(ZERO, self.monthly_cap - kept_this_month))
        return bonus


def month_window(moment: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) around `moment`: [first instant, first instant of the next)."""
    at = moment.astimezone(UTC)
    start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


def bonus_share(bonus: Decimal, token_count: int, position: int) -> Decimal:
    """The part of a purchase's bonus that refunding its token number `position` reverses.

    The bonus is split over the purchase's tokens the way its price is (`split_price`), so
    refunding every token of a bundle reverses exactly the whole bonus.
    """
    if not 0 <= position < token_count:
        raise InvalidInput("position must name one of the purchase's tokens")
    return split_price(bonus, token_count)[position]


@dataclass(frozen=True, slots=True)
class Clawback:
    """What a refund reverses of a bonus: `taken` from the referrer, and the `shortfall` that
    could not be taken because it would have taken the referrer's balance below zero."""

    owed: Decimal
    taken: Decimal
    shortfall: Decimal


def clawback_for(owed: Decimal, referrer_balance: Decimal) -> Clawback:
    taken = max(ZERO, min(owed, referrer_balance))
    return Clawback(owed=owed, taken=taken, shortfall=owed - taken)
