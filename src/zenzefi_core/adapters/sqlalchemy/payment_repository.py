"""Payment intents and processed provider events in SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from zenzefi_core.adapters.sqlalchemy.tables import payment_events, payment_intents
from zenzefi_core.domain import PaymentIntent, PaymentStatus, ProviderEvent
from zenzefi_core.ports import Page


def _intent(row: Row[Any]) -> PaymentIntent:
    return PaymentIntent(
        id=row.id,
        user_id=row.user_id,
        amount_znc=row.amount_znc,
        amount_rub=row.amount_rub,
        status=PaymentStatus(row.status),
        provider=row.provider,
        payment_url=row.payment_url,
        created_at=row.created_at,
        updated_at=row.updated_at,
        completed_at=row.completed_at,
    )


class SqlPaymentRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def add(self, intent: PaymentIntent) -> None:
        self._c.execute(
            insert(payment_intents).values(
                id=intent.id,
                user_id=intent.user_id,
                amount_znc=intent.amount_znc,
                amount_rub=intent.amount_rub,
                status=intent.status.value,
                provider=intent.provider,
                payment_url=intent.payment_url,
                created_at=intent.created_at,
                updated_at=intent.updated_at,
                completed_at=intent.completed_at,
            )
        )

    def get(self, payment_id: UUID) -> PaymentIntent | None:
        row = self._c.execute(
            select(payment_intents).where(payment_intents.c.id == payment_id)
        ).first()
        return None if row is None else _intent(row)

    def list_for_user(self, user_id: UUID, *, limit: int, offset: int) -> Page[PaymentIntent]:
        where = payment_intents.c.user_id == user_id
        total = self._c.execute(select(func.count()).select_from(payment_intents).where(where))
        rows = self._c.execute(
            select(payment_intents)
            .where(where)
            .order_by(payment_intents.c.created_at.desc(), payment_intents.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return Page(
            items=[_intent(row) for row in rows],
            total=total.scalar_one(),
            limit=limit,
            offset=offset,
        )

    def complete(self, payment_id: UUID, status: PaymentStatus, at: datetime) -> bool:
        result = self._c.execute(
            update(payment_intents)
            .where(
                payment_intents.c.id == payment_id,
                payment_intents.c.status == PaymentStatus.PENDING.value,
            )
            .values(status=status.value, updated_at=at, completed_at=at)
        )
        return result.rowcount == 1

    def record_event(self, event: ProviderEvent) -> bool:
        try:
            with self._c.begin_nested():
                self._c.execute(
                    insert(payment_events).values(
                        event_id=event.event_id,
                        payment_id=event.payment_id,
                        status=event.status.value,
                        received_at=event.received_at,
                    )
                )
        except IntegrityError:
            return False
        return True
