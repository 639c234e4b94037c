"""Referral shares, older bonuses and their clawbacks in SQL; the monthly cap and the pending
total are summed by the database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Row, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError

from zenzefi_core.adapters.sqlalchemy.repositories import _cents, _sum
from zenzefi_core.adapters.sqlalchemy.tables import referral_bonuses, referral_shares, users
from zenzefi_core.domain.referrals import ReferralBonus, ReferralShare, ShareState
from zenzefi_core.errors import Conflict
from zenzefi_core.money import ZERO


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


def _share(row: Row[Any]) -> ReferralShare:
    return ReferralShare(
        token_id=row.token_id,
        referrer_id=row.referrer_id,
        referee_id=row.referee_id,
        purchase_type=row.purchase_type,
        purchase_id=row.purchase_id,
        amount=row.amount,
        created_at=row.created_at,
        state=ShareState(row.state),
        credited=row.credited,
        transaction_id=row.transaction_id,
        settled_at=row.settled_at,
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

    def add_shares(self, shares: Sequence[ReferralShare]) -> None:
        if not shares:
            return
        try:
            with self._c.begin_nested():
                self._c.execute(
                    insert(referral_shares),
                    [
                        {
                            "token_id": share.token_id,
                            "referrer_id": share.referrer_id,
                            "referee_id": share.referee_id,
                            "purchase_type": share.purchase_type,
                            "purchase_id": share.purchase_id,
                            "amount": share.amount,
                            "state": share.state.value,
                            "credited": share.credited,
                            "transaction_id": share.transaction_id,
                            "created_at": share.created_at,
                            "settled_at": share.settled_at,
                        }
                        for share in shares
                    ],
                )
        except IntegrityError:
            raise Conflict("This token already has a referral share") from None

    def share_for_token(self, token_id: UUID) -> ReferralShare | None:
        row = self._c.execute(
            select(referral_shares).where(referral_shares.c.token_id == token_id)
        ).first()
        return None if row is None else _share(row)

    def settle_share(
        self,
        token_id: UUID,
        state: ShareState,
        at: datetime,
        *,
        credited: Decimal = ZERO,
        transaction_id: UUID | None = None,
    ) -> bool:
        s = referral_shares.c
        result = self._c.execute(
            update(referral_shares)
            .where(s.token_id == token_id, s.state == ShareState.PENDING.value)
            .values(
                state=state.value, credited=credited, transaction_id=transaction_id, settled_at=at
            )
        )
        return result.rowcount == 1

    def pending_total(self, referrer_id: UUID) -> Decimal:
        s = referral_shares.c
        total = self._c.execute(
            select(_cents(func.coalesce(func.sum(s.amount), 0))).where(
                s.referrer_id == referrer_id, s.state == ShareState.PENDING.value
            )
        ).scalar_one()
        return _sum(total)

    def kept_between(self, referrer_id: UUID, start: datetime, end: datetime) -> Decimal:
        b = referral_bonuses.c
        older = self._c.execute(
            select(_cents(func.coalesce(func.sum(b.amount - b.clawed_back), 0))).where(
                b.referrer_id == referrer_id, b.created_at >= start, b.created_at < end
            )
        ).scalar_one()
        s = referral_shares.c
        credited = self._c.execute(
            select(_cents(func.coalesce(func.sum(s.credited), 0))).where(
                s.referrer_id == referrer_id, s.settled_at >= start, s.settled_at < end
            )
        ).scalar_one()
        return _sum(older) + _sum(credited)

    def lock_referrer(self, referrer_id: UUID) -> None:
        # FOR NO KEY UPDATE on PostgreSQL: the lock a balance update takes, which still lets
        # other transactions insert rows that reference the user. On SQLite it takes the
        # database's write lock (see engine.py).
        self._c.execute(
            select(users.c.id).where(users.c.id == referrer_id).with_for_update(key_share=True)
        )
