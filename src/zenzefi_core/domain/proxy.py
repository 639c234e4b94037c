"""Proxy sessions: one device using one token, and what it moved through the proxy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


@dataclass(frozen=True, slots=True)
class ProxySession:
    """A device's use of a token. At most one per token is open (`ended_at` is None) at a time;
    the counters grow by batches of usage flushed from memory, so `last_activity` may lag the
    real last request by up to one flush interval."""

    id: UUID
    token_id: UUID
    user_id: UUID
    device_id: str
    started_at: datetime
    last_activity: datetime
    ip: str | None = None
    user_agent: str | None = None
    ended_at: datetime | None = None
    request_count: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass(frozen=True, slots=True)
class UsageDelta:
    """Usage of one session since the last flush: added to its counters, never replacing."""

    session_id: UUID
    requests: int
    bytes_in: int
    bytes_out: int
    last_activity: datetime
