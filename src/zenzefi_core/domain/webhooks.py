from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """A URL a user registered to receive events, with its secret encrypted at rest.

    After a rotation `previous_secret` keeps signing beside the new one until
    `previous_secret_until`, so a receiver can switch over without losing messages.
    `failing_since` is the start of the current run of failed deliveries; an endpoint failing
    for the whole failure window is switched off (`is_active` false, `disabled_at` set).
    """

    id: UUID
    user_id: UUID
    url: str
    events: tuple[str, ...]
    is_active: bool
    secret_encrypted: str
    created_at: datetime
    updated_at: datetime
    previous_secret_encrypted: str | None = None
    previous_secret_until: datetime | None = None
    failing_since: datetime | None = None
    disabled_at: datetime | None = None


class DeliveryState(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One event for one endpoint: unique per (event, endpoint), so an event handled twice
    is delivered once. Its id is the `webhook-id` of every attempt, redeliveries included;
    `body` is the exact JSON sent each time. `locked_until` is the lease of the worker making
    an attempt right now."""

    id: UUID
    endpoint_id: UUID
    event_id: UUID
    event_type: str
    body: str
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    last_status_code: int | None = None
    locked_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """What one attempt saw: the receiver's status and (truncated) answer, or the error."""

    id: UUID
    delivery_id: UUID
    attempted_at: datetime
    latency_ms: int
    status_code: int | None = None
    response_body: str | None = None
    error: str | None = None
