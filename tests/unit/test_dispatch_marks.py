"""Marking handed-over events dispatched a batch at a time instead of one transaction per use
case: nothing is marked that the broker did not take, nothing accepted stays unmarked for
long, and a mark that fails only means the relay hands the event over once more."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest

from tests.notifications import eventually
from zenzefi_core.adapters.memory import InMemoryUnitOfWork, MemoryStore
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import OutboxEvent
from zenzefi_core.errors import BrokerUnavailable, StorageUnavailable
from zenzefi_core.ids import new_id
from zenzefi_core.services.outbox import DispatchMarks, PublishCommittedEvents, RelayOutbox

#: Long enough that the timer never fires during a test that does not wait for it.
NEVER = 3600.0


class Publisher:
    def __init__(self, refuse: bool = False) -> None:
        self.published: list[OutboxEvent] = []
        self.refuse = refuse

    def publish(self, event: OutboxEvent) -> None:
        if self.refuse:
            raise BrokerUnavailable("connection refused")
        self.published.append(event)


class CountingStore:
    """Units of work on a memory store, counting how many were opened."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.opened = 0
        self.fail = False

    def __call__(self) -> InMemoryUnitOfWork:
        self.opened += 1
        if self.fail:
            raise StorageUnavailable()
        return self.store.unit_of_work()


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


def commit_events(
    store: CountingStore, clock: FixedClock, count: int, hand_over: Callable[..., None]
) -> list[OutboxEvent]:
    events = [OutboxEvent(new_id(), "balance.low", {"n": n}, clock.now()) for n in range(count)]
    with store.store.unit_of_work(after_commit=hand_over) as uow:
        uow.outbox.add_all(events)
        uow.commit()
    return events


def pending(store: CountingStore) -> list[OutboxEvent]:
    with store.store.unit_of_work() as uow:
        return uow.outbox.pending(limit=1000)


def test_accepted_events_wait_for_the_batch_then_are_marked_in_one_transaction(
    store: CountingStore, clock: FixedClock
) -> None:
    marks = DispatchMarks(store, clock, batch_size=100, delay_seconds=NEVER)
    publisher = Publisher()
    hand_over = PublishCommittedEvents(store, clock, publisher, marks)
    for _ in range(3):
        commit_events(store, clock, 2, hand_over)
    assert len(publisher.published) == 6
    assert store.opened == 0
    assert len(pending(store)) == 6

    marks.flush()
    assert store.opened == 1
    assert pending(store) == []
    marks.flush()
    assert store.opened == 1


def test_a_full_batch_is_marked_at_once(store: CountingStore, clock: FixedClock) -> None:
    marks = DispatchMarks(store, clock, batch_size=4, delay_seconds=NEVER)
    hand_over = PublishCommittedEvents(store, clock, Publisher(), marks)
    first = commit_events(store, clock, 3, hand_over)
    assert store.opened == 0
    second = commit_events(store, clock, 2, hand_over)
    assert store.opened == 1
    assert pending(store) == []
    for event in first + second:
        with store.store.unit_of_work() as uow:
            marked = uow.outbox.get(event.id)
        assert marked is not None
        assert (marked.dispatched_at, marked.attempts) == (clock.now(), 1)


def test_the_timer_marks_what_is_left_without_anyone_asking(
    store: CountingStore, clock: FixedClock
) -> None:
    marks = DispatchMarks(store, clock, batch_size=100, delay_seconds=0.05)
    commit_events(store, clock, 3, PublishCommittedEvents(store, clock, Publisher(), marks))
    eventually(lambda: pending(store) == [], what="the timer to mark the events")
    assert store.opened == 1


def test_refused_events_are_not_marked(store: CountingStore, clock: FixedClock) -> None:
    marks = DispatchMarks(store, clock, delay_seconds=NEVER)
    events = commit_events(
        store, clock, 2, PublishCommittedEvents(store, clock, Publisher(refuse=True), marks)
    )
    marks.flush()
    assert [e.id for e in pending(store)] == [e.id for e in events]


def test_a_failed_mark_is_logged_and_the_relay_hands_the_events_over_again(
    store: CountingStore, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    marks = DispatchMarks(store, clock, delay_seconds=NEVER)
    events = commit_events(
        store, clock, 2, PublishCommittedEvents(store, clock, Publisher(), marks)
    )
    store.fail = True
    with caplog.at_level(logging.ERROR, logger="zenzefi.outbox"):
        marks.flush()  # does not raise
    assert "could not mark 2 handed-over events dispatched" in caplog.text
    store.fail = False

    again = Publisher()
    assert RelayOutbox(store, clock, again)().dispatched == 2
    assert [e.id for e in again.published] == [e.id for e in events]


def test_the_relay_writes_the_processs_own_marks_before_looking(
    store: CountingStore, clock: FixedClock
) -> None:
    marks = DispatchMarks(store, clock, delay_seconds=NEVER)
    commit_events(store, clock, 3, PublishCommittedEvents(store, clock, Publisher(), marks))
    relayed = Publisher()
    report = RelayOutbox(store, clock, relayed, marks=marks)()
    assert (report.dispatched, relayed.published) == (0, [])
    assert pending(store) == []


def test_events_stored_dispatched_are_not_handed_over(
    store: CountingStore, clock: FixedClock
) -> None:
    publisher = Publisher()
    marks = DispatchMarks(store, clock, delay_seconds=NEVER)
    done = OutboxEvent(new_id(), "token.purchased", {}, clock.now(), dispatched_at=clock.now())
    PublishCommittedEvents(store, clock, publisher, marks)([done])
    marks.flush()
    assert (publisher.published, store.opened) == ([], 0)


def test_a_flush_returns_only_once_a_mark_in_flight_is_written(
    store: CountingStore, clock: FixedClock
) -> None:
    """`Core.close` flushes and then closes the database: a timer's mark still running then
    would write through a closed engine (and leak its connection)."""
    events = commit_events(store, clock, 2, lambda _events: None)
    entered, release = threading.Event(), threading.Event()

    def slow_store() -> InMemoryUnitOfWork:
        if not entered.is_set():  # only the first mark is slow
            entered.set()
            assert release.wait(10)
        return store()

    marks = DispatchMarks(slow_store, clock, delay_seconds=NEVER)
    marks.add([events[0].id])
    in_flight = threading.Thread(target=marks.flush)
    in_flight.start()
    assert entered.wait(10)
    second = threading.Thread(target=marks.flush)
    second.start()
    second.join(0.2)
    assert second.is_alive(), "the second flush returned while the first was still marking"
    release.set()
    in_flight.join(10)
    second.join(10)
    with store.store.unit_of_work() as uow:
        assert [event.id for event in uow.outbox.pending(limit=10)] == [events[1].id]
