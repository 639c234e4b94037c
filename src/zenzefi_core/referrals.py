"""The referral programme's rules: what a purchase earns the referrer, and when it is paid.

Pure rules, no I/O. The default policy is the product documents': 10 % of every purchase the
referee makes, rounded to 0.01. Operators may add a minimum purchase, limit the bonus to the
referee's first purchase, and cap what one referrer is paid per calendar month (UTC).

A bonus is worked out when the purchase is made (percentage, minimum, first purchase), split over
the purchase's tokens the way its price is (`bonus_shares`), and each token's share is paid when
that token is first used, under the monthly cap of the month it is paid in (`within_cap`). Until
then the token can be refunded, which cancels its share: a bonus is never paid for a purchase
that can still be undone, so the programme cannot create money.
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
    #: The most one referrer is paid in bonuses in one calendar month; None: no cap.
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

        `kept_this_month` is what the referrer was already paid this month; the bonus never
        lifts it above the cap.
        """
        if purchase_amount <= ZERO or purchase_amount < self.minimum_purchase:
            return ZERO
        if self.first_purchase_only and not first_purchase:
            return ZERO
        return self.within_cap(
            quantize(purchase_amount * self.percent / HUNDRED), kept_this_month=kept_this_month
        )

    def within_cap(self, amount: Decimal, *, kept_this_month: Decimal) -> Decimal:
        """What may be paid of `amount` to a referrer already paid `kept_this_month` this
        month: all of it without a cap, else no more than the room left under the cap."""
        if self.monthly_cap is None:
            return amount
        return min(amount, max(ZERO, self.monthly_cap - kept_this_month))


def month_window(moment: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) around `moment`: [first instant, first instant of the next)."""
    at = moment.astimezone(UTC)
    start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


def bonus_shares(bonus: Decimal, token_count: int) -> tuple[Decimal, ...]:
    """A purchase's bonus split over its tokens, in issue order, exactly the way its price is
    (`split_price`: the first token takes the leftover cents), so the shares add up to the
    bonus and each token's share follows its price."""
    return split_price(bonus, token_count)


def bonus_share(bonus: Decimal, token_count: int, position: int) -> Decimal:
    """The part of a purchase's bonus that refunding its token number `position` reverses.

    The bonus is split over the purchase's tokens the way its price is (`split_price`), so
    refunding every token of a bundle reverses exactly the whole bonus.
    """
    if not 0 <= position < token_count:
        raise InvalidInput("position must name one of the purchase's tokens")
    return bonus_shares(bonus, token_count)[position]


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
