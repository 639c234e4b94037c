"""Referral bonuses on every backend: held as pending shares at purchase, paid when each token
is first used, cancelled when it is refunded; and the bonuses older databases credited at
purchase, still reversed by refunds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest

from tests.shop import Shop, balance_of, events_of, ledger_of, open_account
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType, User
from zenzefi_core.domain.referrals import ReferralBonus, ReferralShare, ShareState
from zenzefi_core.domain.tokens import AccessToken
from zenzefi_core.errors import AccountDisabled
from zenzefi_core.ids import new_id
from zenzefi_core.money import ZERO
from zenzefi_core.policy import ShopPolicy
from zenzefi_core.ports import UnitOfWorkFactory
from zenzefi_core.referrals import ReferralPolicy
from zenzefi_core.services.bundles import BundleDraft, BundleOrder
from zenzefi_core.services.ledger_check import CheckLedger
from zenzefi_core.services.proxy import InvalidAccessToken
from zenzefi_core.services.tokens import TokenOrder, TokenRevocation
from zenzefi_core.services.users import GetReferralSummary, ReferralQuery
from zenzefi_core.services.wallet import post_entry

T = TransactionType
NOVEMBER = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))


@pytest.fixture
def shop(uow_factory: UnitOfWorkFactory, clock: FixedClock) -> Shop:
    return Shop(uow_factory, clock, ShopPolicy())


def shop_with(shop: Shop, policy: ReferralPolicy) -> Shop:
    return Shop(shop.uow_factory, shop.clock, ShopPolicy(referrals=policy))


def summary(shop: Shop, user_id: UUID) -> tuple[Decimal, Decimal]:
    """(bonus_earned, bonus_pending) as the referrer sees them."""
    result = GetReferralSummary(shop.uow_factory)(ReferralQuery(user_id=user_id))
    return result.bonus_earned, result.bonus_pending


def share_of(shop: Shop, token: AccessToken) -> ReferralShare | None:
    with shop.uow_factory() as uow:
        return uow.referrals.share_for_token(token.id)


def set_active(shop: Shop, user: User, active: bool) -> None:
    with shop.uow_factory() as uow:
        uow.users.set_active(user.id, active)
        uow.commit()


@contextmanager
def bought_before_shares(shop: Shop, referrer: User) -> Iterator[None]:
    """Purchases made inside hold no referral share, as on a database from before shares:
    the referrer is switched off while they are made (a purchase holds nothing for an
    inactive referrer), then on again."""
    set_active(shop, referrer, False)
    yield
    set_active(shop, referrer, True)


def assert_ledger_ok(shop: Shop) -> None:
    report = CheckLedger(shop.uow_factory)()
    assert report.ok, report.render()


def test_a_purchase_holds_the_bonus_until_the_token_is_first_used(shop: Shop) -> None:
    paul = open_account(shop.uow_factory, shop.clock, "paul", balance="5.00")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="100.00", referrer=paul)

    token = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=24)).token
    # Nothing paid while the token can still be refunded.
    assert balance_of(shop.uow_factory, paul.id) == Decimal("5.00")
    assert ledger_of(shop.uow_factory, paul.id, T.REFERRAL_BONUS) == []
    assert events_of(shop.uow_factory, "referral.bonus") == []
    assert summary(shop, paul.id) == (ZERO, Decimal("1.80"))
    share = share_of(shop, token)
    assert share is not None
    assert (share.referrer_id, share.referee_id, share.amount, share.state) == (
        paul.id,
        rita.id,
        Decimal("1.80"),
        ShareState.PENDING,
    )
    assert (share.purchase_type, share.purchase_id) == ("token", token.id)

    shop.clock.advance(timedelta(minutes=5))
    shop.use(token)
    assert balance_of(shop.uow_factory, paul.id) == Decimal("6.80")
    [bonus] = ledger_of(shop.uow_factory, paul.id, T.REFERRAL_BONUS)
    assert (bonus.amount, bonus.reference_type, bonus.reference_id) == (
        Decimal("1.80"),
        "token",
        str(token.id),
    )
    assert bonus.description == "Referral bonus from rita"
    assert bonus.created_at == shop.clock.now()
    [event] = events_of(shop.uow_factory, "referral.bonus")
    assert event.user_id == paul.id
    assert event.payload["amount"] == "1.80"
    assert event.payload["new_balance"] == "6.80"
    assert event.payload["referee_username"] == "rita"
    assert "rita@example.com" not in str(event.payload)
    assert summary(shop, paul.id) == (Decimal("1.80"), ZERO)
    share = share_of(shop, token)
    assert share is not None
    assert (share.state, share.credited, share.transaction_id, share.settled_at) == (
        ShareState.CREDITED,
        Decimal("1.80"),
        bonus.id,
        shop.clock.now(),
    )
    # The buyer paid once; further requests change nothing.
    shop.use(token)
    assert len(ledger_of(shop.uow_factory, paul.id, T.REFERRAL_BONUS)) == 1
    assert balance_of(shop.uow_factory, rita.id) == Decimal("82.00")
    assert_ledger_ok(shop)


def test_a_refund_cancels_the_pending_bonus_and_pays_nothing(shop: Shop) -> None:
    paul = open_account(shop.uow_factory, shop.clock, "paul")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="300.00", referrer=paul)
    token = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=720)).token
    assert summary(shop, paul.id) == (ZERO, Decimal("30.00"))

    revoked = shop.revoke(TokenRevocation(user_id=rita.id, token_id=token.id))
    assert (revoked.refund_amount, revoked.bonus_cancelled, revoked.clawback) == (
        Decimal("300.00"),
        Decimal("30.00"),
        None,
    )
    assert summary(shop, paul.id) == (ZERO, ZERO)
    share = share_of(shop, token)
    assert share is not None
    assert (share.state, share.credited, share.transaction_id) == (
        ShareState.CANCELLED,
        ZERO,
        None,
    )
    assert ledger_of(shop.uow_factory, paul.id) == []
    # A refunded token cannot be used, so its share can never be paid.
    with pytest.raises(InvalidAccessToken):
        shop.use(token)
    assert balance_of(shop.uow_factory, paul.id) == ZERO
    assert balance_of(shop.uow_factory, rita.id) == Decimal("300.00")
    assert events_of(shop.uow_factory, "referral.bonus") == []
    assert_ledger_ok(shop)


def test_a_bundle_pays_each_tokens_share_when_that_token_is_used(shop: Shop) -> None:
    starter = shop.seeded()["Starter Pack"]
    paul = open_account(shop.uow_factory, shop.clock, "paul")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="81.00", referrer=paul)
    bought = shop.purchase_bundle(BundleOrder(user_id=rita.id, bundle_id=starter.id))
    tokens = [issued.token for issued in bought.tokens]
    shares = [share_of(shop, token) for token in tokens]
    assert [s.amount for s in shares if s] == [Decimal("1.62")] * 5
    assert {(s.purchase_type, s.purchase_id) for s in shares if s} == {
        ("bundle_purchase", bought.purchase.id)
    }
    assert summary(shop, paul.id) == (ZERO, Decimal("8.10"))

    shop.use(tokens[1], "desk-0001")
    shop.use(tokens[3], "laptop-0002")
    assert balance_of(shop.uow_factory, paul.id) == Decimal("3.24")
    assert summary(shop, paul.id) == (Decimal("3.24"), Decimal("4.86"))
    assert [e.reference_id for e in ledger_of(shop.uow_factory, paul.id, T.REFERRAL_BONUS)] == [
        str(tokens[1].id),
        str(tokens[3].id),
    ]
    for token in (tokens[0], tokens[2], tokens[4]):
        assert shop.revoke(TokenRevocation(user_id=rita.id, token_id=token.id)).bonus_cancelled
    assert summary(shop, paul.id) == (Decimal("3.24"), ZERO)
    assert balance_of(shop.uow_factory, rita.id) == Decimal("48.60")
    # Together: what Rita spent on the two tokens she kept, and Paul's 10 % of it.
    assert balance_of(shop.uow_factory, paul.id) == Decimal("3.24")
    assert_ledger_ok(shop)


def test_an_uneven_bundle_bonus_splits_like_its_price(shop: Shop) -> None:
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
    paul = open_account(shop.uow_factory, shop.clock, "paul")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="50.00", referrer=paul)
    bought = shop.purchase_bundle(BundleOrder(user_id=rita.id, bundle_id=odd.id))
    tokens = [issued.token for issued in bought.tokens]
    assert [t.price_paid for t in tokens] == [Decimal("3.34"), Decimal("3.34"), Decimal("3.34")]
    shares = [share_of(shop, t) for t in tokens]
    # 1.00 of bonus: the first token, which carries the price's leftover cents, carries its too.
    assert [s.amount for s in shares if s] == [Decimal("0.34"), Decimal("0.33"), Decimal("0.33")]
    for token in reversed(tokens):
        shop.use(token, f"device-{token.id.hex[-8:]}")
    assert balance_of(shop.uow_factory, paul.id) == Decimal("1.00")
    assert_ledger_ok(shop)


def test_a_share_of_zero_is_not_stored(shop: Shop) -> None:
    admin = open_account(shop.uow_factory, shop.clock, "admin", superuser=True)
    tiny = shop.create_bundle(
        BundleDraft(
            actor_id=admin.id,
            name="Tiny",
            token_count=3,
            duration_hours=1,
            discount_percent=Decimal("93.33"),
        )
    )
    assert tiny.total_price == Decimal("0.20")
    paul = open_account(shop.uow_factory, shop.clock, "paul")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="5.00", referrer=paul)
    bought = shop.purchase_bundle(BundleOrder(user_id=rita.id, bundle_id=tiny.id))
    shares = [share_of(shop, issued.token) for issued in bought.tokens]
    # 0.02 of bonus over 3 tokens: 0.02, 0.00, 0.00.
    assert [s.amount if s else None for s in shares] == [Decimal("0.02"), None, None]
    for number, issued in enumerate(bought.tokens):
        shop.use(issued.token, f"device-000{number}")
    assert balance_of(shop.uow_factory, paul.id) == Decimal("0.02")
    assert_ledger_ok(shop)


def test_purchases_of_unreferred_users_and_of_the_referrer_hold_nothing(shop: Shop) -> None:
    paul = open_account(shop.uow_factory, shop.clock, "paul", balance="100.00")
    open_account(shop.uow_factory, shop.clock, "rita", referrer=paul)
    token = shop.purchase_token(TokenOrder(user_id=paul.id, duration_hours=24)).token
    assert share_of(shop, token) is None
    shop.use(token)
    assert events_of(shop.uow_factory, "referral.bonus") == []
    assert ledger_of(shop.uow_factory, paul.id, T.REFERRAL_BONUS) == []


def test_an_inactive_referrer_earns_nothing_at_purchase_or_at_first_use(shop: Shop) -> None:
    paul = open_account(shop.uow_factory, shop.clock, "paul")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="36.00", referrer=paul)
    held = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=24)).token
    set_active(shop, paul, False)
    not_held = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=24)).token
    assert share_of(shop, not_held) is None

    shop.use(held)
    share = share_of(shop, held)
    assert share is not None
    assert (share.state, share.credited) == (ShareState.FORFEITED, ZERO)
    # Reactivated later, the share stays forfeited: the token's first use has passed.
    set_active(shop, paul, True)
    shop.use(held)
    assert balance_of(shop.uow_factory, paul.id) == ZERO
    assert summary(shop, paul.id) == (ZERO, ZERO)
    assert_ledger_ok(shop)


def test_a_deactivated_referees_pending_bonus_waits_for_them(shop: Shop) -> None:
    paul = open_account(shop.uow_factory, shop.clock, "paul")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="18.00", referrer=paul)
    token = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=24)).token
    set_active(shop, rita, False)
    # A deactivated account can neither use nor refund its token: the share stays pending.
    with pytest.raises(InvalidAccessToken):
        shop.use(token)
    with pytest.raises(AccountDisabled):
        shop.revoke(TokenRevocation(user_id=rita.id, token_id=token.id))
    assert summary(shop, paul.id) == (ZERO, Decimal("1.80"))
    set_active(shop, rita, True)
    shop.use(token)
    assert summary(shop, paul.id) == (Decimal("1.80"), ZERO)
    assert_ledger_ok(shop)


def test_only_the_first_purchase_earns_when_the_policy_says_so(shop: Shop) -> None:
    shop = shop_with(shop, ReferralPolicy(first_purchase_only=True))
    paul = open_account(shop.uow_factory, shop.clock, "paul")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="200.00", referrer=paul)
    first = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=12)).token
    second = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=24)).token
    assert share_of(shop, second) is None
    assert summary(shop, paul.id) == (ZERO, Decimal("1.00"))
    # Refunding the first purchase does not make a later one "first".
    shop.revoke(TokenRevocation(user_id=rita.id, token_id=first.id))
    third = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=24)).token
    shop.use(second)
    shop.use(third, "laptop-0002")
    assert balance_of(shop.uow_factory, paul.id) == ZERO
    assert summary(shop, paul.id) == (ZERO, ZERO)


def test_purchases_below_the_minimum_earn_nothing(shop: Shop) -> None:
    shop = shop_with(shop, ReferralPolicy(minimum_purchase=Decimal("18.00")))
    paul = open_account(shop.uow_factory, shop.clock, "paul")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="200.00", referrer=paul)
    small = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=12)).token
    large = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=24)).token
    assert share_of(shop, small) is None
    shop.use(small)
    shop.use(large, "laptop-0002")
    assert balance_of(shop.uow_factory, paul.id) == Decimal("1.80")


def test_the_monthly_cap_counts_what_was_paid_in_the_month_of_use(shop: Shop) -> None:
    shop = shop_with(shop, ReferralPolicy(monthly_cap=Decimal("25.00")))
    shop.clock.set(datetime(2026, 11, 29, 12, 0, tzinfo=UTC))
    paul = open_account(shop.uow_factory, shop.clock, "paul")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="2000.00", referrer=paul)
    rob = open_account(shop.uow_factory, shop.clock, "rob", balance="2000.00", referrer=paul)

    weeks = [
        shop.purchase_token(TokenOrder(user_id=buyer.id, duration_hours=168)).token
        for buyer in (rita, rob, rita, rob)
    ]
    # Pending bonuses do not count against the cap: only payments do.
    assert summary(shop, paul.id) == (ZERO, Decimal("40.00"))
    # Buying and refunding gives nothing back under the cap, because it paid nothing.
    shop.revoke(TokenRevocation(user_id=rob.id, token_id=weeks[3].id))
    for number, token in enumerate(weeks[:3]):
        shop.use(token, f"device-000{number}")
    assert balance_of(shop.uow_factory, paul.id) == Decimal("25.00")
    paid = [share_of(shop, token) for token in weeks[:3]]
    assert [(s.state, s.credited) for s in paid if s] == [
        (ShareState.CREDITED, Decimal("10.00")),
        (ShareState.CREDITED, Decimal("10.00")),
        (ShareState.CREDITED, Decimal("5.00")),
    ]
    assert len(events_of(shop.uow_factory, "referral.bonus")) == 3
    with shop.uow_factory() as uow:
        assert uow.referrals.kept_between(paul.id, *NOVEMBER) == Decimal("25.00")

    day = shop.purchase_token(TokenOrder(user_id=rob.id, duration_hours=24)).token
    shop.use(day, "device-0004")
    share = share_of(shop, day)
    assert share is not None
    assert (share.state, share.credited) == (ShareState.FORFEITED, ZERO)

    # A new month, a new cap: the share is paid in the month its token is used.
    late = shop.purchase_token(TokenOrder(user_id=rob.id, duration_hours=168)).token
    shop.clock.advance(timedelta(days=3))
    shop.use(late, "device-0005")
    assert balance_of(shop.uow_factory, paul.id) == Decimal("35.00")
    assert_ledger_ok(shop)


# --- bonuses credited at purchase, on databases from before shares ----------------------------


def credit_at_purchase(
    shop: Shop, referrer: User, buyer: User, purchase_type: str, purchase_id: UUID, amount: str
) -> ReferralBonus:
    """What the shop did before shares: credit the bonus when the purchase is made."""
    with shop.uow_factory() as uow:
        entry = post_entry(
            uow,
            shop.clock,
            user_id=referrer.id,
            amount=Decimal(amount),
            transaction_type=T.REFERRAL_BONUS,
            description=f"Referral bonus from {buyer.username}",
            reference_type=purchase_type,
            reference_id=str(purchase_id),
        )
        bonus = ReferralBonus(
            id=new_id(),
            referrer_id=referrer.id,
            referee_id=buyer.id,
            purchase_type=purchase_type,
            purchase_id=purchase_id,
            purchase_amount=Decimal(amount) * 10,
            amount=Decimal(amount),
            transaction_id=entry.id,
            created_at=shop.clock.now(),
        )
        uow.referrals.add(bonus)
        uow.commit()
    return bonus


def test_an_older_bonus_is_still_reversed_when_its_token_is_refunded(shop: Shop) -> None:
    paul = open_account(shop.uow_factory, shop.clock, "paul", balance="5.00")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="100.00", referrer=paul)
    with bought_before_shares(shop, paul):
        token = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=24)).token
    credit_at_purchase(shop, paul, rita, "token", token.id, "1.80")
    assert summary(shop, paul.id) == (Decimal("1.80"), ZERO)
    assert_ledger_ok(shop)

    revoked = shop.revoke(TokenRevocation(user_id=rita.id, token_id=token.id))
    assert revoked.clawback is not None
    assert (revoked.clawback.taken, revoked.clawback.shortfall) == (Decimal("1.80"), ZERO)
    assert revoked.bonus_cancelled == ZERO
    assert balance_of(shop.uow_factory, paul.id) == Decimal("5.00")
    [clawback] = ledger_of(shop.uow_factory, paul.id, T.REFERRAL_CLAWBACK)
    assert (clawback.amount, clawback.reference_id) == (Decimal("-1.80"), str(token.id))
    assert summary(shop, paul.id) == (ZERO, ZERO)
    assert_ledger_ok(shop)


def test_an_older_bonus_spent_before_the_refund_is_reported_by_the_ledger_check(
    shop: Shop,
) -> None:
    paul = open_account(shop.uow_factory, shop.clock, "paul")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="18.00", referrer=paul)
    with bought_before_shares(shop, paul):
        token = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=24)).token
    credit_at_purchase(shop, paul, rita, "token", token.id, "1.80")
    shop.purchase_token(TokenOrder(user_id=paul.id, duration_hours=1))  # spends 1.00 of 1.80

    revoked = shop.revoke(TokenRevocation(user_id=rita.id, token_id=token.id))
    assert revoked.clawback is not None
    assert (revoked.clawback.taken, revoked.clawback.shortfall) == (
        Decimal("0.80"),
        Decimal("1.00"),
    )
    assert balance_of(shop.uow_factory, paul.id) == ZERO
    # The 1.00 Paul kept was paid for a purchase that was undone: money nobody paid for.
    report = CheckLedger(shop.uow_factory)()
    assert not report.ok
    assert report.discrepancies == []
    [problem] = report.problems
    assert problem.user_id == paul.id
    assert "net referral bonuses of 1.00 ZNC on rita's purchases" in problem.detail
    assert "allows 0.00 (over by 1.00)" in problem.detail
    assert "Money supply: 1 problem(s)." in report.render()


def test_an_older_bundle_bonus_is_reversed_share_by_share(shop: Shop) -> None:
    starter = shop.seeded()["Starter Pack"]
    paul = open_account(shop.uow_factory, shop.clock, "paul")
    rita = open_account(shop.uow_factory, shop.clock, "rita", balance="81.00", referrer=paul)
    with bought_before_shares(shop, paul):
        bought = shop.purchase_bundle(BundleOrder(user_id=rita.id, bundle_id=starter.id))
    credit_at_purchase(shop, paul, rita, "bundle_purchase", bought.purchase.id, "8.10")
    taken = []
    for issued in bought.tokens[:4]:
        revoked = shop.revoke(TokenRevocation(user_id=rita.id, token_id=issued.token.id))
        assert revoked.clawback is not None
        taken.append(revoked.clawback.taken)
    assert taken == [Decimal("1.62")] * 4
    assert balance_of(shop.uow_factory, paul.id) == Decimal("1.62")
    # The kept token can be used; it pays nothing more, its share was paid at purchase.
    shop.use(bought.tokens[4].token)
    assert balance_of(shop.uow_factory, paul.id) == Decimal("1.62")
    assert_ledger_ok(shop)
