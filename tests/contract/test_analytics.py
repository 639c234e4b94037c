"""The analytics queries on every backend (memory, SQLite, PostgreSQL), against known data.

The data sits on and next to the bucket boundaries on purpose: a session starting exactly at the
window's start is in its first bucket, one a microsecond earlier is not, one starting exactly at
now (the window's exclusive end) is not either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest

from tests.conftest import UserMaker
from zenzefi_core.analytics import (
    ActivityBucketRow,
    LiveUsage,
    Period,
    TopUser,
    UsageBucketRow,
    Window,
)
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType, User
from zenzefi_core.domain.proxy import ProxySession
from zenzefi_core.domain.tokens import BUNDLE_PURCHASE_REFERENCE, TOKEN_REFERENCE, TokenScope
from zenzefi_core.ids import new_id
from zenzefi_core.ports import UnitOfWorkFactory
from zenzefi_core.services.tokens import issue_token
from zenzefi_core.services.wallet import post_entry

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY_START = NOW - timedelta(hours=24)
MICRO = timedelta(microseconds=1)
MINUTE = timedelta(minutes=1)


@dataclass
class Data:
    alice: User
    bob: User
    carol: User


def _entry(
    uow_factory: UnitOfWorkFactory,
    clock: FixedClock,
    user: User,
    at: datetime,
    amount: str,
    kind: TransactionType,
    reference_type: str,
) -> None:
    clock.set(at)
    with uow_factory() as uow:
        post_entry(
            uow,
            clock,
            user_id=user.id,
            amount=Decimal(amount),
            transaction_type=kind,
            description="test",
            reference_type=reference_type,
            reference_id=str(new_id()),
        )
        uow.commit()


def _token(uow_factory: UnitOfWorkFactory, user: User, at: datetime) -> UUID:
    token = issue_token(
        user_id=user.id,
        duration_hours=24,
        scope=TokenScope.FULL,
        price_paid=Decimal("1.00"),
        created_at=at,
    ).token
    with uow_factory() as uow:
        uow.tokens.add_all([token])
        uow.commit()
    return token.id


def _session(
    uow_factory: UnitOfWorkFactory,
    user: User,
    token_id: UUID,
    started_at: datetime,
    ended_at: datetime | None,
    requests: int,
    bytes_in: int,
    bytes_out: int,
) -> None:
    with uow_factory() as uow:
        assert uow.proxy_sessions.start(
            ProxySession(
                id=new_id(),
                token_id=token_id,
                user_id=user.id,
                device_id="device",
                started_at=started_at,
                last_activity=ended_at or started_at,
                ended_at=ended_at,
                request_count=requests,
                bytes_in=bytes_in,
                bytes_out=bytes_out,
            )
        )
        uow.commit()


@pytest.fixture
def data(uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker) -> Data:
    clock.set(datetime(2026, 11, 20, 0, 0, tzinfo=UTC))
    alice = make_user(uow_factory, "alice", balance=Decimal("100.00"))
    clock.set(DAY_START)
    bob = make_user(uow_factory, "bob", balance=Decimal("20.00"))
    clock.set(NOW - MICRO)
    carol = make_user(uow_factory, "carol")

    purchase, refund, token = TransactionType.PURCHASE, TransactionType.REFUND, TOKEN_REFERENCE
    bundle = BUNDLE_PURCHASE_REFERENCE
    _entry(uow_factory, clock, alice, DAY_START - timedelta(hours=1), "-3.10", purchase, token)
    _entry(uow_factory, clock, alice, DAY_START + timedelta(hours=1), "-10.00", purchase, token)
    _entry(uow_factory, clock, alice, DAY_START + 90 * MINUTE, "-45.50", purchase, bundle)
    _entry(uow_factory, clock, alice, DAY_START + timedelta(hours=2), "10.00", refund, token)
    bonus, clawback = TransactionType.REFERRAL_BONUS, TransactionType.REFERRAL_CLAWBACK
    _entry(uow_factory, clock, bob, NOW - timedelta(hours=1), "1.05", bonus, token)
    _entry(uow_factory, clock, bob, NOW - timedelta(minutes=30), "-0.50", clawback, token)
    _entry(
        uow_factory, clock, bob, NOW - timedelta(minutes=20), "2.00", TransactionType.DEPOSIT, "x"
    )

    # Alice's tokens: one usable, one revoked, one expired.
    usable = _token(uow_factory, alice, DAY_START)
    revoked = _token(uow_factory, alice, DAY_START)
    expired = _token(uow_factory, alice, DAY_START)
    with uow_factory() as uow:
        assert uow.tokens.revoke(revoked, DAY_START)
        assert uow.tokens.activate(expired, NOW - timedelta(hours=48)) is not None
        uow.commit()
    bobs = _token(uow_factory, bob, DAY_START)

    _session(uow_factory, alice, usable, DAY_START, DAY_START + 30 * MINUTE, 10, 100, 200)
    _session(
        uow_factory,
        alice,
        usable,
        DAY_START + timedelta(hours=1),
        DAY_START + timedelta(hours=1, minutes=15),
        5,
        1,
        2,
    )
    _session(
        uow_factory, alice, usable, DAY_START - MICRO, DAY_START - MICRO + 10 * MINUTE, 7, 7, 0
    )
    # Ends after now: counted up to now only.
    _session(uow_factory, alice, usable, NOW - 2 * MINUTE, NOW + 5 * MINUTE, 2, 0, 0)
    # Starts at the window's exclusive end: in no window.
    _session(uow_factory, alice, usable, NOW, NOW + MINUTE, 1000, 1000, 1000)
    # Open: counted up to now.
    _session(uow_factory, alice, usable, NOW - timedelta(hours=1), None, 3, 30, 0)
    _session(
        uow_factory, bob, bobs, DAY_START + 30 * MINUTE, DAY_START + 90 * MINUTE, 20, 1000, 1000
    )
    clock.set(NOW)
    return Data(alice, bob, carol)


def test_a_users_usage_per_bucket(uow_factory: UnitOfWorkFactory, data: Data) -> None:
    day = Window.ending_at(Period.DAY, NOW)
    week = Window.ending_at(Period.WEEK, NOW)
    minutes = 60_000_000
    with uow_factory() as uow:
        assert uow.analytics.usage_by_bucket(data.alice.id, day) == [
            UsageBucketRow(0, 10, 300, 1, 30 * minutes),
            UsageBucketRow(1, 5, 3, 1, 15 * minutes),
            UsageBucketRow(23, 5, 30, 2, 60 * minutes + 2 * minutes),
        ]
        assert uow.analytics.usage_by_bucket(data.alice.id, week) == [
            UsageBucketRow(5, 7, 7, 1, 10 * minutes),
            UsageBucketRow(6, 20, 333, 4, (30 + 15 + 60 + 2) * minutes),
        ]
        assert uow.analytics.usage_by_bucket(data.bob.id, day) == [
            UsageBucketRow(0, 20, 2000, 1, 60 * minutes)
        ]
        assert uow.analytics.usage_by_bucket(data.carol.id, day) == []


def test_live_usage(uow_factory: UnitOfWorkFactory, data: Data) -> None:
    with uow_factory() as uow:
        assert uow.analytics.live_usage(data.alice.id, NOW) == LiveUsage(1, 1)
        assert uow.analytics.live_usage(data.bob.id, NOW) == LiveUsage(0, 1)
        assert uow.analytics.live_usage(data.carol.id, NOW) == LiveUsage(0, 0)
        # The same tokens a day later: the unused ones have not started, so still usable.
        assert uow.analytics.live_usage(data.alice.id, NOW + timedelta(days=30)) == LiveUsage(1, 1)


def test_activity_per_bucket(uow_factory: UnitOfWorkFactory, data: Data) -> None:
    day = Window.ending_at(Period.DAY, NOW)
    week = Window.ending_at(Period.WEEK, NOW)
    with uow_factory() as uow:
        assert uow.analytics.activity_by_bucket(day) == [
            ActivityBucketRow(
                0, new_users=1, proxy_requests=30, bytes_transferred=2300, active_users=2
            ),
            ActivityBucketRow(
                1,
                token_purchases=1,
                bundle_purchases=1,
                revenue=Decimal("55.50"),
                proxy_requests=5,
                bytes_transferred=3,
                active_users=1,
            ),
            ActivityBucketRow(2, refunds=Decimal("10.00")),
            ActivityBucketRow(
                23,
                new_users=1,
                referral_bonuses=Decimal("1.05"),
                proxy_requests=5,
                bytes_transferred=30,
                active_users=1,
            ),
        ]
        assert uow.analytics.activity_by_bucket(week) == [
            ActivityBucketRow(
                5,
                token_purchases=1,
                revenue=Decimal("3.10"),
                proxy_requests=7,
                bytes_transferred=7,
                active_users=1,
            ),
            ActivityBucketRow(
                6,
                new_users=2,
                token_purchases=1,
                bundle_purchases=1,
                revenue=Decimal("55.50"),
                refunds=Decimal("10.00"),
                referral_bonuses=Decimal("1.05"),
                proxy_requests=40,
                bytes_transferred=2333,
                active_users=2,
            ),
        ]
        month = uow.analytics.activity_by_bucket(Window.ending_at(Period.MONTH, NOW))
        assert [(row.index, row.new_users) for row in month if row.new_users] == [(22, 1), (29, 2)]


def test_active_and_top_users(uow_factory: UnitOfWorkFactory, data: Data) -> None:
    with uow_factory() as uow:
        assert uow.analytics.active_users(DAY_START, NOW) == 2
        assert uow.analytics.active_users(NOW - timedelta(hours=1), NOW) == 1
        assert uow.analytics.active_users(NOW, NOW + timedelta(hours=1)) == 1
        assert uow.analytics.active_users(NOW + timedelta(hours=1), NOW + timedelta(hours=2)) == 0
        assert uow.analytics.top_users(DAY_START, NOW, limit=10) == [
            TopUser(data.bob.id, "bob@example.com", 20, 2000),
            TopUser(data.alice.id, "alice@example.com", 20, 333),
        ]
        assert uow.analytics.top_users(DAY_START - MICRO, NOW, limit=1) == [
            TopUser(data.alice.id, "alice@example.com", 27, 340)
        ]
        assert uow.analytics.top_users(NOW + MINUTE, NOW + 2 * MINUTE, limit=10) == []
