"""Referral bonuses and their clawbacks in SQL; the monthly cap is summed by the database."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Row, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError

from zenzefi_core.adapters.sqlalchemy.repositories import _cents
from zenzefi_core.adapters.sqlalchemy.tables import referral_bonuses, users
from zenzefi_core.domain.referrals import ReferralBonus
from zenzefi_core.errors import Conflict
from zenzefi_core.money import ZERO, quantize


def _bonus(row: Row[Any]) -> ReferralBonus:
    return ReferralBonus(
        id=row.id,
        referrer_id=row.referrer_id,
        referee_id=row.referee_id,
        purchase_type=row.purchase_type,
        purchase_id=row.purchase_id,
        purchase_amount=row.purchase_amount,
        amount=row.amount,
        transaction_id=row.transaction_id,
        created_at=row.created_at,
        clawed_back=row.clawed_back,
        shortfall=row.shortfall,
    )


class SqlReferralRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def add(self, bonus: ReferralBonus) -> None:
        try:
            with self._c.begin_nested():
                self._c.execute(
                    insert(referral_bonuses).values(
                        id=bonus.id,
                        referrer_id=bonus.referrer_id,
                        referee_id=bonus.referee_id,
                        purchase_type=bonus.purchase_type,
                        purchase_id=bonus.purchase_id,
                        purchase_amount=bonus.purchase_amount,
                        amount=bonus.amount,
                        clawed_back=bonus.clawed_back,
                        shortfall=bonus.shortfall,
                        transaction_id=bonus.transaction_id,
                        created_at=bonus.created_at,
                    )
                )
        except IntegrityError:
            raise Conflict("This purchase already earned a bonus") from None

    def for_purchase(self, purchase_id: UUID) -> ReferralBonus | None:
        row = self._c.execute(
            select(referral_bonuses).where(referral_bonuses.c.purchase_id == purchase_id)
        ).first()
        return None if row is None else _bonus(row)

    def record_clawback(self, bonus_id: UUID, *, taken: Decimal, shortfall: Decimal) -> bool:
        money = referral_bonuses.c.amount.type
        taken_now = literal(taken, money)
        short_now = literal(shortfall, money)
        b = referral_bonuses.c
        result = self._c.execute(
            update(referral_bonuses)
            .where(
                b.id == bonus_id,
                _cents(b.amount - b.clawed_back - b.shortfall - taken_now - short_now) >= 0,
            )
            .values(
                clawed_back=_cents(b.clawed_back + taken_now),
                shortfall=_cents(b.shortfall + short_now),
            )
        )
        return result.rowcount == 1

    def kept_between(self, referrer_id: UUID, start: datetime, end: datetime) -> Decimal:
        b = referral_bonuses.c
        total = self._c.execute(
            select(_cents(func.coalesce(func.sum(b.amount - b.clawed_back), 0))).where(
                b.referrer_id == referrer_id, b.created_at >= start, b.created_at < end
            )
        ).scalar_one()
        return ZERO if total is None else quantize(Decimal(str(total)))

    def lock_referrer(self, referrer_id: UUID) -> None:
        # FOR NO KEY UPDATE on PostgreSQL: the lock a balance update takes, which still lets
        # other transactions insert rows that reference the user. On SQLite it takes the
        # database's write lock (see engine.py).
        self._c.execute(
            select(users.c.id).where(users.c.id == referrer_id).with_for_update(key_share=True)
        )
