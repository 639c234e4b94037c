"""The referral programme's rules: bonus, policy options, the monthly cap and clawbacks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zenzefi_core.errors import InvalidInput
from zenzefi_core.money import CENT, ZERO
from zenzefi_core.pricing import MAX_BUNDLE_TOKENS
from zenzefi_core.referrals import (
    ReferralPolicy,
    bonus_share,
    bonus_shares,
    clawback_for,
    month_window,
)

amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000.00"), places=2)
balances = st.decimals(min_value=Decimal("0.00"), max_value=Decimal("100000.00"), places=2)
percents = st.decimals(min_value=Decimal("0"), max_value=Decimal("100"), places=2)


@pytest.mark.parametrize(
    ("purchase", "bonus"),
    [
        ("18.00", "1.80"),
        ("81.00", "8.10"),
        ("153.00", "15.30"),
        ("1600.00", "160.00"),
        ("1.00", "0.10"),
        # 10 % of 0.05 is 0.005: half-even rounds it to 0.00, so no bonus.
        ("0.05", "0.00"),
        ("0.15", "0.02"),
        ("0.25", "0.02"),
    ],
)
def test_default_bonus_is_ten_percent_rounded_half_even(purchase: str, bonus: str) -> None:
    assert ReferralPolicy().bonus_for(Decimal(purchase), first_purchase=False) == Decimal(bonus)


def test_minimum_purchase() -> None:
    policy = ReferralPolicy(minimum_purchase=Decimal("10.00"))
    assert policy.bonus_for(Decimal("9.99"), first_purchase=True) == ZERO
    assert policy.bonus_for(Decimal("10.00"), first_purchase=True) == Decimal("1.00")


def test_first_purchase_only() -> None:
    policy = ReferralPolicy(first_purchase_only=True)
    assert policy.bonus_for(Decimal("18.00"), first_purchase=True) == Decimal("1.80")
    assert policy.bonus_for(Decimal("18.00"), first_purchase=False) == ZERO
    assert ReferralPolicy().bonus_for(Decimal("18.00"), first_purchase=False) == Decimal("1.80")


def test_monthly_cap_trims_the_bonus_to_what_is_left() -> None:
    policy = ReferralPolicy(monthly_cap=Decimal("5.00"))
    assert policy.bonus_for(Decimal("18.00"), first_purchase=False) == Decimal("1.80")
    kept = Decimal("4.00")
    assert policy.bonus_for(Decimal("18.00"), first_purchase=False, kept_this_month=kept) == (
        Decimal("1.00")
    )
    full = Decimal("5.00")
    assert policy.bonus_for(Decimal("18.00"), first_purchase=False, kept_this_month=full) == ZERO
    # A cap lowered below what was already kept pays nothing more, and takes nothing back.
    over = Decimal("7.00")
    assert policy.bonus_for(Decimal("18.00"), first_purchase=False, kept_this_month=over) == ZERO


def test_custom_percentage() -> None:
    policy = ReferralPolicy(percent=Decimal("12.5"))
    assert policy.bonus_for(Decimal("18.00"), first_purchase=False) == Decimal("2.25")
    assert ReferralPolicy(percent=ZERO).bonus_for(Decimal("18.00"), first_purchase=True) == ZERO


@pytest.mark.parametrize(
    "options",
    [
        {"percent": Decimal("-1")},
        {"percent": Decimal("100.01")},
        {"percent": Decimal("NaN")},
        {"minimum_purchase": Decimal("-1.00")},
        {"minimum_purchase": Decimal("0.001")},
        {"monthly_cap": Decimal("-5.00")},
    ],
)
def test_a_bad_policy_is_refused(options: dict) -> None:
    with pytest.raises(InvalidInput):
        ReferralPolicy(**options)


def test_month_window_is_the_utc_calendar_month() -> None:
    start, end = month_window(datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
    assert (start, end) == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    start, end = month_window(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    assert (start, end) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    # 00:30 on 1 December in UTC+3 is still November in UTC.
    moscow = timezone(timedelta(hours=3))
    start, _ = month_window(datetime(2026, 12, 1, 0, 30, tzinfo=moscow))
    assert start == datetime(2026, 11, 1, tzinfo=UTC)


def test_clawback_never_takes_a_balance_below_zero() -> None:
    assert clawback_for(Decimal("1.80"), Decimal("50.00")).taken == Decimal("1.80")
    partial = clawback_for(Decimal("1.80"), Decimal("0.50"))
    assert (partial.taken, partial.shortfall) == (Decimal("0.50"), Decimal("1.30"))
    nothing = clawback_for(Decimal("1.80"), ZERO)
    assert (nothing.taken, nothing.shortfall) == (ZERO, Decimal("1.80"))


def test_bonus_shares_follow_the_price_split() -> None:
    # Starter Pack: 8.10 of bonus over 5 tokens, 1.62 each.
    assert [bonus_share(Decimal("8.10"), 5, i) for i in range(5)] == [Decimal("1.62")] * 5
    # 1.00 over 3 tokens: the first token carries the extra cent.
    assert [bonus_share(Decimal("1.00"), 3, i) for i in range(3)] == [
        Decimal("0.34"),
        Decimal("0.33"),
        Decimal("0.33"),
    ]
    with pytest.raises(InvalidInput):
        bonus_share(Decimal("1.00"), 3, 3)


@given(
    purchase=amounts,
    percent=percents,
    count=st.integers(1, MAX_BUNDLE_TOKENS),
    spent=balances,
)
def test_bonus_and_clawback_cancel_out(
    purchase: Decimal, percent: Decimal, count: int, spent: Decimal
) -> None:
    """Refunding every token of a purchase reverses exactly the bonus it produced, whatever the
    referrer's balance: what is not taken back is recorded as shortfall, to the cent."""
    bonus = ReferralPolicy(percent=percent).bonus_for(purchase, first_purchase=True)
    assert ZERO <= bonus <= purchase
    assert bonus == bonus.quantize(CENT)
    shares = [bonus_share(bonus, count, i) for i in range(count)]
    assert sum(shares, ZERO) == bonus
    # The referrer got the bonus, then may have spent some or all of it.
    balance = max(ZERO, bonus - spent)
    start = balance
    taken = shortfall = ZERO
    for share in shares:
        clawback = clawback_for(share, balance)
        balance -= clawback.taken
        taken += clawback.taken
        shortfall += clawback.shortfall
        assert balance >= ZERO
    assert taken + shortfall == bonus
    assert taken == start
    assert balance == ZERO


