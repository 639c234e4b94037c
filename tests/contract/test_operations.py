"""The reads behind the metrics, and the ledger observer, on memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, UserMaker, _sqlite_engine, _truncate
from tests.contract.test_sessions import buy, session_for
from zenzefi_core.adapters.memory import MemoryStore
from zenzefi_core.adapters.sqlalchemy import SqlAlchemyUnitOfWork
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import LedgerEntry, TransactionType
from zenzefi_core.ports import LedgerObserver, UnitOfWorkFactory
from zenzefi_core.services.operations import ReadSystemGauges, SystemGauges
from zenzefi_core.services.wallet import post_entry


def test_the_gauges_of_an_empty_system_are_zero(
    uow_factory: UnitOfWorkFactory, clock: FixedClock
) -> None:
    assert ReadSystemGauges(uow_factory, clock)() == SystemGauges(0, 0.0, 0, 0)


def test_the_gauges_count_the_backlog_open_sessions_and_running_tokens(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    user = make_user(uow_factory, balance=Decimal("500.00"))
    with uow_factory() as uow:
        # The opening deposit wrote no event; three purchases will.
        assert uow.outbox.backlog().pending == 0
    first_bought_at = clock.now()
    running, _ = buy(uow_factory, clock, user.id)
    clock.advance(timedelta(minutes=1))
    ended, _ = buy(uow_factory, clock, user.id)
    expired, _ = buy(uow_factory, clock, user.id)
    never_used, _ = buy(uow_factory, clock, user.id)
    with uow_factory() as uow:
        assert uow.tokens.activate(running.id, clock.now()) is not None
        assert uow.tokens.activate(ended.id, clock.now()) is not None
        assert uow.tokens.activate(expired.id, clock.now() - timedelta(hours=25)) is not None
        uow.proxy_sessions.start(session_for(running, "device-one", clock))
        closed = session_for(ended, "device-two", clock)
        uow.proxy_sessions.start(closed)
        uow.proxy_sessions.end(closed.id, clock.now())
        uow.commit()
    clock.advance(timedelta(seconds=30))

    gauges = ReadSystemGauges(uow_factory, clock)()

    assert gauges.open_sessions == 1
    # `ended` still runs (its session closed, its clock did not); `expired` ran out an hour ago.
    assert gauges.running_tokens == 2
    with uow_factory() as uow:
        pending = uow.outbox.pending(limit=100)
    assert gauges.outbox_pending == len(pending) >= 4
    assert gauges.outbox_oldest_age_seconds == (clock.now() - first_bought_at).total_seconds()

    with uow_factory() as uow:
        uow.outbox.mark_dispatched([e.id for e in pending[:1]], clock.now())
        uow.commit()
    after = ReadSystemGauges(uow_factory, clock)()
    assert after.outbox_pending == gauges.outbox_pending - 1
    # The first purchase's events are gone, so the oldest now is one minute younger at most.
    assert after.outbox_oldest_age_seconds <= gauges.outbox_oldest_age_seconds
    with uow_factory() as uow:
        uow.outbox.mark_dispatched([e.id for e in pending], clock.now())
        uow.commit()
        assert uow.outbox.backlog().oldest_created_at is None
    assert ReadSystemGauges(uow_factory, clock)().outbox_oldest_age_seconds == 0.0
    assert never_used.expires_at is None


ObservedFactory = Callable[[LedgerObserver], UnitOfWorkFactory]


@pytest.fixture(params=BACKENDS)
def observed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObservedFactory]:
    """Makes units of work that tell a given observer their committed ledger entries."""
    if request.param == "memory":
        store = MemoryStore()
        yield lambda observer: lambda: store.unit_of_work(on_ledger=observer)
        return
    if request.param == "sqlite":
        engine = _sqlite_engine(tmp_path)
    else:
        engine = request.getfixturevalue("postgres_engine")
        _truncate(engine)
    yield lambda observer: lambda: SqlAlchemyUnitOfWork(engine, on_ledger=observer)
    if request.param == "sqlite":
        engine.dispose()
    else:
        _truncate(engine)


def test_the_observer_is_told_exactly_the_committed_entries_after_the_block(
    observed: ObservedFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    calls: list[list[Decimal]] = []
    inside = [False]

    def observe(entries: Sequence[LedgerEntry]) -> None:
        assert not inside[0], "the observer ran before the unit of work ended"
        calls.append([e.amount for e in entries])

    factory = observed(observe)
    user = make_user(factory, balance=Decimal("50.00"))
    assert calls == [[Decimal("50.00")]]
    calls.clear()

    def credit(uow, amount: str) -> None:
        post_entry(
            uow,
            clock,
            user_id=user.id,
            amount=Decimal(amount),
            transaction_type=TransactionType.ADJUSTMENT,
            description="test",
            reference_type="test",
            reference_id="1",
        )

    with factory() as uow:
        inside[0] = True
        credit(uow, "1.00")
        uow.rollback()
        credit(uow, "2.00")
        uow.commit()
        credit(uow, "3.00")
        uow.commit()
        credit(uow, "4.00")
        inside[0] = False
    assert calls == [[Decimal("2.00"), Decimal("3.00")]]

    def fail_after_commit() -> None:
        with factory() as uow:
            credit(uow, "5.00")
            uow.commit()
            raise RuntimeError("after the commit")

    with pytest.raises(RuntimeError):
        fail_after_commit()
    assert calls[-1] == [Decimal("5.00")]

    with factory() as uow:
        uow.commit()
    assert len(calls) == 2, "no call without committed entries"
