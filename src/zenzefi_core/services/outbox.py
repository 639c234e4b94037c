"""Getting outbox events to the message broker: right after commit, and by the periodic relay.

A use case writes its events in its own transaction. Right after that transaction ends, the
process that ran it hands them to the broker (`PublishCommittedEvents`, the units of work's
after-commit hook). Whatever that misses (the broker was down, the process died in between) is
picked up by `RelayOutbox`, which a scheduler runs every few seconds. Either way an event is
marked dispatched only once the broker has accepted it, so none is lost; one may be handed over
twice (both paths at once), which the consumers shrug off because they are idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from zenzefi_core.domain import OutboxEvent
from zenzefi_core.errors import BrokerUnavailable
from zenzefi_core.ports import Clock, EventPublisher, UnitOfWorkFactory

logger = logging.getLogger("zenzefi.outbox")

#: Events one relay transaction takes at most; the relay job repeats until the outbox is empty.
DEFAULT_RELAY_BATCH = 200


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
    others), handed over, and those the broker accepted are marked dispatched at commit.
    """

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        publisher: EventPublisher,
        *,
        batch_size: int = DEFAULT_RELAY_BATCH,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._publisher = publisher
        self._batch_size = batch_size

    def __call__(self) -> RelayReport:
        with self._uow_factory() as uow:
            events = uow.outbox.pending(limit=self._batch_size)
            accepted = _publish_all(self._publisher, events)
            uow.outbox.mark_dispatched(accepted, self._clock.now())
            uow.commit()
        return RelayReport(dispatched=len(accepted), left=len(events) - len(accepted))


class PublishCommittedEvents:
    """The after-commit hook: hand a use case's events to the broker as soon as it committed.

    Never raises, because the use case it follows has already succeeded: a broker or database
    failure here is logged and leaves the events pending for the relay.
    """

    def __init__(
        self, uow_factory: UnitOfWorkFactory, clock: Clock, publisher: EventPublisher
    ) -> None:
        # A factory without this hook: marking events dispatched writes no events of its own.
        self._uow_factory = uow_factory
        self._clock = clock
        self._publisher = publisher

    def __call__(self, events: Sequence[OutboxEvent]) -> None:
        # Those stored already dispatched have nothing waiting for them.
        waiting = [event for event in events if event.dispatched_at is None]
        if not waiting:
            return
        try:
            accepted = _publish_all(self._publisher, waiting)
            if not accepted:
                return
            with self._uow_factory() as uow:
                uow.outbox.mark_dispatched(accepted, self._clock.now())
                uow.commit()
        except Exception:
            logger.exception("could not hand %d committed events over; the relay will", len(events))