@given(owed=balances, balance=balances)
def test_clawback_splits_what_is_owed_into_taken_and_shortfall(
    owed: Decimal, balance: Decimal
) -> None:
    clawback = clawback_for(owed, balance)
    assert clawback.taken + clawback.shortfall == owed
    assert ZERO <= clawback.taken <= balance
    assert clawback.shortfall >= ZERO
    assert clawback.shortfall == ZERO or clawback.taken == balance


@given(
    cap=balances,
    purchases=st.lists(amounts, max_size=30),
    reversals=st.lists(st.booleans(), max_size=30),
)
def test_monthly_cap_is_never_exceeded(
    cap: Decimal, purchases: list[Decimal], reversals: list[bool]
) -> None:
    """Whatever the referees buy, and whichever of those bonuses refunds reverse, what the
    referrer keeps from the month's bonuses stays within the cap."""
    policy = ReferralPolicy(monthly_cap=cap)
    kept = ZERO
    for purchase, reversed_ in zip(purchases, reversals + [False] * len(purchases), strict=False):
        bonus = policy.bonus_for(purchase, first_purchase=False, kept_this_month=kept)
        assert bonus >= ZERO
        kept += bonus
        if reversed_:
            kept -= bonus
        assert kept <= cap


@given(
    amount=balances,
    cap=st.one_of(st.none(), balances),
    kept=balances,
)
def test_within_cap_pays_at_most_the_room_left_and_never_more_than_asked(
    amount: Decimal, cap: Decimal | None, kept: Decimal
) -> None:
    paid = ReferralPolicy(monthly_cap=cap).within_cap(amount, kept_this_month=kept)
    assert ZERO <= paid <= amount
    if cap is None:
        assert paid == amount
    else:
        assert kept + paid <= max(cap, kept)
        # Room left is used in full: nothing is forfeited that the cap allowed.
        assert paid == min(amount, max(ZERO, cap - kept))


@given(
    price=amounts,
    count=st.integers(min_value=1, max_value=MAX_BUNDLE_TOKENS),
    percent=percents,
)
def test_a_bundles_shares_add_up_to_its_bonus_and_follow_its_price_split(
    price: Decimal, count: int, percent: Decimal
) -> None:
    bonus = ReferralPolicy(percent=percent).bonus_for(price, first_purchase=True)
    shares = bonus_shares(bonus, count)
    assert len(shares) == count
    assert sum(shares, ZERO) == bonus
    # All equal but the first, which carries the leftover cents, as the price split does.
    assert len(set(shares[1:])) <= 1
    assert all(ZERO <= share <= shares[0] for share in shares)
    assert shares[0] - min(shares) < CENT * count
