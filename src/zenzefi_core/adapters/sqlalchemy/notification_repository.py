"""Notification preferences, the notification log and the scans' token notices in SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Row, Table, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from zenzefi_core.adapters.sqlalchemy.tables import (
    access_tokens,
    notification_preferences,
    notifications,
    token_notices,
)

# The token repository's row mapper, so a token reads the same whichever query loaded it.
from zenzefi_core.adapters.sqlalchemy.token_repository import _token as token_from_row
from zenzefi_core.domain.notifications import Notification, NotificationKind, NotificationState
from zenzefi_core.domain.tokens import AccessToken
from zenzefi_core.ports import Page

#: `token_notices.kind` of the "expires soon" notice.
EXPIRING = "expiring"


def _upsert_insert(connection: Connection, table: Table) -> Any:
    """INSERT with the engine's own ON CONFLICT clause (both engines spell it the same way)."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


class SqlNotificationPreferenceRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def for_user(self, user_id: UUID) -> dict[NotificationKind, bool]:
        rows = self._c.execute(
            select(notification_preferences.c.kind, notification_preferences.c.enabled).where(
                notification_preferences.c.user_id == user_id
            )
        )
        return {NotificationKind(row.kind): row.enabled for row in rows}

    def set(self, user_id: UUID, kind: NotificationKind, enabled: bool, at: datetime) -> None:
        statement = (
            _upsert_insert(self._c, notification_preferences)
            .values(user_id=user_id, kind=kind.value, enabled=enabled, updated_at=at)
            .on_conflict_do_update(
                index_elements=["user_id", "kind"],
                set_={"enabled": enabled, "updated_at": at},
            )
        )
        self._c.execute(statement)


def _notification(row: Row[Any]) -> Notification:
    return Notification(
        id=row.id,
        user_id=row.user_id,
        kind=NotificationKind(row.kind),
        dedup_key=row.dedup_key,
        recipient=row.recipient,
        subject=row.subject,
        body_text=row.body_text,
        body_html=row.body_html,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        updated_at=row.updated_at,
        state=NotificationState(row.state),
        attempts=row.attempts,
        last_error=row.last_error,
        locked_until=row.locked_until,
        sent_at=row.sent_at,
    )


class SqlNotificationLogRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def add(self, notification: Notification) -> bool:
        statement = (
            _upsert_insert(self._c, notifications)
            .values(
                id=notification.id,
                user_id=notification.user_id,
                kind=notification.kind.value,
                dedup_key=notification.dedup_key,
                recipient=notification.recipient,
                subject=notification.subject,
                body_text=notification.body_text,
                body_html=notification.body_html,
                state=notification.state.value,
                attempts=notification.attempts,
                last_error=notification.last_error,
                created_at=notification.created_at,
                updated_at=notification.updated_at,
                next_attempt_at=notification.next_attempt_at,
                locked_until=notification.locked_until,
                sent_at=notification.sent_at,
            )
            # No savepoint needed: a taken key skips the row instead of failing the transaction.
            .on_conflict_do_nothing(index_elements=["dedup_key"])
            .returning(notifications.c.id)
        )
        return self._c.execute(statement).first() is not None

    def _one(self, *where: Any) -> Notification | None:
        row = self._c.execute(select(notifications).where(*where)).first()
        return None if row is None else _notification(row)

    def get(self, notification_id: UUID) -> Notification | None:
        return self._one(notifications.c.id == notification_id)

    def get_by_dedup_key(self, key: str) -> Notification | None:
        return self._one(notifications.c.dedup_key == key)

    def count_since(self, user_id: UUID, kind: NotificationKind, since: datetime) -> int:
        return self._c.execute(
            select(func.count())
            .select_from(notifications)
            .where(
                notifications.c.user_id == user_id,
                notifications.c.kind == kind.value,
                notifications.c.created_at > since,
            )
        ).scalar_one()

    def claim(
        self, notification_id: UUID, now: datetime, lease_until: datetime
    ) -> Notification | None:
        row = self._c.execute(
            update(notifications)
            .where(
                notifications.c.id == notification_id,
                notifications.c.state == NotificationState.QUEUED.value,
                notifications.c.next_attempt_at <= now,
                or_(notifications.c.locked_until.is_(None), notifications.c.locked_until <= now),
            )
            .values(attempts=notifications.c.attempts + 1, locked_until=lease_until, updated_at=now)
            .returning(*notifications.c)
        ).first()
        return None if row is None else _notification(row)

    def mark_sent(self, notification_id: UUID, at: datetime) -> None:
        self._c.execute(
            update(notifications)
            .where(notifications.c.id == notification_id)
            .values(
                state=NotificationState.SENT.value,
                sent_at=at,
                updated_at=at,
                locked_until=None,
                last_error=None,
            )
        )

    def record_failure(
        self, notification_id: UUID, *, error: str, at: datetime, retry_at: datetime | None
    ) -> None:
        values: dict[str, Any] = {"last_error": error, "updated_at": at, "locked_until": None}
        if retry_at is None:
            values["state"] = NotificationState.FAILED.value
        else:
            values.update(state=NotificationState.QUEUED.value, next_attempt_at=retry_at)
        self._c.execute(
            update(notifications).where(notifications.c.id == notification_id).values(**values)
        )

    def due(self, *, before: datetime, now: datetime, limit: int) -> list[UUID]:
        rows = self._c.execute(
            select(notifications.c.id)
            .where(
                notifications.c.state == NotificationState.QUEUED.value,
                notifications.c.next_attempt_at <= before,
                or_(notifications.c.locked_until.is_(None), notifications.c.locked_until <= now),
            )
            .order_by(notifications.c.next_attempt_at, notifications.c.id)
            .limit(limit)
        )
        return [row.id for row in rows]

    def list_entries(
        self,
        *,
        limit: int,
        offset: int,
        user_id: UUID | None = None,
        state: NotificationState | None = None,
    ) -> Page[Notification]:
        where: list[Any] = []
        if user_id is not None:
            where.append(notifications.c.user_id == user_id)
        if state is not None:
            where.append(notifications.c.state == state.value)
        total = self._c.execute(select(func.count()).select_from(notifications).where(*where))
        rows = self._c.execute(
            select(notifications)
            .where(*where)
            .order_by(notifications.c.created_at.desc(), notifications.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return Page(
            items=[_notification(row) for row in rows],
            total=total.scalar_one(),
            limit=limit,
            offset=offset,
        )


class SqlTokenNoticeRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def claim_expiring(
        self,
        now: datetime,
        until: datetime,
        *,
        limit: int,
        after: datetime | None = None,
    ) -> list[AccessToken]:
        told = exists().where(
            token_notices.c.token_id == access_tokens.c.id, token_notices.c.kind == EXPIRING
        )
        where = [
            access_tokens.c.revoked_at.is_(None),
            access_tokens.c.expires_at > now,
            access_tokens.c.expires_at <= until,
            ~told,
        ]
        if after is not None:
            # Ties on `after` are read again; the anti-join leaves out those already claimed.
            where.append(access_tokens.c.expires_at >= after)
        rows = self._c.execute(
            select(access_tokens)
            .where(*where)
            .order_by(access_tokens.c.expires_at, access_tokens.c.id)
            .limit(limit)
        )
        tokens = [token_from_row(row) for row in rows]
        if not tokens:
            return []
        claimed = self._c.execute(
            _upsert_insert(self._c, token_notices)
            .values([{"token_id": t.id, "kind": EXPIRING, "created_at": now} for t in tokens])
            .on_conflict_do_nothing(index_elements=["token_id", "kind"])
            .returning(token_notices.c.token_id)
        )
        ours = {row.token_id for row in claimed}
        return [token for token in tokens if token.id in ours]
