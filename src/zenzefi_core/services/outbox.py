"""Getting outbox events to the message broker: right after commit, and by the periodic relay.

A use case writes its events in its own transaction. Right after that transaction ends, the
process that ran it hands them to the broker (`PublishCommittedEvents`, the units of work's
after-commit hook). Whatever that misses (the broker was down, the process died in between) is
picked up by `RelayOutbox`, which a scheduler runs every few seconds. Either way an event is
marked dispatched only once the broker has accepted it, so none is lost; one may be handed over
twice (both paths at once), which the consumers shrug off because they are idempotent.

The after-commit hand-over does not mark each use case's events in a transaction of its own:
`DispatchMarks` collects the accepted ids and marks them a batch at a time, at most
`DEFAULT_MARK_DELAY_SECONDS` later. An event whose mark is still waiting may be handed over a
second time by a relay running just then (or after the process died with its marks), which is
the same harmless duplicate as above. Events nothing consumes are stored already dispatched
(see `services.events.WORKER_EVENTS`) and never reach the broker at all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from zenzefi_core.domain import OutboxEvent
from zenzefi_core.errors import BrokerUnavailable
from zenzefi_core.ports import Clock, EventPublisher, UnitOfWorkFactory

logger = logging.getLogger("zenzefi.outbox")

#: Events one relay transaction takes at most; the relay job repeats until the outbox is empty.
DEFAULT_RELAY_BATCH = 200
#: How long an accepted event may wait before `DispatchMarks` marks it dispatched, and how many
#: may wait at most: under load one small transaction marks a batch; when idle, little waits.
DEFAULT_MARK_DELAY_SECONDS = 0.5
DEFAULT_MARK_BATCH = 200


def _publish_all(publisher: EventPublisher, events: Sequence[OutboxEvent]) -> list[UUID]:
    """The ids of the events the broker accepted, in order, up to the first refusal: after one
    refusal the broker is most likely down, and the rest would only wait for it to time out."""
    accepted: list[UUID] = []
    for event in events:
        try:
            publisher.publish(event)
        except BrokerUnavailable as error:
            logger.warning(
                "broker refused event %s (%s): %s; %d left for the relay",
                event.id,
                event.event_type,
                error,
                len(events) - len(accepted),
            )
            break
        accepted.append(event.id)
    return accepted


@dataclass(frozen=True, slots=True)
class RelayReport:
    #: Events the broker accepted and that are now marked dispatched.
    dispatched: int
    #: Events taken from the outbox but left pending because the broker refused them.
    left: int

    @property
    def batch(self) -> int:
        return self.dispatched + self.left


class RelayOutbox:
    """Hand one batch of pending events to the broker, oldest first.

    One transaction: the pending rows are taken (locked, on PostgreSQL, so a second relay takes
    others), handed over, and those the broker accepted are marked dispatched at commit. With
    `marks` (the process's own after-commit marks), those are written first, so the relay does
    not hand over again what this process already did.
    """

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        publisher: EventPublisher,
        *,
        batch_size: int = DEFAULT_RELAY_BATCH,
        marks: DispatchMarks | None = None,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._publisher = publisher
        self._batch_size = batch_size
        self._marks = marks

    def __call__(self) -> RelayReport:
        if self._marks is not None:
            self._marks.flush()
        with self._uow_factory() as uow:
            events = uow.outbox.pending(limit=self._batch_size)
            accepted = _publish_all(self._publisher, events)
            uow.outbox.mark_dispatched(accepted, self._clock.now())
            uow.commit()
        return RelayReport(dispatched=len(accepted), left=len(events) - len(accepted))


class DispatchMarks:
    """Ids of events the broker accepted, marked dispatched a batch at a time.

    A batch is marked in one transaction when it is full (by the thread that filled it) or
    `delay_seconds` after its first id arrived (by a timer thread); `flush` marks what waits
    at once. A failure to mark is logged and leaves the events pending: the relay hands them
    over again, which the consumers shrug off.
    """

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        *,
        batch_size: int = DEFAULT_MARK_BATCH,
        delay_seconds: float = DEFAULT_MARK_DELAY_SECONDS,
    ) -> None:
        # A factory without an after-commit hook: marking events dispatched writes no events.
        self._uow_factory = uow_factory
        self._clock = clock
        self._batch_size = batch_size
        self._delay_seconds = delay_seconds
        self._lock = threading.Lock()
        # Held while a batch is being marked, so that `flush` returns only once every batch
        # taken before it is written: a process that flushes and then closes its database
        # (`Core.close`) never has a timer's mark still running on it.
        self._marking = threading.Lock()
        self._waiting: list[UUID] = []
        self._timer: threading.Timer | None = None

    def add(self, event_ids: Sequence[UUID]) -> None:
        if not event_ids:
            return
        with self._lock:
            self._waiting.extend(event_ids)
            if len(self._waiting) < self._batch_size:
                # A timer that is gone without flushing (the process forked) is replaced.
                if self._timer is None or not self._timer.is_alive():
                    self._timer = threading.Timer(self._delay_seconds, self.flush)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self.flush()

    def flush(self) -> None:
        """Mark what waits, and return once any batch another thread is marking is written."""
        with self._marking:
            with self._lock:
                batch = self._take()
            if batch:
                self._write(batch)

    def _take(self) -> list[UUID]:
        """Called holding the lock: the waiting ids, leaving none and no timer behind."""
        batch, self._waiting = self._waiting, []
        if self._timer is not None:
            # Cancelling the running timer from its own flush is harmless.
            self._timer.cancel()
            self._timer = None
        return batch

    def _write(self, event_ids: list[UUID]) -> None:
        try:
            with self._uow_factory() as uow:
                uow.outbox.mark_dispatched(event_ids, self._clock.now())
                uow.commit()
        except Exception:
            logger.exception(
                "could not mark %d handed-over events dispatched; the relay will hand them "
                "over again",
                len(event_ids),
            )


class PublishCommittedEvents:
    """The after-commit hook: hand a use case's events to the broker as soon as it committed.

    Events stored already dispatched (nothing consumes them) are left out. Those the broker
    accepts are marked dispatched through `marks` when given (in batches, shared by every unit
    of work of the process), otherwise at once in a transaction of their own.

    Never raises, because the use case it follows has already succeeded: a broker or database
    failure here is logged and leaves the events pending for the relay.
    """

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        publisher: EventPublisher,
        marks: DispatchMarks | None = None,
    ) -> None:
        # A factory without this hook: marking events dispatched writes no events of its own.
        self._uow_factory = uow_factory
        self._clock = clock
        self._publisher = publisher
        self._marks = marks

    def __call__(self, events: Sequence[OutboxEvent]) -> None:
        waiting = [event for event in events if event.dispatched_at is None]
        if not waiting:
            return
        try:
            accepted = _publish_all(self._publisher, waiting)
            if self._marks is not None:
                self._marks.add(accepted)
                return
            if not accepted:
                return
            with self._uow_factory() as uow:
                uow.outbox.mark_dispatched(accepted, self._clock.now())
                uow.commit()
        except Exception:
            logger.exception("could not hand %d committed events over; the relay will", len(events))
