from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID


class NotificationKind(StrEnum):
    """The emails a user can receive, each with its own on/off preference."""

    TOKEN_EXPIRING = "token_expiring"  # noqa: S105 - a kind of email, not a secret
    BALANCE_LOW = "balance_low"
    REFERRAL_BONUS = "referral_bonus"


class NotificationState(StrEnum):
    """Where an email stands: waiting to be (re)sent, accepted by the mail server, or given up."""

    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Notification:
    """One email, rendered once and kept in the notification log.

    `dedup_key` is unique: whatever triggers the email (an event relayed twice, a scan run
    twice) maps to the same key, so the log holds it once and it is sent once. A failed attempt
    keeps the email `queued` with `last_error` and `next_attempt_at`; after the last attempt it
    becomes `failed`. `locked_until` is the lease of the worker sending it right now, so two
    workers holding the same message cannot both send it.
    """

    id: UUID
    user_id: UUID
    kind: NotificationKind
    dedup_key: str
    recipient: str
    subject: str
    body_text: str
    body_html: str
    created_at: datetime
    #: When the next attempt may start; the creation time for a new email.
    next_attempt_at: datetime
    updated_at: datetime
    state: NotificationState = NotificationState.QUEUED
    attempts: int = 0
    last_error: str | None = None
    locked_until: datetime | None = None
    sent_at: datetime | None = None
