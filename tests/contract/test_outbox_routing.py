"""Events nothing consumes, on every adapter: with the worker's event list, an event that no
email and no subscribed webhook endpoint wants is stored already dispatched (so it never
reaches the broker), while every other event waits for the worker as before."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.conftest import BACKENDS, UserMaker, _sqlite_engine, _truncate
from zenzefi_core.adapters.memory import MemoryStore
from zenzefi_core.adapters.sqlalchemy import SqlAlchemyUnitOfWork
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import OutboxEvent, User
from zenzefi_core.domain.webhooks import WebhookEndpoint
from zenzefi_core.ids import new_id
from zenzefi_core.ports import UnitOfWork
from zenzefi_core.services.events import WORKER_EVENTS, record_event
from zenzefi_core.services.outbox import PublishCommittedEvents

#: Makes a unit of work on the test's store; keyword arguments as the adapters' constructors.
Maker = Callable[..., UnitOfWork]


@pytest.fixture(params=BACKENDS)
def make_uow(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Maker]:
    """One fresh, empty store behind each adapter: memory, SQLite and PostgreSQL."""
    if request.param == "memory":
        yield MemoryStore().unit_of_work
    elif request.param == "sqlite":
        engine = _sqlite_engine(tmp_path)
        yield lambda **options: SqlAlchemyUnitOfWork(engine, **options)
        engine.dispose()
    else:
        postgres: Engine = request.getfixturevalue("postgres_engine")
        _truncate(postgres)
        yield lambda **options: SqlAlchemyUnitOfWork(postgres, **options)
        _truncate(postgres)


def routed(make_uow: Maker, **options: Any) -> Callable[[], UnitOfWork]:
    return lambda: make_uow(worker_events=WORKER_EVENTS, **options)


def add_endpoint(
    make_uow: Maker, clock: FixedClock, user: User, events: tuple[str, ...], *, active: bool = True
) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(
        id=new_id(),
        user_id=user.id,
        url="https://hooks.example.com/in",
        events=events,
        is_active=active,
        secret_encrypted="not used here",
        created_at=clock.now(),
        updated_at=clock.now(),
    )
    with make_uow() as uow:
        uow.webhooks.add_endpoint(endpoint)
        uow.commit()
    return endpoint


def record(
    uow_factory: Callable[[], UnitOfWork],
    clock: FixedClock,
    event_type: str,
    user: User | None,
) -> OutboxEvent:
    with uow_factory() as uow:
        event = record_event(
            uow, clock, event_type, {"n": 1}, user_id=None if user is None else user.id
        )
        uow.commit()
    return event


def stored(make_uow: Maker, event: OutboxEvent) -> OutboxEvent:
    with make_uow() as uow:
        found = uow.outbox.get(event.id)
    assert found is not None
    return found


def test_an_event_nobody_consumes_is_stored_dispatched(
    make_uow: Maker, make_user: UserMaker, clock: FixedClock
) -> None:
    alice = make_user(lambda: make_uow())
    event = record(routed(make_uow), clock, "token.purchased", alice)

    kept = stored(make_uow, event)
    assert (kept.dispatched_at, kept.attempts) == (event.created_at, 0)
    assert kept.payload == {"n": 1}
    with make_uow() as uow:
        assert uow.outbox.pending(limit=10) == []
        assert uow.outbox.backlog().pending == 0


def test_without_the_worker_list_every_event_waits(
    make_uow: Maker, make_user: UserMaker, clock: FixedClock
) -> None:
    """Library users with a bus of their own get every event, as before."""
    alice = make_user(lambda: make_uow())
    event = record(lambda: make_uow(), clock, "token.purchased", alice)
    assert stored(make_uow, event).dispatched_at is None


def test_an_event_a_subscribed_endpoint_wants_waits_for_the_worker(
    make_uow: Maker, make_user: UserMaker, clock: FixedClock
) -> None:
    alice = make_user(lambda: make_uow())
    add_endpoint(make_uow, clock, alice, ("token.revoked", "token.purchased"))
    event = record(routed(make_uow), clock, "token.purchased", alice)

    assert stored(make_uow, event).dispatched_at is None
    with make_uow() as uow:
        assert [e.id for e in uow.outbox.pending(limit=10)] == [event.id]


@pytest.mark.parametrize(
    "case",
    ["other events only", "inactive endpoint", "someone else's endpoint", "no user"],
)
def test_endpoints_that_do_not_want_the_event_leave_it_dispatched(
    make_uow: Maker, make_user: UserMaker, clock: FixedClock, case: str
) -> None:
    alice = make_user(lambda: make_uow())
    bob = make_user(lambda: make_uow(), "bob")
    if case == "other events only":
        # Neither of these is the event's type, though one shares its start.
        add_endpoint(make_uow, clock, alice, ("token.expiring", "token.purchased"))
    elif case == "inactive endpoint":
        add_endpoint(make_uow, clock, alice, ("token.expired",), active=False)
    else:
        add_endpoint(make_uow, clock, bob, ("token.expired",))
    event = record(routed(make_uow), clock, "token.expired", None if case == "no user" else alice)

    assert stored(make_uow, event).dispatched_at == event.created_at


@pytest.mark.parametrize("event_type", sorted(WORKER_EVENTS))
def test_email_and_webhook_system_events_always_wait_for_the_worker(
    make_uow: Maker, make_user: UserMaker, clock: FixedClock, event_type: str
) -> None:
    alice = make_user(lambda: make_uow())
    event = record(routed(make_uow), clock, event_type, alice)
    assert stored(make_uow, event).dispatched_at is None


def test_a_batch_keeps_its_order_and_routes_each_event(
    make_uow: Maker, make_user: UserMaker, clock: FixedClock
) -> None:
    alice = make_user(lambda: make_uow())
    add_endpoint(make_uow, clock, alice, ("token.activated",))
    kinds = ["token.expired", "token.expiring", "token.activated", "balance.deposited"]
    events = [OutboxEvent(new_id(), kind, {}, clock.now(), alice.id) for kind in kinds]
    handed_over: list[OutboxEvent] = []
    with make_uow(worker_events=WORKER_EVENTS, after_commit=handed_over.extend) as uow:
        uow.outbox.add_all(events)
        uow.commit()

    assert [e.id for e in handed_over] == [e.id for e in events]
    waiting = [e.dispatched_at is None for e in handed_over]
    assert waiting == [False, True, True, False]
    assert [stored(make_uow, e).dispatched_at is None for e in events] == waiting


def test_the_hand_over_skips_what_nobody_consumes(
    make_uow: Maker, make_user: UserMaker, clock: FixedClock
) -> None:
    alice = make_user(lambda: make_uow())
    bob = make_user(lambda: make_uow(), "bob")
    # An endpoint created a moment before the event counts.
    add_endpoint(make_uow, clock, bob, ("token.purchased",))
    published: list[OutboxEvent] = []

    class Publisher:
        def publish(self, event: OutboxEvent) -> None:
            published.append(event)

    hand_over = PublishCommittedEvents(lambda: make_uow(), clock, Publisher())
    buy = routed(make_uow, after_commit=hand_over)
    record(buy, clock, "token.purchased", alice)
    clock.advance(timedelta(seconds=1))
    wanted = record(buy, clock, "token.purchased", bob)

    assert [e.id for e in published] == [wanted.id]
    with make_uow() as uow:
        assert uow.outbox.pending(limit=10) == []
