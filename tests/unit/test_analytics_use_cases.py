"""The analytics use cases on the in-memory adapter: who may read what, and the window they read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from zenzefi_core.adapters.memory import MemoryStore
from zenzefi_core.analytics import BucketUnit, Period
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import User
from zenzefi_core.domain.proxy import ProxySession
from zenzefi_core.domain.tokens import TokenScope
from zenzefi_core.errors import AccountDisabled, PermissionDenied, UserNotFound
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

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def uow_factory() -> UnitOfWorkFactory:
    return MemoryStore().unit_of_work


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


def _user(
    uow_factory: UnitOfWorkFactory,
    clock: FixedClock,
    name: str,
    *,
    is_active: bool = True,
    is_superuser: bool = False,
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
        uow.users.set_active(user.id, is_active)
        user = uow.users.set_superuser(user.id, is_superuser) or user
        uow.commit()
    return user


def _session(uow_factory: UnitOfWorkFactory, user: User, started: datetime, requests: int) -> None:
    token = issue_token(
        user_id=user.id,
        duration_hours=24,
        scope=TokenScope.FULL,
        price_paid=Decimal("18.00"),
        created_at=started,
    ).token
    with uow_factory() as uow:
        uow.tokens.add_all([token])
        uow.proxy_sessions.start(
            ProxySession(
                id=new_id(),
                token_id=token.id,
                user_id=user.id,
                device_id="laptop",
                started_at=started,
                last_activity=started,
                request_count=requests,
            )
        )
        uow.commit()


def test_the_usage_window_ends_at_the_clocks_now(
    uow_factory: UnitOfWorkFactory, clock: FixedClock
) -> None:
    alice = _user(uow_factory, clock, "alice")
    _session(uow_factory, alice, NOW - timedelta(minutes=90), 7)
    report = GetUsageStats(uow_factory, clock)(UsageQuery(alice.id))
    assert report.window.period == Period.DAY
    assert (report.window.start, report.window.end) == (NOW - timedelta(hours=24), NOW)
    assert report.window.unit == BucketUnit.HOUR
    assert [p.requests for p in report.series] == [0] * 22 + [7, 0]
    assert (report.active_sessions, report.active_tokens) == (1, 1)
    assert report.avg_session_duration_minutes == 90.0

    # Two days on, the session is out of the day but still in the week, open for 2 d 1.5 h.
    clock.advance(timedelta(days=2))
    assert GetUsageStats(uow_factory, clock)(UsageQuery(alice.id)).total_requests == 0
    week = GetUsageStats(uow_factory, clock)(UsageQuery(alice.id, Period.WEEK))
    assert [p.requests for p in week.series] == [0, 0, 0, 0, 7, 0, 0]
    assert week.avg_session_duration_minutes == 49 * 60 + 30


def test_usage_is_only_for_an_existing_active_account(
    uow_factory: UnitOfWorkFactory, clock: FixedClock
) -> None:
    with pytest.raises(UserNotFound):
        GetUsageStats(uow_factory, clock)(UsageQuery(new_id()))
    gone = _user(uow_factory, clock, "gone", is_active=False)
    with pytest.raises(AccountDisabled):
        GetUsageStats(uow_factory, clock)(UsageQuery(gone.id))


def test_global_stats_are_for_active_operators_only(
    uow_factory: UnitOfWorkFactory, clock: FixedClock
) -> None:
    clock.set(NOW - timedelta(days=1))
    alice = _user(uow_factory, clock, "alice")
    operator = _user(uow_factory, clock, "root", is_superuser=True)
    retired = _user(uow_factory, clock, "retired", is_superuser=True, is_active=False)
    clock.set(NOW)
    # Joined at the window's end, which it leaves out.
    _user(uow_factory, clock, "late")
    _session(uow_factory, alice, NOW - timedelta(hours=1), 3)
    stats = GetGlobalStats(uow_factory, clock)
    for refused in (alice.id, new_id()):
        with pytest.raises(PermissionDenied):
            stats(GlobalStatsQuery(refused))
    with pytest.raises(AccountDisabled):
        stats(GlobalStatsQuery(retired.id))
    report = stats(GlobalStatsQuery(operator.id, Period.MONTH))
    assert (report.new_users, report.total_proxy_requests) == (3, 3)
    assert (report.active_users, report.daily_active_users) == (1, 1)
    assert [u.email for u in report.top_users] == ["alice@example.com"]
    assert len(report.series) == 30
