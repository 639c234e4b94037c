"""The bundle catalogue, buying bundles and the operator's changes, on every backend."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from tests.shop import Shop, balance_of, events_of, ledger_of, open_account
from zenzefi_core.bootstrap import Core
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType
from zenzefi_core.domain.tokens import TokenScope
from zenzefi_core.errors import (
    BundleNotFound,
    IdempotencyConflict,
    InsufficientBalance,
    InvalidDuration,
    InvalidInput,
    PermissionDenied,
)
from zenzefi_core.ids import new_id
from zenzefi_core.policy import ShopPolicy
from zenzefi_core.ports import UnitOfWorkFactory
from zenzefi_core.pricing import PriceTable
from zenzefi_core.services.bundles import (
    BundleChange,
    BundleDraft,
    BundleLookup,
    BundleOrder,
    BundleQuery,
    BundleRef,
    ListBundles,
    SeedDefaultBundles,
)
from zenzefi_core.services.ledger_check import CheckLedger
from zenzefi_core.services.tokens import TokenQuery, TokenRevocation
from zenzefi_core.settings import DatabaseSettings, Settings


@pytest.fixture
def shop(uow_factory: UnitOfWorkFactory, clock: FixedClock) -> Shop:
    return Shop(uow_factory, clock, ShopPolicy())


def test_a_new_database_gets_the_default_bundles_once(shop: Shop) -> None:
    seeded = shop.seed()
    assert [(b.name, b.token_count, b.duration_hours, b.discount_percent) for b in seeded] == [
        ("Starter Pack", 5, 24, Decimal("10.00")),
        ("Pro Bundle", 10, 24, Decimal("15.00")),
        ("Ultimate Package", 20, 168, Decimal("20.00")),
    ]
    catalogue = shop.list_bundles(BundleQuery())
    assert [(b.name, b.base_price, b.total_price) for b in catalogue] == [
        ("Starter Pack", Decimal("90.00"), Decimal("81.00")),
        ("Pro Bundle", Decimal("180.00"), Decimal("153.00")),
        ("Ultimate Package", Decimal("2000.00"), Decimal("1600.00")),
    ]
    assert catalogue == seeded
    assert all(b.scope is TokenScope.FULL and b.is_active for b in catalogue)

    assert shop.seed() == []
    # Withdrawn bundles are still bundles: the operator's catalogue is never re-seeded.
    admin = open_account(shop.uow_factory, shop.clock, "admin", superuser=True)
    for bundle in catalogue:
        shop.deactivate_bundle(BundleRef(actor_id=admin.id, bundle_id=bundle.id))
    assert shop.seed() == []
    assert shop.list_bundles(BundleQuery()) == []
    assert len(shop.list_bundles(BundleQuery(active_only=False, actor_id=admin.id))) == 3


def test_seeding_skips_defaults_whose_duration_is_not_sold(
    uow_factory: UnitOfWorkFactory, clock: FixedClock
) -> None:
    prices = PriceTable({24: Decimal("20.00")})
    seeded = SeedDefaultBundles(uow_factory, clock, prices)()
    assert [(b.name, b.total_price) for b in seeded] == [
        ("Starter Pack", Decimal("90.00")),
        ("Pro Bundle", Decimal("170.00")),
    ]


def test_buying_a_bundle_is_one_debit_for_all_its_tokens(shop: Shop) -> None:
    starter = shop.seeded()["Starter Pack"]
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="100.00")
    bought = shop.purchase_bundle(BundleOrder(user_id=alice.id, bundle_id=starter.id))

    assert bought.cost == Decimal("81.00")
    assert bought.new_balance == Decimal("19.00") == balance_of(shop.uow_factory, alice.id)
    assert (bought.purchase.bundle_name, bought.purchase.token_count) == ("Starter Pack", 5)
    assert len(bought.tokens) == 5
    assert [issued.token.price_paid for issued in bought.tokens] == [Decimal("16.20")] * 5
    assert all(issued.plaintext for issued in bought.tokens)
    assert len({issued.plaintext for issued in bought.tokens}) == 5
    for issued in bought.tokens:
        token = issued.token
        assert (token.duration_hours, token.scope) == (24, TokenScope.FULL)
        assert token.bundle_purchase_id == bought.purchase.id
        assert token.purchase_id == bought.purchase.id

    [purchase] = ledger_of(shop.uow_factory, alice.id, TransactionType.PURCHASE)
    assert (purchase.amount, purchase.reference_type, purchase.reference_id) == (
        Decimal("-81.00"),
        "bundle_purchase",
        str(bought.purchase.id),
    )
    assert purchase.description == "Bundle purchase: Starter Pack (5 tokens)"
    with shop.uow_factory() as uow:
        assert uow.bundles.get_purchase(bought.purchase.id) == bought.purchase
        assert [t.id for t in uow.tokens.list_for_purchase(bought.purchase.id)] == [
            issued.token.id for issued in bought.tokens
        ]
    [event] = events_of(shop.uow_factory, "bundle.purchased")
    assert event.payload["cost_znc"] == "81.00"
    assert event.payload["tokens_generated"] == 5
    assert event.payload["token_ids"] == [str(i.token.id) for i in bought.tokens]
    assert events_of(shop.uow_factory, "token.purchased") == []
    assert shop.list_tokens(TokenQuery(user_id=alice.id)).total == 5
    assert CheckLedger(shop.uow_factory)().ok


def test_a_bundle_token_refunds_its_share_not_the_list_price(shop: Shop) -> None:
    starter = shop.seeded()["Starter Pack"]
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="81.00")
    bought = shop.purchase_bundle(BundleOrder(user_id=alice.id, bundle_id=starter.id))
    revoked = shop.revoke(TokenRevocation(user_id=alice.id, token_id=bought.tokens[2].token.id))
    assert revoked.refund_amount == Decimal("16.20")
    assert balance_of(shop.uow_factory, alice.id) == Decimal("16.20")


def test_leftover_cents_are_on_the_first_token_and_refunds_add_up(shop: Shop) -> None:
    admin = open_account(shop.uow_factory, shop.clock, "admin", superuser=True)
    odd = shop.create_bundle(
        BundleDraft(
            actor_id=admin.id,
            name="Odd",
            token_count=3,
            duration_hours=1,
            discount_percent=Decimal("12.5"),
        )
    )
    assert odd.total_price == Decimal("2.62")
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="2.62")
    bought = shop.purchase_bundle(BundleOrder(user_id=alice.id, bundle_id=odd.id))
    assert [i.token.price_paid for i in bought.tokens] == [
        Decimal("0.88"),
        Decimal("0.87"),
        Decimal("0.87"),
    ]
    refunds = [
        shop.revoke(TokenRevocation(user_id=alice.id, token_id=i.token.id)).refund_amount
        for i in reversed(bought.tokens)
    ]
    assert sum(refunds) == Decimal("2.62") == balance_of(shop.uow_factory, alice.id)


def test_unknown_or_withdrawn_bundles_cannot_be_bought_or_seen(shop: Shop) -> None:
    bundles = shop.seeded()
    admin = open_account(shop.uow_factory, shop.clock, "admin", superuser=True)
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="1000.00")
    pro = bundles["Pro Bundle"]
    shop.deactivate_bundle(BundleRef(actor_id=admin.id, bundle_id=pro.id))

    for bundle_id in (pro.id, new_id()):
        with pytest.raises(BundleNotFound):
            shop.purchase_bundle(BundleOrder(user_id=alice.id, bundle_id=bundle_id))
        with pytest.raises(BundleNotFound):
            shop.get_bundle(BundleLookup(bundle_id=bundle_id))
        with pytest.raises(BundleNotFound):
            shop.get_bundle(BundleLookup(bundle_id=bundle_id, actor_id=alice.id))
    assert shop.get_bundle(BundleLookup(bundle_id=pro.id, actor_id=admin.id)).is_active is False
    assert shop.get_bundle(BundleLookup(bundle_id=bundles["Starter Pack"].id)).name == (
        "Starter Pack"
    )
    assert [b.name for b in shop.list_bundles(BundleQuery())] == [
        "Starter Pack",
        "Ultimate Package",
    ]
    with pytest.raises(PermissionDenied):
        shop.list_bundles(BundleQuery(active_only=False, actor_id=alice.id))
    with pytest.raises(PermissionDenied):
        shop.list_bundles(BundleQuery(active_only=False))
    assert balance_of(shop.uow_factory, alice.id) == Decimal("1000.00")


def test_a_short_balance_buys_no_bundle(shop: Shop) -> None:
    ultimate = shop.seeded()["Ultimate Package"]
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="1599.99")
    with pytest.raises(InsufficientBalance, match=r"Required: 1600\.00 ZNC, Available: 1599\.99"):
        shop.purchase_bundle(BundleOrder(user_id=alice.id, bundle_id=ultimate.id))
    assert shop.list_tokens(TokenQuery(user_id=alice.id)).total == 0
    assert balance_of(shop.uow_factory, alice.id) == Decimal("1599.99")


def test_operators_create_and_change_bundles_with_derived_prices(shop: Shop) -> None:
    admin = open_account(shop.uow_factory, shop.clock, "admin", superuser=True)
    draft = BundleDraft(
        actor_id=admin.id,
        name="  Week Pack ",
        description="Seven days",
        token_count=4,
        duration_hours=168,
        discount_percent=Decimal("25"),
        scope="certificates_only",
    )
    created = shop.create_bundle(draft)
    assert created.name == "Week Pack"
    assert (created.base_price, created.total_price) == (Decimal("400.00"), Decimal("300.00"))
    assert (created.savings, created.price_per_token) == (Decimal("100.00"), Decimal("75.00"))
    assert created.scope is TokenScope.CERTIFICATES_ONLY
    assert shop.get_bundle(BundleLookup(bundle_id=created.id)) == created

    shop.clock.advance(timedelta(hours=1))
    changed = shop.update_bundle(
        BundleChange(actor_id=admin.id, bundle_id=created.id, token_count=2, description="")
    )
    assert (changed.token_count, changed.base_price, changed.total_price) == (
        2,
        Decimal("200.00"),
        Decimal("150.00"),
    )
    assert changed.description is None
    assert changed.name == "Week Pack"
    assert changed.created_at == created.created_at
    again = shop.update_bundle(
        BundleChange(
            actor_id=admin.id, bundle_id=created.id, duration_hours=1, discount_percent=Decimal(0)
        )
    )
    assert (again.base_price, again.total_price, again.savings) == (
        Decimal("2.00"),
        Decimal("2.00"),
        Decimal("0.00"),
    )
    assert shop.get_bundle(BundleLookup(bundle_id=created.id)) == again

    deactivated = shop.deactivate_bundle(BundleRef(actor_id=admin.id, bundle_id=created.id))
    assert not deactivated.is_active
    reactivated = shop.update_bundle(
        BundleChange(actor_id=admin.id, bundle_id=created.id, is_active=True)
    )
    assert reactivated.is_active


def test_bundle_changes_are_validated_and_reserved_for_operators(shop: Shop) -> None:
    admin = open_account(shop.uow_factory, shop.clock, "admin", superuser=True)
    alice = open_account(shop.uow_factory, shop.clock, "alice")

    def draft(**changes: object) -> BundleDraft:
        fields: dict = {
            "actor_id": admin.id,
            "name": "Pack",
            "token_count": 5,
            "duration_hours": 24,
            "discount_percent": Decimal("10"),
        }
        fields.update(changes)
        return BundleDraft(**fields)

    with pytest.raises(PermissionDenied):
        shop.create_bundle(draft(actor_id=alice.id))
    with pytest.raises(InvalidDuration):
        shop.create_bundle(draft(duration_hours=2))
    for bad in (
        {"name": "  "},
        {"name": "x" * 101},
        {"token_count": 0},
        {"discount_percent": Decimal("100")},
        {"scope": "everything"},
    ):
        with pytest.raises(InvalidInput):
            shop.create_bundle(draft(**bad))
    assert shop.list_bundles(BundleQuery(active_only=False, actor_id=admin.id)) == []

    bundle = shop.create_bundle(draft())
    with pytest.raises(PermissionDenied):
        shop.update_bundle(BundleChange(actor_id=alice.id, bundle_id=bundle.id, name="Mine"))
    with pytest.raises(PermissionDenied):
        shop.deactivate_bundle(BundleRef(actor_id=alice.id, bundle_id=bundle.id))
    with pytest.raises(BundleNotFound):
        shop.update_bundle(BundleChange(actor_id=admin.id, bundle_id=new_id(), name="Gone"))
    with pytest.raises(BundleNotFound):
        shop.deactivate_bundle(BundleRef(actor_id=admin.id, bundle_id=new_id()))
    assert shop.get_bundle(BundleLookup(bundle_id=bundle.id)) == bundle


def test_a_bundle_bought_keeps_its_terms_when_the_catalogue_changes(shop: Shop) -> None:
    starter = shop.seeded()["Starter Pack"]
    admin = open_account(shop.uow_factory, shop.clock, "admin", superuser=True)
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="100.00")
    bought = shop.purchase_bundle(BundleOrder(user_id=alice.id, bundle_id=starter.id))
    shop.update_bundle(
        BundleChange(actor_id=admin.id, bundle_id=starter.id, name="Renamed", token_count=2)
    )
    with shop.uow_factory() as uow:
        assert uow.bundles.get_purchase(bought.purchase.id) == bought.purchase
    assert bought.purchase.bundle_name == "Starter Pack"
    assert shop.revoke(
        TokenRevocation(user_id=alice.id, token_id=bought.tokens[0].token.id)
    ).refund_amount == Decimal("16.20")


def test_bundle_purchases_honour_idempotency_keys(shop: Shop) -> None:
    bundles = shop.seeded()
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="200.00")
    order = BundleOrder(
        user_id=alice.id, bundle_id=bundles["Starter Pack"].id, idempotency_key="b-1"
    )
    first = shop.purchase_bundle(order)
    again = shop.purchase_bundle(order)
    assert again.replayed
    assert again.purchase == first.purchase
    assert [i.token for i in again.tokens] == [i.token for i in first.tokens]
    assert all(i.plaintext is None for i in again.tokens)
    assert again.new_balance == Decimal("119.00") == balance_of(shop.uow_factory, alice.id)
    with pytest.raises(IdempotencyConflict):
        shop.purchase_bundle(
            BundleOrder(user_id=alice.id, bundle_id=bundles["Pro Bundle"].id, idempotency_key="b-1")
        )
    assert len(ledger_of(shop.uow_factory, alice.id, TransactionType.PURCHASE)) == 1


def test_migrating_seeds_a_new_database_once_even_from_racing_processes(
    engine: Engine, clock: FixedClock
) -> None:
    """`Core.migrate` (run by `zenzefi serve` and `zenzefi migrate`) seeds an empty catalogue;
    processes seeding one new database at once add the defaults once between them."""
    url = engine.url.render_as_string(hide_password=False)
    cores = [
        Core.from_settings(Settings(database=DatabaseSettings(url=url)), clock=clock)
        for _ in range(4)
    ]
    seeded: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(cores))

    def seed(core: Core) -> None:
        barrier.wait()
        try:
            seeded.append(len(SeedDefaultBundles(core.uow, clock, core.policy.prices)()))
        except BaseException as error:  # surfaced below
            errors.append(error)

    try:
        threads = [threading.Thread(target=seed, args=(core,)) for core in cores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        cores[0].migrate()
        names = [b.name for b in ListBundles(cores[0].uow)(BundleQuery(active_only=True))]
    finally:
        for core in cores:
            core.close()
    assert errors == []
    assert sorted(seeded) == [0, 0, 0, 3]
    assert names == ["Starter Pack", "Pro Bundle", "Ultimate Package"]


def test_migrating_a_new_database_seeds_it(engine: Engine, clock: FixedClock) -> None:
    url = engine.url.render_as_string(hide_password=False)
    core = Core.from_settings(Settings(database=DatabaseSettings(url=url)), clock=clock)
    try:
        core.migrate()
        with core.uow() as uow:
            assert uow.bundles.count() == 3
    finally:
        core.close()
