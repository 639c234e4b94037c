"""How many statements each usage report sends, on SQLite and PostgreSQL.

On PostgreSQL a report is the account read and one statement (`_POSTGRES_USAGE`,
`_POSTGRES_ACTIVITY`): every further statement is another round trip on every call, which
is what the analytics bench measured as the API's overhead over one raw statement. This
pins the count (and that nothing forces custom plans again), without timing anything; the
numbers themselves are the contract tests' business.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, event

from zenzefi_core.adapters.sqlalchemy import SqlAlchemyUnitOfWork
from zenzefi_core.analytics import Period
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import User
from zenzefi_core.domain.proxy import ProxySession
from zenzefi_core.domain.tokens import TokenScope
from zenzefi_core.ids import new_id
from zenzefi_core.ports import UnitOfWorkFactory
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.accounts import add_user
from zenzefi_core.services.analytics import (
    GetGlobalStats,
    GetUsageStats,
    GlobalStatsQuery,
    UsageQuery,
)
from zenzefi_core.services.tokens import issue_token


def _user(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, name: str, *, is_superuser: bool = False
) -> User:
    with uow_factory() as uow:
        user = add_user(
            uow,
            clock,
            fast_password_hasher(),
            email=f"{name}@example.com",
            username=name,
            password="correct horse",
        )
        uow.users.set_superuser(user.id, is_superuser)
        user = dataclasses.replace(user, is_superuser=is_superuser)
        uow.commit()
    return user


def _sessions(uow_factory: UnitOfWorkFactory, clock: FixedClock, user: User) -> None:
    token = issue_token(
        user_id=user.id,
        duration_hours=24,
        scope=TokenScope.FULL,
        price_paid=Decimal("1.00"),
        created_at=clock.now() - timedelta(days=3),
    ).token
    with uow_factory() as uow:
        uow.tokens.add_all([token])
        # Both in the last day, so every period has them.
        for hours in (20, 2):
            started = clock.now() - timedelta(hours=hours)
            assert uow.proxy_sessions.start(
                ProxySession(
                    id=new_id(),
                    token_id=token.id,
                    user_id=user.id,
                    device_id="device",
                    started_at=started,
                    last_activity=started + timedelta(minutes=5),
                    ended_at=started + timedelta(minutes=5),
                    request_count=3,
                    bytes_in=10,
                    bytes_out=20,
                )
            )
        uow.commit()


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    """The statements sent while the block runs, transaction control left out."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_how_many_statements_each_report_sends(engine: Engine, clock: FixedClock) -> None:
    uow_factory: UnitOfWorkFactory = lambda: SqlAlchemyUnitOfWork(engine)  # noqa: E731
    alice = _user(uow_factory, clock, "alice")
    root = _user(uow_factory, clock, "root", is_superuser=True)
    _sessions(uow_factory, clock, alice)
    postgres = engine.dialect.name == "postgresql"

    for period in Period:
        # More than five calls each, so that psycopg prepares the statements on the way.
        for _ in range(7):
            with _statements(engine) as sent:
                usage = GetUsageStats(uow_factory, clock)(UsageQuery(alice.id, period))
            assert usage.total_requests == 6, period
            # SQLite groups the buckets and counts the live sessions and tokens apart.
            assert len(sent) == (2 if postgres else 3), sent
            with _statements(engine) as sent:
                report = GetGlobalStats(uow_factory, clock)(GlobalStatsQuery(root.id, period))
            assert (report.total_proxy_requests, report.active_users) == (6, 1), period
            # SQLite: new users, ledger, proxy, top users, active and last day's active users.
            assert len(sent) == (2 if postgres else 7), sent
            assert not any("plan_cache_mode" in statement for statement in sent)
