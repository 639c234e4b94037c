"""The token, bundle and referral repositories behave alike on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest

from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType, User
from zenzefi_core.domain.bundles import BundlePurchase, TokenBundle
from zenzefi_core.domain.referrals import ReferralBonus
from zenzefi_core.domain.tokens import AccessToken, TokenScope
from zenzefi_core.errors import Conflict
from zenzefi_core.ids import new_id
from zenzefi_core.ports import UnitOfWorkFactory
from zenzefi_core.security import new_access_token
from zenzefi_core.services.wallet import post_entry

if TYPE_CHECKING:
    from tests.conftest import UserMaker

MOMENT = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def a_token(user: User, **changes: object) -> AccessToken:
    secret = new_access_token()
    token = AccessToken(
        id=new_id(),
        user_id=user.id,
        token_hash=secret.hash,
        token_prefix=secret.prefix,
        duration_hours=24,
        scope=TokenScope.FULL,
        price_paid=Decimal("18.00"),
        created_at=MOMENT,
    )
    return dataclasses.replace(token, **changes)  # type: ignore[arg-type]


def a_bundle(name: str, total: str, *, active: bool = True) -> TokenBundle:
    return TokenBundle(
        id=new_id(),
        name=name,
        description=f"{name} described",
        token_count=5,
        duration_hours=24,
        scope=TokenScope.CERTIFICATES_ONLY,
        discount_percent=Decimal("12.50"),
        base_price=Decimal(total) + 10,
        total_price=Decimal(total),
        is_active=active,
        created_at=MOMENT,
    )


def store(uow_factory: UnitOfWorkFactory, *tokens: AccessToken) -> None:
    with uow_factory() as uow:
        uow.tokens.add_all(list(tokens))
        uow.commit()


def fetch(uow_factory: UnitOfWorkFactory, token: AccessToken) -> AccessToken | None:
    with uow_factory() as uow:
        return uow.tokens.get(token.id)


# --- tokens ----------------------------------------------------------------------------------


def test_tokens_round_trip_every_field(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    alice = make_user(uow_factory, "alice")
    plain = a_token(alice, price_paid=Decimal("16.20"), scope=TokenScope.CERTIFICATES_ONLY)
    used = a_token(
        alice,
        activated_at=MOMENT + timedelta(minutes=1),
        expires_at=MOMENT + timedelta(hours=24, minutes=1),
        revoked_at=MOMENT + timedelta(hours=2),
    )
    store(uow_factory, plain, used)
    with uow_factory() as uow:
        assert uow.tokens.get(plain.id) == plain
        assert uow.tokens.get(used.id) == used
        assert uow.tokens.get_by_hash(used.token_hash) == used
        assert uow.tokens.get(new_id()) is None
        assert uow.tokens.get_by_hash("f" * 64) is None
        uow.tokens.add_all([])


def test_a_token_hash_is_unique(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    alice = make_user(uow_factory, "alice")
    first = a_token(alice)
    store(uow_factory, first)
    with pytest.raises(Conflict):
        store(uow_factory, a_token(alice, token_hash=first.token_hash))
    with pytest.raises(Conflict):
        store(uow_factory, a_token(alice, id=first.id))
    with uow_factory() as uow:
        assert uow.tokens.list_for_user(
            alice.id, now=MOMENT, active_only=False, limit=10, offset=0
        ).items == [first]


def test_activation_starts_the_clock_once(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    alice = make_user(uow_factory, "alice")
    token = a_token(alice, duration_hours=12)
    revoked = a_token(alice, revoked_at=MOMENT)
    store(uow_factory, token, revoked)
    at = MOMENT + timedelta(minutes=7)
    with uow_factory() as uow:
        activated = uow.tokens.activate(token.id, at)
        assert uow.tokens.activate(token.id, at + timedelta(minutes=1)) is None
        assert uow.tokens.activate(revoked.id, at) is None
        assert uow.tokens.activate(new_id(), at) is None
        uow.commit()
    assert activated == dataclasses.replace(
        token, activated_at=at, expires_at=at + timedelta(hours=12)
    )
    assert fetch(uow_factory, token) == activated
    assert fetch(uow_factory, revoked) == revoked
    with uow_factory() as uow:
        assert not uow.tokens.revoke(token.id, at)
        assert not uow.tokens.revoke(revoked.id, at)
        assert not uow.tokens.revoke(new_id(), at)


def test_an_uncommitted_activation_is_rolled_back(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    alice = make_user(uow_factory, "alice")
    token = a_token(alice)
    store(uow_factory, token)
    with uow_factory() as uow:
        assert uow.tokens.activate(token.id, MOMENT) is not None
    assert fetch(uow_factory, token) == token


def test_racing_first_requests_activate_a_token_exactly_once(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    alice = make_user(uow_factory, "alice")
    token = a_token(alice)
    store(uow_factory, token)
    barrier = threading.Barrier(8)
    winners: list[datetime] = []
    errors: list[BaseException] = []

    def first_request(n: int) -> None:
        at = MOMENT + timedelta(seconds=n)
        barrier.wait()
        try:
            with uow_factory() as uow:
                if uow.tokens.activate(token.id, at) is not None:
                    winners.append(at)
                uow.commit()
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=first_request, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(winners) == 1
    stored = fetch(uow_factory, token)
    assert stored is not None
    assert stored.activated_at == winners[0]
    assert stored.expires_at == winners[0] + timedelta(hours=24)


def test_revocation_and_activation_cannot_both_win(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    alice = make_user(uow_factory, "alice")
    tokens = [a_token(alice) for _ in range(6)]
    store(uow_factory, *tokens)
    barrier = threading.Barrier(12)
    outcomes: dict[str, list[bool]] = {"activate": [], "revoke": []}

    def act(kind: str, token: AccessToken) -> None:
        barrier.wait()
        with uow_factory() as uow:
            if kind == "activate":
                won = uow.tokens.activate(token.id, MOMENT) is not None
            else:
                won = uow.tokens.revoke(token.id, MOMENT)
            uow.commit()
        outcomes[kind].append(won)

    threads = [
        threading.Thread(target=act, args=(kind, token))
        for token in tokens
        for kind in ("activate", "revoke")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes["activate"].count(True) + outcomes["revoke"].count(True) == len(tokens)
    for token in tokens:
        stored = fetch(uow_factory, token)
        assert stored is not None
        assert (stored.activated_at is None) != (stored.revoked_at is None)


def test_a_purchase_lists_its_tokens_in_issue_order(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    alice = make_user(uow_factory, "alice")
    bundle = a_bundle("Pack", "81.00")
    purchase = BundlePurchase(
        id=new_id(),
        user_id=alice.id,
        bundle_id=bundle.id,
        bundle_name=bundle.name,
        token_count=3,
        duration_hours=24,
        scope=TokenScope.CERTIFICATES_ONLY,
        total_price=Decimal("10.00"),
        created_at=MOMENT,
    )
    tokens = [a_token(alice, bundle_purchase_id=purchase.id) for _ in range(3)]
    with uow_factory() as uow:
        uow.bundles.add(bundle)
        uow.bundles.add_purchase(purchase)
        # Stored out of order: the listing still follows the ids, which follow issue order.
        uow.tokens.add_all([tokens[2], tokens[0], tokens[1]])
        uow.tokens.add_all([a_token(alice)])
        uow.commit()
    with uow_factory() as uow:
        assert uow.bundles.get_purchase(purchase.id) == purchase
        assert uow.bundles.get_purchase(new_id()) is None
        assert uow.tokens.list_for_purchase(purchase.id) == tokens
        assert uow.tokens.list_for_purchase(new_id()) == []


# --- bundles ---------------------------------------------------------------------------------


def test_the_catalogue_is_ordered_by_price_and_filtered_to_bundles_on_sale(
    uow_factory: UnitOfWorkFactory,
) -> None:
    cheap = a_bundle("Cheap", "10.00")
    hidden = a_bundle("Hidden", "5.00", active=False)
    dear = a_bundle("Dear", "1600.00")
    tie_b = a_bundle("B tie", "81.00")
    tie_a = a_bundle("A tie", "81.00")
    with uow_factory() as uow:
        assert uow.bundles.count() == 0
        uow.bundles.lock_catalogue()
        for bundle in (dear, tie_b, cheap, hidden, tie_a):
            uow.bundles.add(bundle)
        uow.commit()
    with uow_factory() as uow:
        assert uow.bundles.count() == 5
        assert uow.bundles.catalogue(active_only=True) == [cheap, tie_a, tie_b, dear]
        assert uow.bundles.catalogue(active_only=False) == [hidden, cheap, tie_a, tie_b, dear]
        assert uow.bundles.get(cheap.id) == cheap
        assert uow.bundles.get(new_id()) is None


def test_a_bundle_update_saves_everything_but_its_identity(uow_factory: UnitOfWorkFactory) -> None:
    bundle = a_bundle("Pack", "81.00")
    with uow_factory() as uow:
        uow.bundles.add(bundle)
        uow.commit()
    changed = dataclasses.replace(
        bundle,
        name="Renamed",
        description=None,
        token_count=2,
        duration_hours=1,
        scope=TokenScope.FULL,
        discount_percent=Decimal("0.00"),
        base_price=Decimal("2.00"),
        total_price=Decimal("2.00"),
        is_active=False,
        created_at=MOMENT + timedelta(days=1),
    )
    with uow_factory() as uow:
        uow.bundles.update(changed)
        uow.bundles.update(a_bundle("Unknown", "1.00"))
        uow.commit()
    with uow_factory() as uow:
        assert uow.bundles.get(bundle.id) == dataclasses.replace(changed, created_at=MOMENT)
        assert uow.bundles.count() == 1


# --- referral bonuses ------------------------------------------------------------------------


def bonus_for(
    uow_factory: UnitOfWorkFactory,
    clock: FixedClock,
    referrer: User,
    referee: User,
    amount: str,
    at: datetime,
) -> ReferralBonus:
    """A bonus record with a real ledger entry behind it, as the use cases write them."""
    purchase_id = new_id()
    with uow_factory() as uow:
        entry = post_entry(
            uow,
            clock,
            user_id=referrer.id,
            amount=Decimal(amount),
            transaction_type=TransactionType.REFERRAL_BONUS,
            description="Referral bonus",
            reference_type="token",
            reference_id=str(purchase_id),
        )
        bonus = ReferralBonus(
            id=new_id(),
            referrer_id=referrer.id,
            referee_id=referee.id,
            purchase_type="token",
            purchase_id=purchase_id,
            purchase_amount=Decimal(amount) * 10,
            amount=Decimal(amount),
            transaction_id=entry.id,
            created_at=at,
        )
        uow.referrals.add(bonus)
        uow.commit()
    return bonus


def test_bonuses_are_found_by_purchase_and_unique_per_purchase(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    paul = make_user(uow_factory, "paul")
    rita = make_user(uow_factory, "rita")
    bonus = bonus_for(uow_factory, clock, paul, rita, "1.80", MOMENT)
    with uow_factory() as uow:
        assert uow.referrals.for_purchase(bonus.purchase_id) == bonus
        assert uow.referrals.for_purchase(new_id()) is None
    with uow_factory() as uow:
        [entry] = uow.ledger.list_for_user(
            paul.id, limit=10, offset=0, transaction_type=TransactionType.REFERRAL_BONUS
        ).items
    with pytest.raises(Conflict), uow_factory() as uow:
        uow.referrals.add(dataclasses.replace(bonus, id=new_id(), transaction_id=entry.id))


def test_clawbacks_accumulate_but_never_beyond_the_bonus(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    paul = make_user(uow_factory, "paul")
    rita = make_user(uow_factory, "rita")
    bonus = bonus_for(uow_factory, clock, paul, rita, "0.30", MOMENT)
    with uow_factory() as uow:
        assert uow.referrals.record_clawback(
            bonus.id, taken=Decimal("0.10"), shortfall=Decimal("0.00")
        )
        assert uow.referrals.record_clawback(
            bonus.id, taken=Decimal("0.10"), shortfall=Decimal("0.05")
        )
        # 0.05 left: 0.06 is too much and changes nothing.
        assert not uow.referrals.record_clawback(
            bonus.id, taken=Decimal("0.01"), shortfall=Decimal("0.05")
        )
        assert uow.referrals.record_clawback(
            bonus.id, taken=Decimal("0.00"), shortfall=Decimal("0.05")
        )
        assert not uow.referrals.record_clawback(
            new_id(), taken=Decimal("0.01"), shortfall=Decimal("0.00")
        )
        uow.commit()
    with uow_factory() as uow:
        stored = uow.referrals.for_purchase(bonus.purchase_id)
    assert stored is not None
    assert (stored.clawed_back, stored.shortfall, stored.outstanding) == (
        Decimal("0.20"),
        Decimal("0.10"),
        Decimal("0.00"),
    )


def test_kept_bonuses_are_summed_over_a_half_open_window(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    paul = make_user(uow_factory, "paul")
    other = make_user(uow_factory, "other")
    rita = make_user(uow_factory, "rita")
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    bonus_for(uow_factory, clock, paul, rita, "0.10", start - timedelta(microseconds=1))
    bonus_for(uow_factory, clock, paul, rita, "1.10", start)
    clawed = bonus_for(uow_factory, clock, paul, rita, "2.20", MOMENT)
    bonus_for(uow_factory, clock, paul, rita, "0.30", end - timedelta(microseconds=1))
    bonus_for(uow_factory, clock, paul, rita, "5.00", end)
    bonus_for(uow_factory, clock, other, rita, "7.00", MOMENT)
    with uow_factory() as uow:
        assert uow.referrals.kept_between(paul.id, start, end) == Decimal("3.60")
        uow.referrals.record_clawback(clawed.id, taken=Decimal("1.00"), shortfall=Decimal("0.70"))
        # Money the referrer could not pay back is still money they kept.
        assert uow.referrals.kept_between(paul.id, start, end) == Decimal("2.60")
        assert uow.referrals.kept_between(rita.id, start, end) == Decimal("0.00")
        uow.referrals.lock_referrer(paul.id)
