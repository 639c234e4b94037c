"""Usage analytics over HTTP, on SQLite and PostgreSQL, against a day of known activity.

Everything is made through the use cases at fixed times on a fake clock: sign-ups, a deposit,
token and bundle purchases (holding the referrer's bonuses, paid when a token is first used), a
refund (cancelling one), and
proxy sessions opened by the proxy's access check, fed by usage flushes and closed by the idle
cleanup. Every number of both responses is checked, bucket by bucket.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from litestar import Litestar

from tests.api.conftest import Account, Accounts, ApiClient
from zenzefi_api.app import create_app
from zenzefi_api.auth import TokenIssuer
from zenzefi_api.context import api_context
from zenzefi_core.bootstrap import Core
from zenzefi_core.clock import FixedClock, SystemClock
from zenzefi_core.domain import TransactionType
from zenzefi_core.domain.proxy import UsageDelta
from zenzefi_core.ids import new_id
from zenzefi_core.security import fast_password_hasher, hash_access_token
from zenzefi_core.services.bundles import BundleOrder, BundleQuery, ListBundles, PurchaseBundle
from zenzefi_core.services.proxy import (
    CloseIdleSessions,
    ProxyAccess,
    ProxyRequest,
    RecordUsage,
)
from zenzefi_core.services.tokens import PurchaseToken, RevokeToken, TokenOrder, TokenRevocation
from zenzefi_core.services.wallet import CreditWallet, WalletChange
from zenzefi_core.settings import Settings

USAGE = "/api/v1/analytics/usage"
GLOBAL = "/api/v1/analytics/admin/global-stats"

#: The day under test is [DAY_START, NOW): bucket i is the hour from DAY_START + i hours.
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY_START = NOW - timedelta(hours=24)
LONG_AGO = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return DAY_START + timedelta(hours=hours)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(LONG_AGO)


@pytest.fixture
def core(settings: Settings, clock: FixedClock) -> Iterator[Core]:
    core = Core.from_settings(settings, clock=clock, hasher=fast_password_hasher())
    yield core
    core.close()


@pytest.fixture
def app(settings: Settings, core: Core) -> Litestar:
    """The app on the fake clock, but signing login tokens on the real one: the JWT library
    checks their expiry against real time."""
    app = create_app(settings, core)
    api_context(app).tokens = TokenIssuer(
        settings.resolved_secret_key(),
        timedelta(minutes=settings.auth.token_minutes),
        SystemClock(),
    )
    return app


@dataclass
class World:
    admin: Account
    rita: Account
    alice: Account
    bob: Account
    carol: Account


def _deposit(core: Core, account: Account, amount: str) -> None:
    CreditWallet(core.uow, core.clock)(
        WalletChange(
            user_id=account.id,
            amount=Decimal(amount),
            transaction_type=TransactionType.DEPOSIT,
            description="Top-up",
            reference_type="test",
            reference_id=str(account.id),
        )
    )


def _buy_token(core: Core, user_id: UUID) -> tuple[UUID, str]:
    bought = PurchaseToken(core.uow, core.clock, core.policy)(
        TokenOrder(user_id=user_id, duration_hours=24)
    )
    assert bought.plaintext is not None
    return bought.token.id, hash_access_token(bought.plaintext)


def _use(
    core: Core,
    clock: FixedClock,
    token_hash: str,
    requests: int,
    bytes_in: int,
    bytes_out: int,
    *,
    minutes: float = 0,
) -> None:
    """A device's first request (opening a session), then `minutes` of use flushed at once."""
    grant = ProxyAccess(core.uow, core.clock, core.access_cache).authorize(
        ProxyRequest(token_hash=token_hash, device_id="laptop")
    )
    clock.set(clock.now() + timedelta(minutes=minutes))
    RecordUsage(core.uow)(
        [UsageDelta(grant.session_id, requests, bytes_in, bytes_out, core.clock.now())]
    )


@pytest.fixture
def world(client: ApiClient, accounts: Accounts, core: Core, clock: FixedClock) -> World:
    admin = accounts.admin()
    rita = accounts.register("rita")
    me = client.get("/api/v1/users/me", headers=rita.headers)
    assert me.status_code == 200, me.text
    code = me.json()["referral_code"]

    clock.set(at(0.5))
    alice = accounts.register("alice", ref=code)
    _deposit(core, alice, "200.00")
    clock.set(at(1 + 10 / 60))
    _, alices_token = _buy_token(core, alice.id)  # 18.00: 1.80 pending for rita
    clock.set(at(1 + 20 / 60))
    starter = next(
        b for b in ListBundles(core.uow)(BundleQuery()) if b.name == "Starter Pack"
    )  # 5 tokens of 24 h for 81.00: 8.10 pending for rita, never used
    PurchaseBundle(core.uow, core.clock, core.policy)(BundleOrder(alice.id, starter.id))
    clock.set(at(2))
    spare, _ = _buy_token(core, alice.id)  # 18.00: 1.80 pending, cancelled by the refund
    clock.set(at(2.5))
    RevokeToken(core.uow, core.clock, core.policy)(TokenRevocation(alice.id, spare))
    clock.set(at(3))
    _use(core, clock, alices_token, 10, 1000, 5000, minutes=20)  # pays rita 1.80
    clock.set(at(3 + 30 / 60))
    # Alice's session ends at its last use, 20 minutes in, not when the cleanup notices.
    assert CloseIdleSessions(core.uow, core.clock)() == 1

    clock.set(at(5))
    bob = accounts.register("bob")
    _deposit(core, bob, "50.00")
    clock.set(at(5 + 10 / 60))
    _, bobs_token = _buy_token(core, bob.id)
    clock.set(at(6))
    _use(core, clock, bobs_token, 50, 10, 20, minutes=30)
    clock.set(at(6.75))
    assert CloseIdleSessions(core.uow, core.clock)() == 1  # bob's: 30 minutes

    clock.set(at(7))
    carol = accounts.register("carol")

    clock.set(at(23.5))
    _use(core, clock, alices_token, 5, 100, 200)  # still open at now: 30 minutes so far

    clock.set(NOW)
    return World(admin, rita, alice, bob, carol)


