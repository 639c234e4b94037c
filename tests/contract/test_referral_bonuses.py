"""Referral bonuses on purchases and their clawback on refunds, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.shop import Shop, balance_of, events_of, ledger_of, open_account
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType
from zenzefi_core.money import ZERO
from zenzefi_core.policy import ShopPolicy
from zenzefi_core.ports import UnitOfWorkFactory
from zenzefi_core.referrals import ReferralPolicy
from zenzefi_core.services.bundles import BundleDraft, BundleOrder
from zenzefi_core.services.ledger_check import CheckLedger
from zenzefi_core.services.tokens import TokenOrder, TokenRevocation
from zenzefi_core.services.users import GetReferralSummary, ReferralQuery

T = TransactionType


@pytest.fixture
def shop(uow_factory: UnitOfWorkFactory, clock: FixedClock) -> Shop:
    return Shop(uow_factory, clock, ShopPolicy())


def shop_with(shop: Shop, policy: ReferralPolicy) -> Shop:
    return Shop(shop.uow_factory, shop.clock, ShopPolicy(referrals=policy))


def earned(shop: Shop, user_id) -> Decimal:
    return GetReferralSummary(shop.uow_factory)(ReferralQuery(user_id=user_id)).bonus_earned


def test_a_referrer_earns_ten_percent_and_loses_it_on_refund(shop: Shop) -> None:
    paul = open_account(shop.uow_factory, shop.clock, "paul", balance="5.00")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="100.00", referrer=paul)

    token = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=24)).token
    assert balance_of(shop.uow_factory, paul.id) == Decimal("6.80")
    [bonus] = ledger_of(shop.uow_factory, paul.id, T.REFERRAL_BONUS)
    assert (bonus.amount, bonus.reference_type, bonus.reference_id) == (
        Decimal("1.80"),
        "token",
        str(token.id),
    )
    assert bonus.description == "Referral bonus from rita"
    [event] = events_of(shop.uow_factory, "referral.bonus")
    assert event.user_id == paul.id
    assert event.payload["amount"] == "1.80"
    assert event.payload["referee_username"] == "rita"
    assert "rita@example.com" not in str(event.payload)
    summary = GetReferralSummary(shop.uow_factory)(ReferralQuery(user_id=paul.id))
    assert (summary.total_referrals, summary.bonus_earned) == (1, Decimal("1.80"))
    assert [r.username for r in summary.referees] == ["rita"]
    with shop.uow_factory() as uow:
        record = uow.referrals.for_purchase(token.id)
    assert record is not None
    assert (record.referrer_id, record.referee_id, record.amount) == (
        paul.id,
        rita.id,
        Decimal("1.80"),
    )
    assert record.transaction_id == bonus.id

    revoked = shop.revoke(TokenRevocation(user_id=rita.id, token_id=token.id))
    assert revoked.clawback is not None
    assert (revoked.clawback.taken, revoked.clawback.shortfall) == (Decimal("1.80"), ZERO)
    assert balance_of(shop.uow_factory, paul.id) == Decimal("5.00")
    assert balance_of(shop.uow_factory, rita.id) == Decimal("100.00")
    [clawback] = ledger_of(shop.uow_factory, paul.id, T.REFERRAL_CLAWBACK)
    assert (clawback.amount, clawback.reference_type, clawback.reference_id) == (
        Decimal("-1.80"),
        "token",
        str(token.id),
    )
    assert earned(shop, paul.id) == Decimal("0.00")
    with shop.uow_factory() as uow:
        record = uow.referrals.for_purchase(token.id)
    assert record is not None
    assert (record.clawed_back, record.shortfall, record.outstanding) == (
        Decimal("1.80"),
        ZERO,
        ZERO,
    )
    assert CheckLedger(shop.uow_factory)().ok


def test_a_bundle_earns_its_bonus_once_and_each_refund_reverses_its_share(shop: Shop) -> None:
    starter = shop.seeded()["Starter Pack"]
    paul = open_account(shop.uow_factory, shop.clock, "paul")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="81.00", referrer=paul)
    bought = shop.purchase_bundle(BundleOrder(user_id=rita.id, bundle_id=starter.id))
    [bonus] = ledger_of(shop.uow_factory, paul.id, T.REFERRAL_BONUS)
    assert (bonus.amount, bonus.reference_type, bonus.reference_id) == (
        Decimal("8.10"),
        "bundle_purchase",
        str(bought.purchase.id),
    )
    taken = []
    for issued in bought.tokens:
        revoked = shop.revoke(TokenRevocation(user_id=rita.id, token_id=issued.token.id))
        assert revoked.clawback is not None
        taken.append(revoked.clawback.taken)
    assert taken == [Decimal("1.62")] * 5
    assert balance_of(shop.uow_factory, paul.id) == Decimal("0.00")
    assert balance_of(shop.uow_factory, rita.id) == Decimal("81.00")
    assert earned(shop, paul.id) == Decimal("0.00")
    assert CheckLedger(shop.uow_factory)().ok


def test_an_uneven_bundle_bonus_is_clawed_back_exactly_in_any_order(shop: Shop) -> None:
    admin = open_account(shop.uow_factory, shop.clock, "admin", superuser=True)
    odd = shop.create_bundle(
        BundleDraft(
            actor_id=admin.id,
            name="Odd",
            token_count=3,
            duration_hours=12,
            discount_percent=Decimal("66.6"),
        )
    )
    assert odd.total_price == Decimal("10.02")
    paul = open_account(shop.uow_factory, shop.clock, "paul", balance="50.00")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="50.00", referrer=paul)
    bought = shop.purchase_bundle(BundleOrder(user_id=rita.id, bundle_id=odd.id))
    assert balance_of(shop.uow_factory, paul.id) == Decimal("51.00")  # 1.00 of bonus
    # Refunding the last token first, the first (with the leftover cent) last.
    taken = [
        shop.revoke(TokenRevocation(user_id=rita.id, token_id=i.token.id)).clawback
        for i in reversed(bought.tokens)
    ]
    assert [c.taken for c in taken if c] == [Decimal("0.33"), Decimal("0.33"), Decimal("0.34")]
    assert balance_of(shop.uow_factory, paul.id) == Decimal("50.00")
    assert balance_of(shop.uow_factory, rita.id) == Decimal("50.00")


def test_a_clawback_never_takes_the_referrer_below_zero(shop: Shop) -> None:
    paul = open_account(shop.uow_factory, shop.clock, "paul")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="18.00", referrer=paul)
    token = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=24)).token
    shop.purchase_token(TokenOrder(user_id=paul.id, duration_hours=1))  # spends 1.00 of 1.80

    revoked = shop.revoke(TokenRevocation(user_id=rita.id, token_id=token.id))
    assert revoked.clawback is not None
    assert (revoked.clawback.owed, revoked.clawback.taken, revoked.clawback.shortfall) == (
        Decimal("1.80"),
        Decimal("0.80"),
        Decimal("1.00"),
    )
    assert balance_of(shop.uow_factory, paul.id) == Decimal("0.00")
    assert balance_of(shop.uow_factory, rita.id) == Decimal("18.00")
    [clawback] = ledger_of(shop.uow_factory, paul.id, T.REFERRAL_CLAWBACK)
    assert clawback.amount == Decimal("-0.80")
    assert "1.80 ZNC owed, 1.00 ZNC not recovered" in clawback.description
    with shop.uow_factory() as uow:
        record = uow.referrals.for_purchase(token.id)
    assert record is not None
    assert (record.clawed_back, record.shortfall, record.outstanding) == (
        Decimal("0.80"),
        Decimal("1.00"),
        Decimal("0.00"),
    )
    # What the referrer could not repay stays visible as kept: 1.80 earned, 0.80 returned.
    assert earned(shop, paul.id) == Decimal("1.00")
    assert CheckLedger(shop.uow_factory)().ok


def test_a_clawback_from_an_empty_wallet_is_all_shortfall(shop: Shop) -> None:
    paul = open_account(shop.uow_factory, shop.clock, "paul", balance="1.20")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="18.00", referrer=paul)
    token = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=24)).token
    shop.purchase_token(TokenOrder(user_id=paul.id, duration_hours=1))
    shop.purchase_token(TokenOrder(user_id=paul.id, duration_hours=1))
    shop.purchase_token(TokenOrder(user_id=paul.id, duration_hours=1))
    assert balance_of(shop.uow_factory, paul.id) == Decimal("0.00")  # 1.20 + 1.80 - 3 x 1.00
    revoked = shop.revoke(TokenRevocation(user_id=rita.id, token_id=token.id))
    assert revoked.clawback is not None
    assert (revoked.clawback.taken, revoked.clawback.shortfall) == (ZERO, Decimal("1.80"))
    assert ledger_of(shop.uow_factory, paul.id, T.REFERRAL_CLAWBACK) == []
    assert balance_of(shop.uow_factory, rita.id) == Decimal("18.00")


def test_purchases_of_unreferred_users_and_of_the_referrer_earn_nothing(shop: Shop) -> None:
    paul = open_account(shop.uow_factory, shop.clock, "paul", balance="100.00")
    open_account(shop.uow_factory, shop.clock, "rita", referrer=paul)
    shop.purchase_token(TokenOrder(user_id=paul.id, duration_hours=24))
    assert events_of(shop.uow_factory, "referral.bonus") == []
    with shop.uow_factory() as uow:
        assert (
            uow.ledger.list_for_user(
                paul.id, limit=10, offset=0, transaction_type=T.REFERRAL_BONUS
            ).items
            == []
        )


def test_an_inactive_referrer_earns_nothing(shop: Shop) -> None:
    paul = open_account(shop.uow_factory, shop.clock, "paul")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="18.00", referrer=paul)
    with shop.uow_factory() as uow:
        uow.users.set_active(paul.id, False)
        uow.commit()
    shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=24))
    assert balance_of(shop.uow_factory, paul.id) == Decimal("0.00")


def test_only_the_first_purchase_earns_when_the_policy_says_so(shop: Shop) -> None:
    shop = shop_with(shop, ReferralPolicy(first_purchase_only=True))
    paul = open_account(shop.uow_factory, shop.clock, "paul")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="200.00", referrer=paul)
    first = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=12)).token
    shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=24))
    assert balance_of(shop.uow_factory, paul.id) == Decimal("1.00")
    # Refunding the first purchase does not make a later one "first".
    shop.revoke(TokenRevocation(user_id=rita.id, token_id=first.id))
    shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=24))
    assert balance_of(shop.uow_factory, paul.id) == Decimal("0.00")


def test_purchases_below_the_minimum_earn_nothing(shop: Shop) -> None:
    shop = shop_with(shop, ReferralPolicy(minimum_purchase=Decimal("18.00")))
    paul = open_account(shop.uow_factory, shop.clock, "paul")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="200.00", referrer=paul)
    shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=12))
    assert balance_of(shop.uow_factory, paul.id) == Decimal("0.00")
    shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=24))
    assert balance_of(shop.uow_factory, paul.id) == Decimal("1.80")


def test_the_monthly_cap_counts_what_is_kept_this_month(shop: Shop) -> None:
    shop = shop_with(shop, ReferralPolicy(monthly_cap=Decimal("25.00")))
    shop.clock.set(datetime(2026, 11, 29, 12, 0, tzinfo=UTC))
    paul = open_account(shop.uow_factory, shop.clock, "paul")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="2000.00", referrer=paul)
    rob = open_account(shop.uow_factory, shop.clock, "rob", balance="2000.00", referrer=paul)

    week = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=168)).token  # 10.00
    shop.purchase_token(TokenOrder(user_id=rob.id, duration_hours=168))  # 10.00
    shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=168))  # 5.00, capped
    shop.purchase_token(TokenOrder(user_id=rob.id, duration_hours=24))  # nothing left
    assert balance_of(shop.uow_factory, paul.id) == Decimal("25.00")
    assert len(events_of(shop.uow_factory, "referral.bonus")) == 3

    # A refund gives back room under the cap: the month's kept total is 15.00 again.
    shop.revoke(TokenRevocation(user_id=rita.id, token_id=week.id))
    with shop.uow_factory() as uow:
        kept = uow.referrals.kept_between(
            paul.id, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
        )
    assert kept == Decimal("15.00")
    shop.purchase_token(TokenOrder(user_id=rob.id, duration_hours=720))  # 30.00 -> 10.00
    assert balance_of(shop.uow_factory, paul.id) == Decimal("25.00")

    # A new month, a new cap.
    shop.clock.advance(timedelta(days=3))
    shop.purchase_token(TokenOrder(user_id=rob.id, duration_hours=168))
    assert balance_of(shop.uow_factory, paul.id) == Decimal("35.00")
    assert CheckLedger(shop.uow_factory)().ok
