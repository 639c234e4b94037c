from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """A domain event written in the same transaction as the change it reports.

    The worker relays it to the broker after commit and marks it dispatched only once the broker
    has accepted it, so an event is never lost between the database and the queue.
    """

    id: UUID
    event_type: str
    payload: dict[str, Any]
    created_at: datetime
    user_id: UUID | None = None
    dispatched_at: datetime | None = None
    attempts: int = field(default=0)
