"""Slow work and reads never hold back a purchase, on SQLite (one writer at a time) and
PostgreSQL: a transaction takes SQLite's write lock only at its first write, and passwords are
hashed before any transaction opens.

The first tests hold the slow part (a hash, a read) open on purpose and show that a purchase
completes meanwhile: a pass or a fail, not a timing. The last measures, in one run, a purchase
alone and beside registrations hashing with the production Argon2 parameters.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import TypeVar

import pytest
from sqlalchemy import Engine

from tests.shop import balance_of, open_account
from zenzefi_core.adapters.sqlalchemy import SqlAlchemyUnitOfWork
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType
from zenzefi_core.errors import InsufficientBalance
from zenzefi_core.policy import ShopPolicy
from zenzefi_core.ports import PasswordHasher, UnitOfWorkFactory
from zenzefi_core.security import Argon2PasswordHasher, fast_password_hasher
from zenzefi_core.services.ledger_check import CheckLedger
from zenzefi_core.services.tokens import ListTokens, PurchaseToken, TokenOrder, TokenQuery
from zenzefi_core.services.users import (
    ProfileChange,
    RegisterUser,
    Registration,
    UpdateProfile,
)
from zenzefi_core.services.wallet import DebitWallet, WalletChange, post_entry

R = TypeVar("R")
#: Far longer than any of these steps takes; reached only when one waits for another.
PATIENCE_SECONDS = 15.0


class GatedHasher:
    """A hasher that stops inside `hash` or `verify` (whichever `gated` names) until released,
    to hold a use case in its slow part for as long as a test needs."""

    def __init__(self, gated: str) -> None:
        self._inner = fast_password_hasher()
        self._gated = gated
        self.inside = threading.Event()
        self.release = threading.Event()

    def _wait(self, step: str) -> None:
        if step == self._gated:
            self.inside.set()
            assert self.release.wait(PATIENCE_SECONDS), "the test never released the hasher"

    def hash(self, password: str) -> str:
        self._wait("hash")
        return self._inner.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        self._wait("verify")
        return self._inner.verify(password_hash, password)


class Background:
    """One call in a thread; `result()` waits for it (bounded) and returns or raises."""

    def __init__(self, call: Callable[[], R]) -> None:
        self._outcome: list[object] = []
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], object]) -> None:
        try:
            self._outcome.append(call())
        except BaseException as error:
            self._outcome.append(error)

    def finished_within(self, seconds: float) -> bool:
        self._thread.join(seconds)
        return not self._thread.is_alive()

    def result(self) -> object:
        assert self.finished_within(PATIENCE_SECONDS), "still waiting"
        (outcome,) = self._outcome
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def _factory(engine: Engine) -> UnitOfWorkFactory:
    return partial(SqlAlchemyUnitOfWork, engine)


def _purchase(uow_factory: UnitOfWorkFactory, clock: FixedClock) -> PurchaseToken:
    return PurchaseToken(uow_factory, clock, ShopPolicy())


def test_a_purchase_completes_while_a_registration_hashes_its_password(
    engine: Engine, clock: FixedClock
) -> None:
    uow_factory = _factory(engine)
    alice = open_account(uow_factory, clock, "alice", balance="100.00")
    hasher = GatedHasher("hash")
    registration = Background(
        lambda: RegisterUser(uow_factory, clock, hasher)(
            Registration(email="bob@example.com", username="bob", password="s3cret pw!")
        )
    )
    assert hasher.inside.wait(PATIENCE_SECONDS)

    purchase = Background(lambda: _purchase(uow_factory, clock)(TokenOrder(alice.id, 24)))
    finished = purchase.finished_within(PATIENCE_SECONDS)
    hasher.release.set()
    assert finished, "the purchase waited for the registration's hash"
    purchase.result()
    registration.result()
    assert balance_of(uow_factory, alice.id) == Decimal("82.00")


def test_a_purchase_completes_while_a_password_change_checks_the_old_one(
    engine: Engine, clock: FixedClock
) -> None:
    uow_factory = _factory(engine)
    alice = open_account(uow_factory, clock, "alice", balance="100.00")
    hasher = GatedHasher("verify")
    change = ProfileChange(
        user_id=alice.id, new_password="n3w secret pw", current_password="correct horse"
    )
    profile = Background(lambda: UpdateProfile(uow_factory, hasher)(change))
    # Stopped in `verify`: inside the unit of work, after its read.
    assert hasher.inside.wait(PATIENCE_SECONDS)

    purchase = Background(lambda: _purchase(uow_factory, clock)(TokenOrder(alice.id, 24)))
    finished = purchase.finished_within(PATIENCE_SECONDS)
    hasher.release.set()
    assert finished, "the purchase waited for the password check"
    purchase.result()
    profile.result()
    assert balance_of(uow_factory, alice.id) == Decimal("82.00")


def test_an_open_reading_unit_of_work_does_not_hold_back_a_purchase(
    engine: Engine, clock: FixedClock
) -> None:
    uow_factory = _factory(engine)
    alice = open_account(uow_factory, clock, "alice", balance="100.00")
    with uow_factory() as reader:
        assert reader.users.get(alice.id) is not None
        assert reader.ledger.total_for_user(alice.id) == Decimal("100.00")
        purchase = Background(lambda: _purchase(uow_factory, clock)(TokenOrder(alice.id, 24)))
        assert purchase.finished_within(PATIENCE_SECONDS), "the purchase waited for a reader"
        purchase.result()
    assert balance_of(uow_factory, alice.id) == Decimal("82.00")


@pytest.mark.parametrize(("second", "succeeds"), [("20.00", False), ("5.00", True)])
def test_a_write_after_another_commit_since_the_read_is_decided_on_fresh_data(
    engine: Engine, clock: FixedClock, second: str, succeeds: bool
) -> None:
    """The transaction read before another committed a debit; its own debit must then neither
    fail on a stale snapshot (SQLite's deferred upgrade) nor overspend."""
    uow_factory = _factory(engine)
    alice = open_account(uow_factory, clock, "alice", balance="30.00")
    with uow_factory() as first:
        assert first.users.get(alice.id) is not None  # reads: a snapshot, no lock
        DebitWallet(uow_factory, clock)(
            WalletChange(
                user_id=alice.id,
                amount=Decimal("20.00"),
                transaction_type=TransactionType.PURCHASE,
                description="meanwhile",
                reference_type="test",
                reference_id="meanwhile",
            )
        )

        def debit() -> None:
            post_entry(
                first,
                clock,
                user_id=alice.id,
                amount=-Decimal(second),
                transaction_type=TransactionType.PURCHASE,
                description="after the read",
                reference_type="test",
                reference_id="after",
            )
            first.commit()

        if succeeds:
            debit()
        else:
            with pytest.raises(InsufficientBalance):
                debit()
    expected = Decimal("30.00") - Decimal("20.00") - (Decimal(second) if succeeds else 0)
    assert balance_of(uow_factory, alice.id) == expected
    assert CheckLedger(uow_factory)().ok


def test_simultaneous_purchases_beside_readers_never_overspend_nor_fail_spuriously(
    engine: Engine, clock: FixedClock
) -> None:
    """Thirty purchases of 18.00 at once on a wallet that affords ten, with readers listing
    the tokens throughout: every purchase either buys or is refused for the balance, none
    fails on a stale snapshot or a lock, and the ledger adds up."""
    uow_factory = _factory(engine)
    alice = open_account(uow_factory, clock, "alice", balance="180.00")
    purchase = _purchase(uow_factory, clock)
    listing = ListTokens(uow_factory, clock)
    barrier = threading.Barrier(40)
    outcomes: list[object] = []
    lock = threading.Lock()

    def buyer() -> None:
        barrier.wait()
        try:
            outcome: object = purchase(TokenOrder(alice.id, 24))
        except Exception as error:
            outcome = error
        with lock:
            outcomes.append(outcome)

    def reader() -> None:
        barrier.wait()
        for _ in range(5):
            listing(TokenQuery(user_id=alice.id))

    threads = [threading.Thread(target=buyer) for _ in range(30)]
    threads += [threading.Thread(target=reader) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PATIENCE_SECONDS * 4)
    refused = [o for o in outcomes if isinstance(o, InsufficientBalance)]
    unexpected = [o for o in outcomes if isinstance(o, Exception) and o not in refused]
    assert unexpected == []
    assert (len(outcomes) - len(refused), len(refused)) == (10, 20)
    assert balance_of(uow_factory, alice.id) == Decimal("0.00")
    assert listing(TokenQuery(user_id=alice.id)).total == 10
    assert CheckLedger(uow_factory)().ok


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def test_purchases_are_not_delayed_by_registrations_hashing_beside_them(
    engine: Engine, clock: FixedClock
) -> None:
    """Measured in this run, not against a fixed time: purchases beside two registrations
    running back to back (production Argon2) take at most a few times as long as alone, plus
    one hash for the CPU the hashes take. Were a hash held under SQLite's write lock, each
    purchase would wait for the registration holding it, and the lock passes between the two
    registering threads far more readily than to a waiting purchase."""
    uow_factory = _factory(engine)
    alice = open_account(uow_factory, clock, "alice", balance="10000.00")
    purchase = _purchase(uow_factory, clock)
    hasher: PasswordHasher = Argon2PasswordHasher()

    def buy() -> None:
        purchase(TokenOrder(alice.id, 1))

    buy()  # warm up the pool and the statement cache
    alone = statistics.median(_timed(buy) for _ in range(15))
    hash_time = statistics.median(_timed(lambda: hasher.hash("s3cret pw!")) for _ in range(3))

    stop = threading.Event()
    registered = [0, 0]

    def register(lane: int) -> None:
        register_user = RegisterUser(uow_factory, clock, hasher)
        n = 0
        while not stop.is_set():
            register_user(
                Registration(
                    email=f"r{lane}-{n}@example.com", username=f"r{lane}-{n}", password="s3cret pw!"
                )
            )
            n += 1
            registered[lane] = n

    lanes = [threading.Thread(target=register, args=(lane,)) for lane in range(2)]
    for lane in lanes:
        lane.start()
    try:
        beside = statistics.median(_timed(buy) for _ in range(15))
    finally:
        stop.set()
        for lane in lanes:
            lane.join(PATIENCE_SECONDS)
    assert all(registered), "the registrations ran beside the purchases"
    bound = alone * 5 + hash_time
    assert beside <= bound, (
        f"a purchase took {beside * 1000:.1f} ms beside registrations, {alone * 1000:.1f} ms "
        f"alone; a hash takes {hash_time * 1000:.1f} ms (bound {bound * 1000:.1f} ms)"
    )
    assert CheckLedger(uow_factory)().ok
