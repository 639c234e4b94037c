"""Proxy sessions and reported token expiries in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Connection,
    Row,
    Table,
    bindparam,
    case,
    exists,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from zenzefi_core.adapters.sqlalchemy.tables import (
    access_tokens,
    proxy_sessions,
    token_expiry_reports,
)
from zenzefi_core.adapters.sqlalchemy.token_repository import _token
from zenzefi_core.domain.proxy import ProxySession, UsageDelta
from zenzefi_core.domain.tokens import AccessToken

_OPEN = text("ended_at IS NULL")


def _insert(connection: Connection, table: Table) -> Any:
    """INSERT with the engine's ON CONFLICT clause (both engines spell it the same way)."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _session(row: Row[Any]) -> ProxySession:
    return ProxySession(
        id=row.id,
        token_id=row.token_id,
        user_id=row.user_id,
        device_id=row.device_id,
        started_at=row.started_at,
        last_activity=row.last_activity,
        ip=row.ip,
        user_agent=row.user_agent,
        ended_at=row.ended_at,
        request_count=row.request_count,
        bytes_in=row.bytes_in,
        bytes_out=row.bytes_out,
    )


class SqlProxySessionRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def get(self, session_id: UUID) -> ProxySession | None:
        row = self._c.execute(select(proxy_sessions).where(proxy_sessions.c.id == session_id))
        found = row.first()
        return None if found is None else _session(found)

    def open_for_token(self, token_id: UUID) -> ProxySession | None:
        row = self._c.execute(
            select(proxy_sessions).where(
                proxy_sessions.c.token_id == token_id, proxy_sessions.c.ended_at.is_(None)
            )
        ).first()
        return None if row is None else _session(row)

    def start(self, session: ProxySession) -> bool:
        # The unique index on open sessions decides; DO NOTHING keeps the transaction usable.
        result = self._c.execute(
            _insert(self._c, proxy_sessions)
            .values(
                id=session.id,
                token_id=session.token_id,
                user_id=session.user_id,
                device_id=session.device_id,
                started_at=session.started_at,
                last_activity=session.last_activity,
                ended_at=session.ended_at,
                request_count=session.request_count,
                bytes_in=session.bytes_in,
                bytes_out=session.bytes_out,
                ip=session.ip,
                user_agent=session.user_agent,
            )
            .on_conflict_do_nothing(index_elements=["token_id"], index_where=_OPEN)
            .returning(proxy_sessions.c.id)
        )
        # RETURNING, not rowcount: psycopg reports no row count for this statement.
        return result.first() is not None

    def end(self, session_id: UUID, at: datetime, *, idle_before: datetime | None = None) -> bool:
        where: list[Any] = [proxy_sessions.c.id == session_id, proxy_sessions.c.ended_at.is_(None)]
        if idle_before is not None:
            where.append(proxy_sessions.c.last_activity < idle_before)
        result = self._c.execute(update(proxy_sessions).where(*where).values(ended_at=at))
        return bool(result.rowcount == 1)

    def add_usage(self, deltas: Sequence[UsageDelta]) -> None:
        if not deltas:
            return
        moment = bindparam("u_last", type_=proxy_sessions.c.last_activity.type)
        statement = (
            update(proxy_sessions)
            .where(proxy_sessions.c.id == bindparam("u_id"))
            .values(
                request_count=proxy_sessions.c.request_count + bindparam("u_requests"),
                bytes_in=proxy_sessions.c.bytes_in + bindparam("u_in"),
                bytes_out=proxy_sessions.c.bytes_out + bindparam("u_out"),
                last_activity=case(
                    (proxy_sessions.c.last_activity < moment, moment),
                    else_=proxy_sessions.c.last_activity,
                ),
            )
        )
        self._c.execute(
            statement,
            [
                {
                    "u_id": d.session_id,
                    "u_requests": d.requests,
                    "u_in": d.bytes_in,
                    "u_out": d.bytes_out,
                    "u_last": d.last_activity,
                }
                for d in deltas
            ],
        )

    def close_idle(self, idle_before: datetime) -> int:
        result = self._c.execute(
            update(proxy_sessions)
            .where(
                proxy_sessions.c.ended_at.is_(None), proxy_sessions.c.last_activity < idle_before
            )
            .values(ended_at=proxy_sessions.c.last_activity)
        )
        return int(result.rowcount)

    def list_for_token(self, token_id: UUID) -> list[ProxySession]:
        rows = self._c.execute(
            select(proxy_sessions)
            .where(proxy_sessions.c.token_id == token_id)
            .order_by(proxy_sessions.c.started_at, proxy_sessions.c.id)
        )
        return [_session(row) for row in rows]

    def count_open(self) -> int:
        # Served by the (ended_at, last_activity) index.
        return int(
            self._c.execute(
                select(func.count()).where(proxy_sessions.c.ended_at.is_(None))
            ).scalar_one()
        )


class SqlTokenExpiryRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def claim_expired(self, now: datetime, *, limit: int) -> list[AccessToken]:
        reported = exists().where(token_expiry_reports.c.token_id == access_tokens.c.id)
        rows = self._c.execute(
            select(access_tokens)
            .where(
                access_tokens.c.revoked_at.is_(None),
                access_tokens.c.expires_at <= now,
                ~reported,
            )
            .order_by(access_tokens.c.expires_at, access_tokens.c.id)
            .limit(limit)
        )
        tokens = [_token(row) for row in rows]
        if not tokens:
            return []
        claimed = self._c.execute(
            _insert(self._c, token_expiry_reports)
            .values([{"token_id": t.id, "reported_at": now} for t in tokens])
            .on_conflict_do_nothing(index_elements=["token_id"])
            .returning(token_expiry_reports.c.token_id)
        )
        ours = {row.token_id for row in claimed}
        return [token for token in tokens if token.id in ours]
