"""The money-supply audit's rules (`zenzefi_core.money_audit`), on facts made by hand."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zenzefi_core.domain import TransactionType
from zenzefi_core.ids import new_id
from zenzefi_core.money import ZERO, quantize
from zenzefi_core.money_audit import (
    EntryFact,
    MoneyFacts,
    PaymentFact,
    PurchaseFact,
    TokenFact,
    UserFact,
    audit_money,
)
from zenzefi_core.pricing import split_price
from zenzefi_core.referrals import bonus_shares

T = TransactionType
TEN = Decimal("10")
REFERRER, BUYER, STRANGER = UUID(int=1), UUID(int=2), UUID(int=3)
USERS = [
    UserFact(REFERRER, "paul", None),
    UserFact(BUYER, "rita", REFERRER),
    UserFact(STRANGER, "sam", None),
]


def entry(user: UUID, kind: TransactionType, amount: str, ref_type: str, ref: object) -> EntryFact:
    return EntryFact(new_id(), user, kind, Decimal(amount), ref_type, str(ref))


def facts(
    entries: list[EntryFact],
    tokens: list[TokenFact] = (),  # type: ignore[assignment]
    bundles: list[PurchaseFact] = (),  # type: ignore[assignment]
    payments: list[PaymentFact] = (),  # type: ignore[assignment]
) -> MoneyFacts:
    return MoneyFacts(USERS, entries, list(tokens), list(bundles), list(payments), 0)


def problems(money: MoneyFacts, adjustments: dict[UUID, str] | None = None) -> list[str]:
    return [p.detail for p in audit_money(money, adjustments or {}, TEN)]


TOKEN = TokenFact(UUID(int=100), BUYER, Decimal("18.00"), None, revoked=False)
REVOKED = TokenFact(UUID(int=101), BUYER, Decimal("18.00"), None, revoked=True)
PAYMENT = PaymentFact(UUID(int=200), BUYER, Decimal("50.00"), succeeded=True)
FAILED = PaymentFact(UUID(int=201), BUYER, Decimal("50.00"), succeeded=False)


def test_entries_with_their_causes_pass() -> None:
    audit = new_id()
    money = facts(
        [
            entry(BUYER, T.DEPOSIT, "50.00", "payment", PAYMENT.id),
            entry(BUYER, T.ADJUSTMENT, "-1.00", "audit_log", audit),
            entry(BUYER, T.PURCHASE, "-18.00", "token", TOKEN.id),
            entry(BUYER, T.PURCHASE, "-18.00", "token", REVOKED.id),
            entry(BUYER, T.REFUND, "18.00", "token", REVOKED.id),
            entry(REFERRER, T.REFERRAL_BONUS, "1.80", "token", TOKEN.id),
            entry(STRANGER, T.DEPOSIT, "5.00", "card", "outside"),
        ],
        tokens=[TOKEN, REVOKED],
        payments=[PAYMENT],
    )
    assert problems(money, {audit: str(BUYER)}) == []


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (entry(BUYER, T.DEPOSIT, "50.00", "payment", UUID(int=9)), "no such payment"),
        (entry(STRANGER, T.DEPOSIT, "50.00", "payment", PAYMENT.id), "someone else's"),
        (entry(BUYER, T.DEPOSIT, "50.00", "payment", FAILED.id), "did not succeed"),
        (entry(BUYER, T.DEPOSIT, "60.00", "payment", PAYMENT.id), "was for 50.00"),
        (entry(BUYER, T.DEPOSIT, "50.00", "payment", "not-an-id"), "not an id"),
        (entry(BUYER, T.DEPOSIT, "50.00", "token", TOKEN.id), "cannot come from a token"),
        (entry(BUYER, T.ADJUSTMENT, "5.00", "audit_log", UUID(int=9)), "no balance adjustment"),
        (entry(BUYER, T.PURCHASE, "-18.00", "token", UUID(int=9)), "no such token"),
        (entry(STRANGER, T.PURCHASE, "-18.00", "token", TOKEN.id), "someone else's"),
        (entry(BUYER, T.PURCHASE, "-1.00", "token", TOKEN.id), "cost 18.00"),
        (entry(BUYER, T.REFUND, "18.00", "token", TOKEN.id), "was not revoked"),
        (entry(STRANGER, T.REFERRAL_BONUS, "1.80", "token", TOKEN.id), "not this wallet's"),
        (entry(REFERRER, T.REFERRAL_BONUS, "1.80", "bundle_purchase", UUID(int=9)), "no such"),
    ],
)
def test_an_entry_without_its_cause_is_reported(bad: EntryFact, why: str) -> None:
    money = facts([bad], tokens=[TOKEN, REVOKED], payments=[PAYMENT, FAILED])
    found = problems(money)
    assert len(found) == 1
    assert why in found[0]
    assert str(bad.id) in found[0]


def test_a_cause_booked_twice_is_reported() -> None:
    refund = entry(BUYER, T.REFUND, "18.00", "token", REVOKED.id)
    again = entry(BUYER, T.REFUND, "18.00", "token", REVOKED.id)
    found = problems(facts([refund, again], tokens=[REVOKED]))
    assert len(found) == 1
    assert "already booked as a refund" in found[0]
    assert str(again.id) in found[0]


def test_an_operators_adjustment_must_name_this_wallet() -> None:
    audit = new_id()
    money = facts([entry(BUYER, T.ADJUSTMENT, "5.00", "audit_log", audit)])
    assert problems(money, {audit: str(BUYER)}) == []
    assert "adjusted another wallet" in problems(money, {audit: str(STRANGER)})[0]


def test_a_bonus_on_a_refunded_token_is_money_from_nothing() -> None:
    money = facts(
        [entry(REFERRER, T.REFERRAL_BONUS, "1.80", "token", REVOKED.id)], tokens=[REVOKED]
    )
    [found] = problems(money)
    assert found == (
        "net referral bonuses of 1.80 ZNC on rita's purchases, but 10 % of what rita bought "
        "and kept allows 0.00 (over by 1.80)"
    )
    clawed = entry(REFERRER, T.REFERRAL_CLAWBACK, "-1.80", "token", REVOKED.id)
    assert problems(facts([*money.entries, clawed], tokens=[REVOKED])) == []


@given(
    cents=st.integers(min_value=1, max_value=500_000),
    count=st.integers(min_value=1, max_value=20),
    data=st.data(),
)
def test_a_bundles_bonus_may_be_paid_on_the_tokens_kept_and_not_a_cent_more(
    cents: int, count: int, data: st.DataObject
) -> None:
    total = Decimal(cents) / 100
    purchase = PurchaseFact(new_id(), BUYER, total)
    prices = split_price(total, count)
    refunded = data.draw(st.lists(st.booleans(), min_size=count, max_size=count))
    tokens = sorted(
        (
            TokenFact(new_id(), BUYER, price, purchase.id, revoked)
            for price, revoked in zip(prices, refunded, strict=True)
        ),
        key=lambda t: t.id,
    )
    shares = bonus_shares(quantize(total / TEN), count)
    # What the shop pays: each used token's share, named by the token.
    paid = [
        entry(REFERRER, T.REFERRAL_BONUS, str(share), "token", token.id)
        for token, share in zip(tokens, shares, strict=True)
        if share > ZERO and not token.revoked
    ]
    assert problems(facts(paid, tokens=tokens, bundles=[purchase])) == []

    partly = 0 < sum(refunded) < count
    slack = Decimal("0.01") * count if partly else ZERO
    extra = slack + Decimal("0.01")
    over = entry(REFERRER, T.REFERRAL_BONUS, str(extra), "bundle_purchase", purchase.id)
    [found] = problems(facts([*paid, over], tokens=tokens, bundles=[purchase]))
    assert "on rita's purchases" in found
