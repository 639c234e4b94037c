"""Many purchases, first uses and refunds at once, by referees and their referrer: every ledger
stays consistent and no money appears or disappears. On memory, SQLite and PostgreSQL."""

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
from zenzefi_core.domain.referrals import ShareState
from zenzefi_core.domain.tokens import AccessToken
from zenzefi_core.errors import (
    InsufficientBalance,
    TokenAlreadyActivated,
    TokenAlreadyRevoked,
)
from zenzefi_core.money import ZERO, quantize
from zenzefi_core.policy import ShopPolicy
from zenzefi_core.ports import UnitOfWorkFactory
from zenzefi_core.referrals import ReferralPolicy
from zenzefi_core.services.bundles import BundleOrder
from zenzefi_core.services.ledger_check import CheckLedger
from zenzefi_core.services.proxy import InvalidAccessToken
from zenzefi_core.services.tokens import TokenOrder, TokenQuery, TokenRevocation
from zenzefi_core.services.users import GetReferralSummary, ReferralQuery

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
    contested_uses: list[bool] = []
    refused: list[BaseException] = []

    def use_contested() -> None:
        try:
            shop.use(contested, "other-device-01")
            contested_uses.append(True)
        except InvalidAccessToken as error:
            refused.append(error)

    def shopper(user: User, seed: int) -> Callable[[], None]:
        def job() -> None:
            rng = random.Random(seed)
            mine: list[AccessToken] = []
            if user.id == rita.id and seed == 1:
                try:
                    revoked = shop.revoke(TokenRevocation(user_id=rita.id, token_id=contested.id))
                    contested_refunds.append(revoked.refund_amount)
                except (TokenAlreadyRevoked, TokenAlreadyActivated) as error:
                    refused.append(error)
            for _ in range(14):
                move = rng.random()
                try:
                    if move < 0.3 or not mine:
                        hours = rng.choice([1, 12, 24])
                        order = TokenOrder(user_id=user.id, duration_hours=hours)
                        mine.append(shop.purchase_token(order).token)
                    elif move < 0.45:
                        bundle = rng.choice(bundles)
                        order_b = BundleOrder(user_id=user.id, bundle_id=bundle.id)
                        bought = shop.purchase_bundle(order_b)
                        mine.extend(rng.sample([i.token for i in bought.tokens], 3))
                    elif move < 0.7:
                        shop.use(mine.pop(rng.randrange(len(mine))), f"device-{seed:04d}")
                    else:
                        token = mine.pop(rng.randrange(len(mine)))
                        shop.revoke(TokenRevocation(user_id=user.id, token_id=token.id))
                except InsufficientBalance as error:
                    refused.append(error)

        return job

    jobs = [shopper(users[name], seed) for seed, name in enumerate(["paul", "rita", "rob"] * 2)]
    errors = run_together([*jobs, use_contested])
    assert errors == []
    # The contested token was either refunded or used, never both.
    assert len(contested_refunds) + len(contested_uses) == 1
    assert contested_refunds in ([], [Decimal("18.00")])

    report = CheckLedger(uow_factory)()
    assert report.ok, report.render()

    # Money is conserved, counted from three different tables: what each wallet holds is its
    # deposit, minus the tokens it still owns, plus the bonuses it was paid.
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

    # Each purchase was charged exactly once; each token's share of its purchase's bonus was
    # paid if the token was used, cancelled if it was refunded, and is pending otherwise.
    pending = ZERO
    for user in (paul, rita, rob):
        purchases: dict[UUID, list[AccessToken]] = defaultdict(list)
        for token in held[user.id]:
            purchases[token.purchase_id].append(token)
        charges = ledger_of(uow_factory, user.id, TransactionType.PURCHASE)
        assert sorted(e.reference_id for e in charges) == sorted(str(p) for p in purchases)
        with uow_factory() as uow:
            for tokens in purchases.values():
                shares = [uow.referrals.share_for_token(t.id) for t in tokens]
                if user.id == paul.id:
                    assert shares == [None] * len(tokens)  # nobody referred the referrer
                    continue
                total = sum((t.price_paid for t in tokens), ZERO)
                held_bonus = sum((s.amount for s in shares if s), ZERO)
                if cap is None:
                    assert held_bonus == quantize(total / 10)
                else:  # one purchase never holds more than a month's cap
                    assert held_bonus == min(quantize(total / 10), cap)
                for token, share in zip(tokens, shares, strict=True):
                    if share is None:
                        continue
                    if token.revoked_at is not None:
                        assert share.state is ShareState.CANCELLED
                    elif token.activated_at is not None:
                        assert share.state in (ShareState.CREDITED, ShareState.FORFEITED)
                        if cap is None:
                            assert share.credited == share.amount
                    else:
                        assert share.state is ShareState.PENDING
                        pending += share.amount
    summary = GetReferralSummary(uow_factory)(ReferralQuery(user_id=paul.id))
    assert summary.bonus_pending == pending
    assert summary.bonus_earned == kept[paul.id]
    tokens_of_all = [t for tokens in held.values() for t in tokens]
    assert sum(1 for t in tokens_of_all if t.revoked_at is not None) > 5
    assert sum(1 for t in tokens_of_all if t.activated_at is not None) > 5
    assert len(tokens_of_all) > 30


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
    summary = GetReferralSummary(uow_factory)(ReferralQuery(user_id=paul.id))
    assert (summary.bonus_earned, summary.bonus_pending) == (Decimal("0.00"), Decimal("8.10"))
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


def test_a_first_use_racing_the_refund_either_pays_or_cancels_the_share(
    uow_factory: UnitOfWorkFactory, clock: FixedClock
) -> None:
    """The attacker's race: refund a token at the very moment it is first used, hoping for
    both the refund and the referrer's bonus. Exactly one of the two happens, every time."""
    shop = Shop(uow_factory, clock, ShopPolicy())
    paul = open_account(uow_factory, clock, "paul")
    rita = open_account(uow_factory, clock, "rita", balance="1800.00", referrer=paul)
    outcomes = []
    for round_ in range(10):
        token = shop.purchase_token(TokenOrder(user_id=rita.id, duration_hours=24)).token
        won: list[str] = []

        def refund(token: AccessToken = token, won: list[str] = won) -> None:
            try:
                shop.revoke(TokenRevocation(user_id=rita.id, token_id=token.id))
                won.append("refund")
            except (TokenAlreadyActivated, TokenAlreadyRevoked):
                pass

        def first_use(
            token: AccessToken = token, round_: int = round_, won: list[str] = won
        ) -> None:
            try:
                shop.use(token, f"device-{round_:04d}")
                won.append("use")
            except InvalidAccessToken:
                pass

        assert run_together([refund, first_use]) == []
        assert len(won) == 1, won
        with uow_factory() as uow:
            share = uow.referrals.share_for_token(token.id)
        assert share is not None
        expected = ShareState.CANCELLED if won == ["refund"] else ShareState.CREDITED
        assert share.state is expected
        outcomes.append(won[0])

    used = outcomes.count("use")
    assert balance_of(uow_factory, paul.id) == Decimal("1.80") * used
    assert balance_of(uow_factory, rita.id) == Decimal("1800.00") - Decimal("18.00") * used
    report = CheckLedger(uow_factory)()
    assert report.ok, report.render()