def _moment(value: datetime) -> str:
    return value.isoformat()


def _usage_series(
    start: datetime, width: timedelta, count: int, filled: dict[int, tuple[int, int, int]]
) -> list[dict[str, Any]]:
    return [
        {
            "start": _moment(start + width * i),
            "end": _moment(start + width * (i + 1)),
            "requests": filled.get(i, (0, 0, 0))[0],
            "bytes_transferred": filled.get(i, (0, 0, 0))[1],
            "sessions": filled.get(i, (0, 0, 0))[2],
        }
        for i in range(count)
    ]


ZERO_ACTIVITY: dict[str, Any] = {
    "new_users": 0,
    "token_purchases": 0,
    "bundle_purchases": 0,
    "revenue_znc": "0.00",
    "refunds_znc": "0.00",
    "referral_bonuses_paid_znc": "0.00",
    "proxy_requests": 0,
    "bytes_transferred": 0,
    "active_users": 0,
}


def _activity_series(
    start: datetime, width: timedelta, count: int, filled: dict[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    return [
        {
            "start": _moment(start + width * i),
            "end": _moment(start + width * (i + 1)),
            **ZERO_ACTIVITY,
            **filled.get(i, {}),
        }
        for i in range(count)
    ]


HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def test_a_users_day_week_and_month(client: ApiClient, world: World) -> None:
    day = client.get(USAGE, headers=world.alice.headers)
    assert day.status_code == 200, day.text
    assert day.json() == {
        "period": "day",
        "start_time": _moment(DAY_START),
        "end_time": _moment(NOW),
        "bucket": "hour",
        "total_requests": 15,
        "total_bytes_transferred": 6300,
        # The session opened at 23:30 is still open; of the tokens, the one in use and the
        # bundle's five unused ones are usable, the refunded one is not.
        "active_sessions": 1,
        "active_tokens": 6,
        "avg_session_duration_minutes": 25.0,
        "series": _usage_series(DAY_START, HOUR, 24, {3: (10, 6000, 1), 23: (5, 300, 1)}),
    }
    week = client.get(USAGE, params={"period": "week"}, headers=world.alice.headers).json()
    week_start = NOW - 7 * DAY
    assert week == {
        **day.json(),
        "period": "week",
        "start_time": _moment(week_start),
        "bucket": "day",
        "series": _usage_series(week_start, DAY, 7, {6: (15, 6300, 2)}),
    }
    month = client.get(USAGE, params={"period": "month"}, headers=world.alice.headers).json()
    month_start = NOW - 30 * DAY
    assert month == {
        **week,
        "period": "month",
        "start_time": _moment(month_start),
        "series": _usage_series(month_start, DAY, 30, {29: (15, 6300, 2)}),
    }


def test_each_user_sees_only_their_own_usage(client: ApiClient, world: World) -> None:
    bob = client.get(USAGE, params={"period": "day"}, headers=world.bob.headers).json()
    assert (bob["total_requests"], bob["total_bytes_transferred"]) == (50, 30)
    assert (bob["active_sessions"], bob["active_tokens"]) == (0, 1)
    assert bob["avg_session_duration_minutes"] == 30.0
    assert bob["series"] == _usage_series(DAY_START, HOUR, 24, {6: (50, 30, 1)})

    for idle in (world.carol, world.admin, world.rita):
        nothing = client.get(USAGE, headers=idle.headers).json()
        assert nothing == {
            "period": "day",
            "start_time": _moment(DAY_START),
            "end_time": _moment(NOW),
            "bucket": "hour",
            "total_requests": 0,
            "total_bytes_transferred": 0,
            "active_sessions": 0,
            "active_tokens": 0,
            "avg_session_duration_minutes": 0.0,
            "series": _usage_series(DAY_START, HOUR, 24, {}),
        }


DAY_ACTIVITY: dict[int, dict[str, Any]] = {
    0: {"new_users": 1},
    1: {"token_purchases": 1, "bundle_purchases": 1, "revenue_znc": "99.00"},
    2: {"token_purchases": 1, "revenue_znc": "18.00", "refunds_znc": "18.00"},
    3: {
        "proxy_requests": 10,
        "bytes_transferred": 6000,
        "active_users": 1,
        "referral_bonuses_paid_znc": "1.80",
    },
    5: {"new_users": 1, "token_purchases": 1, "revenue_znc": "18.00"},
    6: {"proxy_requests": 50, "bytes_transferred": 30, "active_users": 1},
    7: {"new_users": 1},
    23: {"proxy_requests": 5, "bytes_transferred": 300, "active_users": 1},
}


def _totals(world: World, new_users: int) -> dict[str, Any]:
    return {
        "new_users": new_users,
        "token_purchases": 3,
        "bundle_purchases": 1,
        "revenue_znc": "135.00",
        "refunds_znc": "18.00",
        # Bonuses paid: only the used token's; the others are pending or cancelled.
        "referral_bonuses_paid_znc": "1.80",
        "total_proxy_requests": 65,
        "total_bytes_transferred": 6330,
        "active_users": 2,
        "daily_active_users": 2,
        "top_users": [
            {
                "user_id": str(world.bob.id),
                "email": "bob@example.com",
                "requests": 50,
                "bytes_transferred": 30,
            },
            {
                "user_id": str(world.alice.id),
                "email": "alice@example.com",
                "requests": 15,
                "bytes_transferred": 6300,
            },
        ],
    }


def test_the_operators_day(client: ApiClient, world: World) -> None:
    response = client.get(GLOBAL, headers=world.admin.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "period": "day",
        "start_time": _moment(DAY_START),
        "end_time": _moment(NOW),
        "bucket": "hour",
        **_totals(world, new_users=3),
        "series": _activity_series(DAY_START, HOUR, 24, DAY_ACTIVITY),
    }


def test_the_operators_week_and_month(client: ApiClient, world: World) -> None:
    everything_today: dict[str, Any] = {
        "new_users": 3,
        "token_purchases": 3,
        "bundle_purchases": 1,
        "revenue_znc": "135.00",
        "refunds_znc": "18.00",
        "referral_bonuses_paid_znc": "1.80",
        "proxy_requests": 65,
        "bytes_transferred": 6330,
        "active_users": 2,
    }
    week_start = NOW - 7 * DAY
    week = client.get(GLOBAL, params={"period": "week"}, headers=world.admin.headers).json()
    assert week == {
        "period": "week",
        "start_time": _moment(week_start),
        "end_time": _moment(NOW),
        "bucket": "day",
        # The operator and rita signed up on the 20th at midnight, before the week began.
        **_totals(world, new_users=3),
        "series": _activity_series(week_start, DAY, 7, {6: everything_today}),
    }
    month_start = NOW - 30 * DAY
    month = client.get(GLOBAL, params={"period": "month"}, headers=world.admin.headers).json()
    assert month == {
        "period": "month",
        "start_time": _moment(month_start),
        "end_time": _moment(NOW),
        "bucket": "day",
        **_totals(world, new_users=5),
        "series": _activity_series(
            month_start, DAY, 30, {22: {"new_users": 2}, 29: everything_today}
        ),
    }


def test_who_may_ask(client: ApiClient, world: World) -> None:
    assert client.get(USAGE).status_code == 401
    assert client.get(GLOBAL).status_code == 401
    assert client.get(USAGE, headers={"Authorization": "Bearer nonsense"}).status_code == 401
    refused = client.get(GLOBAL, headers=world.alice.headers)
    assert refused.status_code == 403, refused.text


def test_the_usage_route_checks_the_account_behind_the_token(
    client: ApiClient, app: Litestar, world: World
) -> None:
    """The route verifies only the token and leaves the account to the use case: a token
    naming no account is still 401, and a deactivated account's login is ended at once (401),
    with nothing of its usage shown."""
    stranger = api_context(app).tokens.issue(new_id(), 0)
    response = client.get(USAGE, headers={"Authorization": f"Bearer {stranger}"})
    assert response.status_code == 401, response.text
    assert "total_requests" not in response.text

    off = client.post(
        f"/api/v1/admin/users/{world.alice.id}/deactivate", headers=world.admin.headers
    )
    assert off.status_code == 200, off.text
    for period in ("day", "month"):
        response = client.get(USAGE, params={"period": period}, headers=world.alice.headers)
        assert response.status_code == 401, response.text
        assert "total_requests" not in response.text
    # Everyone else is unaffected.
    assert client.get(USAGE, headers=world.bob.headers).status_code == 200


def test_an_unknown_period_is_422(client: ApiClient, world: World) -> None:
    for period in ("year", "DAY", "", "hour", "day;", "1", "x" * 10_000):
        for path, account in ((USAGE, world.alice), (GLOBAL, world.admin)):
            response = client.get(path, params={"period": period}, headers=account.headers)
            assert response.status_code == 422, (path, period, response.text)
            assert response.json()["errors"][0]["field"] == "period"
