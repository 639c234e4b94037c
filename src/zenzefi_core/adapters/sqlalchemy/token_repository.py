"""Access tokens in SQL."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Row, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from zenzefi_core.adapters.sqlalchemy.tables import access_tokens
from zenzefi_core.domain.tokens import AccessToken, TokenScope
from zenzefi_core.errors import Conflict
from zenzefi_core.ports import Page


def _token(row: Row[Any]) -> AccessToken:
    return AccessToken(
        id=row.id,
        user_id=row.user_id,
        token_hash=row.token_hash,
        token_prefix=row.token_prefix,
        duration_hours=row.duration_hours,
        scope=TokenScope(row.scope),
        price_paid=row.price_paid,
        created_at=row.created_at,
        bundle_purchase_id=row.bundle_purchase_id,
        activated_at=row.activated_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def _values(token: AccessToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "user_id": token.user_id,
        "token_hash": token.token_hash,
        "token_prefix": token.token_prefix,
        "duration_hours": token.duration_hours,
        "scope": token.scope.value,
        "price_paid": token.price_paid,
        "bundle_purchase_id": token.bundle_purchase_id,
        "created_at": token.created_at,
        "activated_at": token.activated_at,
        "expires_at": token.expires_at,
        "revoked_at": token.revoked_at,
    }


#: Built once: every purchase inserts its tokens (one or a bundle's) with this one statement.
_INSERT_TOKENS = insert(access_tokens)


class SqlTokenRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def add_all(self, tokens: Sequence[AccessToken]) -> None:
        if not tokens:
            return
        try:
            self._c.execute(_INSERT_TOKENS, [_values(token) for token in tokens])
        except IntegrityError:
            # Only a repeated id or hash gets here; the transaction is spoiled, so no savepoint:
            # the caller's unit of work rolls back.
            raise Conflict("Token already exists") from None

    def _one(self, *where: Any) -> AccessToken | None:
        row = self._c.execute(select(access_tokens).where(*where)).first()
        return None if row is None else _token(row)

    def get(self, token_id: UUID) -> AccessToken | None:
        return self._one(access_tokens.c.id == token_id)

    def get_by_hash(self, token_hash: str) -> AccessToken | None:
        return self._one(access_tokens.c.token_hash == token_hash)

    def list_for_user(
        self, user_id: UUID, *, now: datetime, active_only: bool, limit: int, offset: int
    ) -> Page[AccessToken]:
        where: list[Any] = [access_tokens.c.user_id == user_id]
        if active_only:
            where.append(access_tokens.c.revoked_at.is_(None))
            where.append(
                or_(access_tokens.c.expires_at.is_(None), access_tokens.c.expires_at > now)
            )
        total = self._c.execute(select(func.count()).select_from(access_tokens).where(*where))
        rows = self._c.execute(
            select(access_tokens)
            .where(*where)
            .order_by(access_tokens.c.created_at.desc(), access_tokens.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return Page(
            items=[_token(row) for row in rows],
            total=total.scalar_one(),
            limit=limit,
            offset=offset,
        )

    def list_for_purchase(self, bundle_purchase_id: UUID) -> list[AccessToken]:
        rows = self._c.execute(
            select(access_tokens)
            .where(access_tokens.c.bundle_purchase_id == bundle_purchase_id)
            .order_by(access_tokens.c.id)
        )
        return [_token(row) for row in rows]

    def _unstarted(self, token_id: UUID) -> Any:
        return (
            access_tokens.c.id == token_id,
            access_tokens.c.activated_at.is_(None),
            access_tokens.c.revoked_at.is_(None),
        )

    def activate(self, token_id: UUID, at: datetime) -> AccessToken | None:
        token = self.get(token_id)
        if token is None:
            return None
        # The duration never changes, so the end computed here from a plain read is right; the
        # conditional update alone decides who starts the clock.
        expires_at = at + timedelta(hours=token.duration_hours)
        result = self._c.execute(
            update(access_tokens)
            .where(*self._unstarted(token_id))
            .values(activated_at=at, expires_at=expires_at)
        )
        if result.rowcount != 1:
            return None
        return dataclasses.replace(token, activated_at=at, expires_at=expires_at)

    def revoke(self, token_id: UUID, at: datetime) -> bool:
        result = self._c.execute(
            update(access_tokens).where(*self._unstarted(token_id)).values(revoked_at=at)
        )
        return result.rowcount == 1

    def count_running(self, now: datetime) -> int:
        # `expires_at` is set exactly when a token is activated: a range on its index.
        return int(
            self._c.execute(
                select(func.count()).where(access_tokens.c.expires_at > now)
            ).scalar_one()
        )
