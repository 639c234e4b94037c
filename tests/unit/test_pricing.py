"""Prices, bundle prices, price shares and refunds: the pure rules, with examples and properties."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zenzefi_core.domain.bundles import TokenBundle
from zenzefi_core.domain.tokens import AccessToken, TokenScope
from zenzefi_core.errors import (
    InvalidAmount,
    InvalidDuration,
    InvalidInput,
    InvalidScope,
    TokenAlreadyActivated,
    TokenAlreadyRevoked,
)
from zenzefi_core.ids import new_id
from zenzefi_core.money import CENT, ZERO
from zenzefi_core.pricing import (
    DEFAULT_PRICES,
    MAX_BUNDLE_TOKENS,
    PriceTable,
    parse_discount,
    parse_scope,
    price_bundle,
    refund_for,
    split_price,
)

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)

amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000.00"), places=2)
discounts = st.decimals(min_value=Decimal("0"), max_value=Decimal("99.99"), places=2)
counts = st.integers(min_value=1, max_value=MAX_BUNDLE_TOKENS)


def bundle_of(token_count: int, unit: Decimal, discount: Decimal) -> TokenBundle:
    price = price_bundle(token_count, unit, discount)
    return TokenBundle(
        id=new_id(),
        name="b",
        description=None,
        token_count=token_count,
        duration_hours=24,
        scope=TokenScope.FULL,
        discount_percent=discount,
        base_price=price.base_price,
        total_price=price.total_price,
        is_active=True,
        created_at=NOW,
    )


def a_token(**changes: object) -> AccessToken:
    token = AccessToken(
        id=new_id(),
        user_id=new_id(),
        token_hash="0" * 64,
        token_prefix="abcdefgh",
        duration_hours=24,
        scope=TokenScope.FULL,
        price_paid=Decimal("16.20"),
        created_at=NOW,
    )
    return dataclasses.replace(token, **changes)  # type: ignore[arg-type]


# --- the price table -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hours", "price"),
    [(1, "1.00"), (12, "10.00"), (24, "18.00"), (168, "100.00"), (720, "300.00")],
)
def test_default_prices_are_the_product_documents(hours: int, price: str) -> None:
    assert PriceTable().price_for(hours) == Decimal(price)
    assert str(PriceTable().price_for(hours)) == price


@pytest.mark.parametrize("hours", [0, 2, 23, 25, -24, 10_000, True])
def test_unsellable_duration_is_refused_with_the_durations_on_sale(hours: int) -> None:
    with pytest.raises(InvalidDuration, match=r"^Invalid duration") as caught:
        PriceTable().price_for(hours)
    assert "1, 12, 24, 168, 720" in str(caught.value)
    assert caught.value.available == (1, 12, 24, 168, 720)


def test_a_configured_table_replaces_the_defaults() -> None:
    table = PriceTable({48: Decimal("30"), 2: "2.50"})  # type: ignore[dict-item]
    assert table.durations == (2, 48)
    assert table.price_for(48) == Decimal("30.00")
    assert table.price_for(2) == Decimal("2.50")
    with pytest.raises(InvalidDuration):
        table.price_for(24)
    assert PriceTable().prices == DEFAULT_PRICES


@pytest.mark.parametrize(
    "prices",
    [
        {},
        {0: Decimal("1.00")},
        {24: Decimal("0.00")},
        {24: Decimal("-1.00")},
        {24: Decimal("1.001")},
        {24: 1.5},
    ],
)
def test_a_bad_price_table_is_refused(prices: dict) -> None:
    with pytest.raises((InvalidInput, InvalidAmount)):
        PriceTable(prices)


def test_scopes() -> None:
    assert parse_scope("full") is TokenScope.FULL
    assert parse_scope("certificates_only") is TokenScope.CERTIFICATES_ONLY
    with pytest.raises(InvalidScope, match="full, certificates_only"):
        parse_scope("admin")


# --- bundles ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "hours", "discount", "base", "total", "savings", "per_token"),
    [
        (5, 24, "10", "90.00", "81.00", "9.00", "16.20"),
        (10, 24, "15", "180.00", "153.00", "27.00", "15.30"),
        (20, 168, "20", "2000.00", "1600.00", "400.00", "80.00"),
    ],
)
def test_the_default_bundles_cost_what_the_documents_say(
    count: int, hours: int, discount: str, base: str, total: str, savings: str, per_token: str
) -> None:
    bundle = bundle_of(count, PriceTable().price_for(hours), Decimal(discount))
    assert (bundle.base_price, bundle.total_price) == (Decimal(base), Decimal(total))
    assert bundle.savings == Decimal(savings)
    assert bundle.price_per_token == Decimal(per_token)


def test_bundle_total_rounds_half_even_to_the_cent() -> None:
    # 3 x 1.00 at 12.5 % off is 2.625: half-even makes it 2.62, not 2.63.
    assert price_bundle(3, Decimal("1.00"), Decimal("12.50")).total_price == Decimal("2.62")
    # 7 x 1.00 at 12.5 % off is 6.125 -> 6.12; 9 x 1.00 is 7.875 -> 7.88.
    assert price_bundle(7, Decimal("1.00"), Decimal("12.50")).total_price == Decimal("6.12")
    assert price_bundle(9, Decimal("1.00"), Decimal("12.50")).total_price == Decimal("7.88")


@pytest.mark.parametrize("count", [0, -1, MAX_BUNDLE_TOKENS + 1])
def test_bundle_size_is_bounded(count: int) -> None:
    with pytest.raises(InvalidInput, match="token_count"):
        price_bundle(count, Decimal("18.00"), Decimal("10"))


@pytest.mark.parametrize("discount", ["100", "-1", "150", "10.005", 12.5, "ten", True])
def test_bad_discounts_are_refused(discount: object) -> None:
    with pytest.raises(InvalidInput, match="discount"):
        parse_discount(discount)


def test_a_discount_that_leaves_under_a_cent_per_token_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"0\.01 ZNC per token"):
        price_bundle(5, Decimal("1.00"), Decimal("99.99"))


@given(count=counts, unit=amounts, discount=discounts)
def test_bundle_price_is_never_above_base_and_savings_add_up(
    count: int, unit: Decimal, discount: Decimal
) -> None:
    try:
        bundle = bundle_of(count, unit, discount)
    except InvalidInput:
        # Only a discount so deep that a token would cost less than a cent is refused.
        assert unit * count * (100 - discount) / 100 < CENT * count + CENT / 2
        return
    assert bundle.base_price == unit * count
    assert CENT * count <= bundle.total_price <= bundle.base_price
    assert bundle.savings == bundle.base_price - bundle.total_price >= ZERO
    assert bundle.total_price == bundle.total_price.quantize(CENT)
    # The rounding never moves the total by more than half a cent from the exact discount.
    exact = bundle.base_price * (100 - discount) / 100
    assert abs(bundle.total_price - exact) <= CENT / 2


# --- shares ----------------------------------------------------------------------------------


def test_starter_pack_shares_are_equal() -> None:
    assert split_price(Decimal("81.00"), 5) == (Decimal("16.20"),) * 5


def test_leftover_cents_go_on_the_first_share() -> None:
    assert split_price(Decimal("10.00"), 3) == (
        Decimal("3.34"),
        Decimal("3.33"),
        Decimal("3.33"),
    )
    assert split_price(Decimal("0.05"), 3) == (Decimal("0.03"), Decimal("0.01"), Decimal("0.01"))
    assert split_price(Decimal("0.00"), 2) == (ZERO, ZERO)


def test_split_refuses_what_it_cannot_split() -> None:
    with pytest.raises(InvalidInput):
        split_price(Decimal("1.00"), 0)
    with pytest.raises(InvalidAmount):
        split_price(Decimal("-1.00"), 2)
    with pytest.raises(InvalidAmount):
        split_price(Decimal("1.005"), 2)


@given(total=amounts, count=counts)
def test_shares_sum_exactly_and_differ_only_by_the_remainder_on_the_first(
    total: Decimal, count: int
) -> None:
    shares = split_price(total, count)
    assert len(shares) == count
    assert sum(shares, ZERO) == total
    first, rest = shares[0], shares[1:]
    assert all(share == share.quantize(CENT) for share in shares)
    assert len(set(rest)) <= 1
    if rest:
        remainder = first - rest[0]
        assert ZERO <= remainder < CENT * count
        assert remainder == total - rest[0] * count


# --- refunds ---------------------------------------------------------------------------------


def test_a_refund_is_exactly_the_price_paid() -> None:
    assert refund_for(a_token(price_paid=Decimal("16.20"))) == Decimal("16.20")
    assert refund_for(a_token(price_paid=Decimal("18.00"))) == Decimal("18.00")


def test_an_activated_or_revoked_token_is_not_refunded() -> None:
    with pytest.raises(TokenAlreadyActivated):
        refund_for(a_token(activated_at=NOW, expires_at=NOW))
    with pytest.raises(TokenAlreadyRevoked):
        refund_for(a_token(revoked_at=NOW))


@given(total=amounts, count=counts, refunded=st.sets(st.integers(min_value=0, max_value=99)))
def test_refunds_never_create_money(total: Decimal, count: int, refunded: set[int]) -> None:
    """Refunding any set of a purchase's tokens returns at most what the purchase cost, and
    refunding all of them returns exactly that."""
    tokens = [a_token(price_paid=share) for share in split_price(total, count)]
    chosen = [t for i, t in enumerate(tokens) if i in refunded]
    returned = sum((refund_for(t) for t in chosen), ZERO)
    assert ZERO <= returned <= total
    assert sum((refund_for(t) for t in tokens), ZERO) == total
