"""Domain events, written to the outbox inside the unit of work that caused them."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from zenzefi_core.domain import OutboxEvent
from zenzefi_core.ids import new_id
from zenzefi_core.notifications import KIND_FOR_EVENT
from zenzefi_core.ports import Clock, UnitOfWork
from zenzefi_core.webhooks import REDELIVERY_EVENT, TEST_EVENT

#: The events the worker (`zenzefi_worker`) always has work for: those that may lead to an
#: email (whether one is due is its decision, with the user's preferences and limits at hand)
#: and the webhook system's own. Any other event matters only to the webhook endpoints of its
#: user that subscribe to it; the units of work the product runs (`bootstrap.Core.uow`) store
#: such an event already dispatched when there is none, so it never costs the broker or the
#: worker anything.
WORKER_EVENTS: frozenset[str] = frozenset(KIND_FOR_EVENT) | {TEST_EVENT, REDELIVERY_EVENT}


def record_event(
    uow: UnitOfWork,
    clock: Clock,
    event_type: str,
    payload: dict[str, Any],
    *,
    user_id: UUID | None = None,
) -> OutboxEvent:
    """Queue an event for the worker; it leaves only if the surrounding transaction commits."""
    event = OutboxEvent(
        id=new_id(),
        event_type=event_type,
        payload=payload,
        created_at=clock.now(),
        user_id=user_id,
    )
    uow.outbox.add(event)
    return event
