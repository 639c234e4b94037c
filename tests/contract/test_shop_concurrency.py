"""Many purchases and refunds at once, by referees and their referrer: every ledger stays
consistent and no money appears or disappears. On memory, SQLite and PostgreSQL."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest

from tests.shop import Shop, balance_of, ledger_of, open_account
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType, User
from zenzefi_core.domain.tokens import AccessToken
from zenzefi_core.errors import InsufficientBalance, TokenAlreadyRevoked
from zenzefi_core.money import ZERO, quantize
from zenzefi_core.policy import ShopPolicy
from zenzefi_core.ports import UnitOfWorkFactory
from zenzefi_core.referrals import ReferralPolicy, bonus_share
from zenzefi_core.services.bundles import BundleOrder
from zenzefi_core.services.ledger_check import CheckLedger
from zenzefi_core.services.tokens import TokenOrder, TokenQuery, TokenRevocation

EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def run_together(jobs: list[Callable[[], None]]) -> list[BaseException]:
    """Start every job at the same moment; return whatever they raised."""
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def run(job: Callable[[], None]) -> None:
        barrier.wait()
        try:
            job()
        except BaseException as error:  # surfaced by the caller
            errors.append(error)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def all_tokens(shop: Shop, user: User) -> list[AccessToken]:
    page = shop.list_tokens(TokenQuery(user_id=user.id, limit=100))
    tokens = list(page.items)
    while len(tokens) < page.total:
        page = shop.list_tokens(TokenQuery(user_id=user.id, limit=100, offset=len(tokens)))
        tokens.extend(page.items)
    return tokens


@pytest.mark.parametrize("cap", [None, Decimal("12.00")], ids=["uncapped", "capped"])
def test_parallel_purchases_and_refunds_keep_every_ledger_consistent(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, cap: Decimal | None
) -> None:
    shop = Shop(uow_factory, clock, ShopPolicy(referrals=ReferralPolicy(monthly_cap=cap)))
    bundles = list(shop.seeded().values())[:2]  # Starter Pack and Pro Bundle
    opening = {"paul": Decimal("20.00"), "rita": Decimal("400.00"), "rob": Decimal("300.00")}
    paul = open_account(uow_factory, clock, "paul", balance=opening["paul"])
    rita = open_account(uow_factory, clock, "rita", balance=opening["rita"], referrer=paul)
    rob = open_account(uow_factory, clock, "rob", balance=opening["rob"], referrer=paul)
    users = {"paul": paul, "rita": rita, "rob": rob}
    contested = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=24)).token
    contested_refunds: list[Decimal] = []
    refused: list[BaseException] = []

    def shopper(user: User, seed: int) -> Callable[[], None]:
        def job() -> None:
            rng = random.Random(seed)
            mine: list[UUID] = []
            if user.id == rita.id:
                try:
                    revoked = shop.revoke(TokenRevocation(user_id=rita.id, token_id=contested.id))
                    contested_refunds.append(revoked.refund_amount)
                except TokenAlreadyRevoked as error:
                    refused.append(error)
            for _ in range(14):
                move = rng.random()
                try:
                    if move < 0.35 or not mine:
                        hours = rng.choice([1, 12, 24])
                        order = TokenOrder(user_id=user.id, duration_hours=hours)
                        mine.append(shop.purchase_token(order).token.id)
                    elif move < 0.55:
                        bundle = rng.choice(bundles)
                        order_b = BundleOrder(user_id=user.id, bundle_id=bundle.id)
                        bought = shop.purchase_bundle(order_b)
                        mine.extend(rng.sample([i.token.id for i in bought.tokens], 3))
                    else:
                        token_id = mine.pop(rng.randrange(len(mine)))
                        shop.revoke(TokenRevocation(user_id=user.id, token_id=token_id))
                except InsufficientBalance as error:
                    refused.append(error)

        return job

    jobs = [shopper(users[name], seed) for seed, name in enumerate(["paul", "rita", "rob"] * 2)]
    errors = run_together(jobs)
    assert errors == []
    assert len(contested_refunds) == 1
    assert contested_refunds == [Decimal("18.00")]

    report = CheckLedger(uow_factory)()
    assert report.ok, report.render()

    # Money is conserved, counted from three different tables: what each wallet holds is its
    # deposit, minus the tokens it still owns, plus the bonuses it still keeps.
    kept: dict[UUID, Decimal] = {}
    held: dict[UUID, list[AccessToken]] = {}
    with uow_factory() as uow:
        for user in users.values():
            kept[user.id] = uow.referrals.kept_between(user.id, *EVER)
    for user in users.values():
        held[user.id] = all_tokens(shop, user)
        unrevoked = sum((t.price_paid for t in held[user.id] if t.revoked_at is None), ZERO)
        expected = opening[user.username] - unrevoked + kept[user.id]
        assert balance_of(uow_factory, user.id) == expected, user.username
    assert kept[rita.id] == kept[rob.id] == ZERO
    if cap is not None:
        assert kept[paul.id] <= cap

    # Each purchase was charged exactly once, and each bonus reversed exactly the shares of the
    # tokens refunded so far: a fully refunded purchase has no bonus left outstanding.
    for user in (paul, rita, rob):
        purchases: dict[UUID, list[AccessToken]] = defaultdict(list)
        for token in held[user.id]:
            purchases[token.purchase_id].append(token)
        charges = ledger_of(uow_factory, user.id, TransactionType.PURCHASE)
        assert sorted(e.reference_id for e in charges) == sorted(str(p) for p in purchases)
        with uow_factory() as uow:
            for purchase_id, tokens in purchases.items():
                bonus = uow.referrals.for_purchase(purchase_id)
                if user.id == paul.id:
                    assert bonus is None  # nobody referred the referrer
                    continue
                if bonus is None:
                    assert cap is not None  # only the cap leaves a purchase without a bonus
                    continue
                total = sum((t.price_paid for t in tokens), ZERO)
                if cap is None:
                    assert bonus.amount == quantize(total / 10)
                tokens.sort(key=lambda t: t.id)
                reversed_ = sum(
                    (
                        bonus_share(bonus.amount, len(tokens), i)
                        for i, t in enumerate(tokens)
                        if t.revoked_at is not None
                    ),
                    ZERO,
                )
                assert bonus.clawed_back + bonus.shortfall == reversed_
    revocations = sum(1 for tokens in held.values() for t in tokens if t.revoked_at is not None)
    assert revocations > 5
    assert sum(len(tokens) for tokens in held.values()) > 30


def test_racing_retries_with_one_key_charge_once(
    uow_factory: UnitOfWorkFactory, clock: FixedClock
) -> None:
    shop = Shop(uow_factory, clock, ShopPolicy())
    paul = open_account(uow_factory, clock, "paul")
    # Enough for exactly one purchase: a second charge would fail, not overspend.
    rita = open_account(uow_factory, clock, "rita", balance="81.00", referrer=paul)
    starter = shop.seeded()["Starter Pack"]
    order = BundleOrder(user_id=rita.id, bundle_id=starter.id, idempotency_key="same-key")
    results = []

    def retry() -> None:
        results.append(shop.purchase_bundle(order))

    errors = run_together([retry] * 8)
    assert errors == []
    assert len(results) == 8
    assert [r.replayed for r in results].count(False) == 1
    assert len({r.purchase.id for r in results}) == 1
    assert balance_of(uow_factory, rita.id) == Decimal("0.00")
    assert balance_of(uow_factory, paul.id) == Decimal("8.10")
    assert len(ledger_of(uow_factory, rita.id, TransactionType.PURCHASE)) == 1
    assert shop.list_tokens(TokenQuery(user_id=rita.id)).total == 5
    assert CheckLedger(uow_factory)().ok


def test_racing_token_retries_with_one_key_charge_once(
    uow_factory: UnitOfWorkFactory, clock: FixedClock
) -> None:
    shop = Shop(uow_factory, clock, ShopPolicy())
    rita = open_account(uow_factory, clock, "rita", balance="100.00")
    order = TokenOrder(user_id=rita.id, duration_hours=24, idempotency_key="once")
    results = []
    errors = run_together([lambda: results.append(shop.purchase_token(order))] * 8)
    assert errors == []
    assert len({r.token.id for r in results}) == 1
    assert [r.plaintext is not None for r in results].count(True) == 1
    assert balance_of(uow_factory, rita.id) == Decimal("82.00")
    assert shop.list_tokens(TokenQuery(user_id=rita.id)).total == 1
