from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID


class AuditAction(StrEnum):
    """What an operator did. Values are stored, so rename a member but never its value."""

    BALANCE_ADJUSTED = "balance.adjusted"
    USER_ACTIVATED = "user.activated"
    USER_DEACTIVATED = "user.deactivated"
    SUPERUSER_GRANTED = "user.superuser_granted"
    SUPERUSER_REVOKED = "user.superuser_revoked"
    PAYMENT_SETTLED = "payment.settled_manually"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One operator action: who did what to which record, from where and when.

    Written in the same transaction as the change it records, so an action never happens
    without its entry, nor an entry without its action.
    """

    id: UUID
    actor_id: UUID | None
    action: AuditAction
    target_type: str
    target_id: str
    details: dict[str, Any]
    client_address: str | None
    created_at: datetime
