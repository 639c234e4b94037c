"""Domain events, written to the outbox inside the unit of work that caused them."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from zenzefi_core.domain import OutboxEvent
from zenzefi_core.ids import new_id
from zenzefi_core.ports import Clock, UnitOfWork


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
