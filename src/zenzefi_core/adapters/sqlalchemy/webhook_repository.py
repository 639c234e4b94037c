"""Webhook endpoints, deliveries and attempts in SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Row, case, delete, insert, null, or_, select, update

from zenzefi_core.adapters.sqlalchemy.notification_repository import _upsert_insert
from zenzefi_core.adapters.sqlalchemy.tables import (
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
)
from zenzefi_core.domain.webhooks import (
    DeliveryAttempt,
    DeliveryState,
    WebhookDelivery,
    WebhookEndpoint,
)


def _endpoint(row: Row[Any]) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row.id,
        user_id=row.user_id,
        url=row.url,
        events=tuple(row.events),
        is_active=row.is_active,
        secret_encrypted=row.secret_encrypted,
        created_at=row.created_at,
        updated_at=row.updated_at,
        previous_secret_encrypted=row.previous_secret_encrypted,
        previous_secret_until=row.previous_secret_until,
        failing_since=row.failing_since,
        disabled_at=row.disabled_at,
    )


def _endpoint_values(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "url": endpoint.url,
        "events": list(endpoint.events),
        "is_active": endpoint.is_active,
        "secret_encrypted": endpoint.secret_encrypted,
        "previous_secret_encrypted": endpoint.previous_secret_encrypted,
        "previous_secret_until": endpoint.previous_secret_until,
        "failing_since": endpoint.failing_since,
        "disabled_at": endpoint.disabled_at,
        "updated_at": endpoint.updated_at,
    }


def _delivery(row: Row[Any]) -> WebhookDelivery:
    return WebhookDelivery(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event_type=row.event_type,
        body=row.body,
        created_at=row.created_at,
        updated_at=row.updated_at,
        next_attempt_at=row.next_attempt_at,
        state=DeliveryState(row.state),
        attempts=row.attempts,
        last_status_code=row.last_status_code,
        locked_until=row.locked_until,
    )


def _attempt(row: Row[Any]) -> DeliveryAttempt:
    return DeliveryAttempt(
        id=row.id,
        delivery_id=row.delivery_id,
        attempted_at=row.attempted_at,
        latency_ms=row.latency_ms,
        status_code=row.status_code,
        response_body=row.response_body,
        error=row.error,
    )


class SqlWebhookRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def add_endpoint(self, endpoint: WebhookEndpoint) -> None:
        self._c.execute(
            insert(webhook_endpoints).values(
                id=endpoint.id,
                user_id=endpoint.user_id,
                created_at=endpoint.created_at,
                **_endpoint_values(endpoint),
            )
        )

    def get_endpoint(self, endpoint_id: UUID) -> WebhookEndpoint | None:
        row = self._c.execute(
            select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
        ).first()
        return None if row is None else _endpoint(row)

    def endpoints_for_user(self, user_id: UUID) -> list[WebhookEndpoint]:
        rows = self._c.execute(
            select(webhook_endpoints)
            .where(webhook_endpoints.c.user_id == user_id)
            .order_by(webhook_endpoints.c.created_at, webhook_endpoints.c.id)
        )
        return [_endpoint(row) for row in rows]

    def active_endpoints(self, user_id: UUID) -> list[WebhookEndpoint]:
        rows = self._c.execute(
            select(webhook_endpoints)
            .where(webhook_endpoints.c.user_id == user_id, webhook_endpoints.c.is_active.is_(True))
            .order_by(webhook_endpoints.c.created_at, webhook_endpoints.c.id)
        )
        return [_endpoint(row) for row in rows]

    def _set(self, endpoint_id: UUID, *where: Any, **values: Any) -> WebhookEndpoint | None:
        row = self._c.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == endpoint_id, *where)
            .values(**values)
            .returning(*webhook_endpoints.c)
        ).first()
        return None if row is None else _endpoint(row)

    def change_endpoint(
        self,
        endpoint_id: UUID,
        *,
        at: datetime,
        url: str | None = None,
        events: tuple[str, ...] | None = None,
        is_active: bool | None = None,
    ) -> WebhookEndpoint | None:
        e = webhook_endpoints.c
        values: dict[str, Any] = {"updated_at": at}
        if url is not None:
            values["url"] = url
        if events is not None:
            values["events"] = list(events)
        if is_active is not None:
            values["is_active"] = is_active
        if is_active is True:
            # Every right-hand side sees the row as it was before this statement.
            values["failing_since"] = case((e.is_active, e.failing_since), else_=null())
            values["disabled_at"] = case((e.is_active, e.disabled_at), else_=null())
        return self._set(endpoint_id, **values)

    def rotate_secret(
        self, endpoint_id: UUID, secret_encrypted: str, *, previous_until: datetime, at: datetime
    ) -> WebhookEndpoint | None:
        e = webhook_endpoints.c
        return self._set(
            endpoint_id,
            secret_encrypted=secret_encrypted,
            previous_secret_encrypted=e.secret_encrypted,
            previous_secret_until=previous_until,
            updated_at=at,
        )

    def mark_failing(self, endpoint_id: UUID, at: datetime) -> None:
        e = webhook_endpoints.c
        self._set(
            endpoint_id,
            e.is_active.is_(True),
            e.failing_since.is_(None),
            failing_since=at,
            updated_at=at,
        )

    def clear_failing(self, endpoint_id: UUID, at: datetime) -> None:
        e = webhook_endpoints.c
        self._set(endpoint_id, e.failing_since.is_not(None), failing_since=None, updated_at=at)

    def disable_failing(
        self, endpoint_id: UUID, *, failing_since_before: datetime, at: datetime
    ) -> WebhookEndpoint | None:
        e = webhook_endpoints.c
        return self._set(
            endpoint_id,
            e.is_active.is_(True),
            e.failing_since <= failing_since_before,
            is_active=False,
            disabled_at=at,
            updated_at=at,
        )

    def delete_endpoint(self, endpoint_id: UUID) -> None:
        # Explicitly, child rows first: SQLite enforces ON DELETE CASCADE only when asked to.
        deliveries = select(webhook_deliveries.c.id).where(
            webhook_deliveries.c.endpoint_id == endpoint_id
        )
        self._c.execute(
            delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(deliveries))
        )
        self._c.execute(
            delete(webhook_deliveries).where(webhook_deliveries.c.endpoint_id == endpoint_id)
        )
        self._c.execute(delete(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id))

    def add_delivery(self, delivery: WebhookDelivery) -> bool:
        statement = (
            _upsert_insert(self._c, webhook_deliveries)
            .values(
                id=delivery.id,
                endpoint_id=delivery.endpoint_id,
                event_id=delivery.event_id,
                event_type=delivery.event_type,
                body=delivery.body,
                state=delivery.state.value,
                attempts=delivery.attempts,
                last_status_code=delivery.last_status_code,
                next_attempt_at=delivery.next_attempt_at,
                locked_until=delivery.locked_until,
                created_at=delivery.created_at,
                updated_at=delivery.updated_at,
            )
            .on_conflict_do_nothing(index_elements=["event_id", "endpoint_id"])
            .returning(webhook_deliveries.c.id)
        )
        return self._c.execute(statement).first() is not None

    def get_delivery(self, delivery_id: UUID) -> WebhookDelivery | None:
        row = self._c.execute(
            select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)
        ).first()
        return None if row is None else _delivery(row)

    def delivery_for(self, event_id: UUID, endpoint_id: UUID) -> WebhookDelivery | None:
        row = self._c.execute(
            select(webhook_deliveries).where(
                webhook_deliveries.c.event_id == event_id,
                webhook_deliveries.c.endpoint_id == endpoint_id,
            )
        ).first()
        return None if row is None else _delivery(row)

    def deliveries_for_endpoint(self, endpoint_id: UUID, *, limit: int) -> list[WebhookDelivery]:
        rows = self._c.execute(
            select(webhook_deliveries)
            .where(webhook_deliveries.c.endpoint_id == endpoint_id)
            .order_by(webhook_deliveries.c.created_at.desc(), webhook_deliveries.c.id.desc())
            .limit(limit)
        )
        return [_delivery(row) for row in rows]

    def claim_delivery(
        self, delivery_id: UUID, now: datetime, lease_until: datetime
    ) -> WebhookDelivery | None:
        d = webhook_deliveries.c
        row = self._c.execute(
            update(webhook_deliveries)
            .where(
                d.id == delivery_id,
                d.state == DeliveryState.PENDING.value,
                d.next_attempt_at <= now,
                or_(d.locked_until.is_(None), d.locked_until <= now),
            )
            .values(attempts=d.attempts + 1, locked_until=lease_until, updated_at=now)
            .returning(*webhook_deliveries.c)
        ).first()
        return None if row is None else _delivery(row)

    def record_attempt(
        self,
        attempt: DeliveryAttempt,
        *,
        state: DeliveryState,
        next_attempt_at: datetime | None,
    ) -> None:
        self._c.execute(
            insert(webhook_attempts).values(
                id=attempt.id,
                delivery_id=attempt.delivery_id,
                attempted_at=attempt.attempted_at,
                status_code=attempt.status_code,
                latency_ms=attempt.latency_ms,
                response_body=attempt.response_body,
                error=attempt.error,
            )
        )
        self._c.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.id == attempt.delivery_id)
            .values(
                state=state.value,
                next_attempt_at=next_attempt_at,
                last_status_code=attempt.status_code,
                locked_until=None,
                updated_at=attempt.attempted_at,
            )
        )

    def attempts(self, delivery_id: UUID) -> list[DeliveryAttempt]:
        rows = self._c.execute(
            select(webhook_attempts)
            .where(webhook_attempts.c.delivery_id == delivery_id)
            .order_by(webhook_attempts.c.attempted_at, webhook_attempts.c.id)
        )
        return [_attempt(row) for row in rows]

    def requeue_delivery(self, delivery_id: UUID, now: datetime) -> None:
        self._c.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.id == delivery_id)
            .values(state=DeliveryState.PENDING.value, next_attempt_at=now, updated_at=now)
        )

    def due_deliveries(self, *, before: datetime, now: datetime, limit: int) -> list[UUID]:
        d = webhook_deliveries.c
        rows = self._c.execute(
            select(d.id)
            .where(
                d.state == DeliveryState.PENDING.value,
                d.next_attempt_at <= before,
                or_(d.locked_until.is_(None), d.locked_until <= now),
            )
            .order_by(d.next_attempt_at, d.id)
            .limit(limit)
        )
        return [row.id for row in rows]
