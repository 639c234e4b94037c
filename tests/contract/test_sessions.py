"""Proxy sessions and the proxy's use cases on every backend: memory, SQLite, PostgreSQL."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from tests.conftest import UserMaker, uow_factory_for
from zenzefi_core.adapters.cache import InProcessCache
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain.proxy import ProxySession, UsageDelta
from zenzefi_core.ids import new_id
from zenzefi_core.policy import ShopPolicy
from zenzefi_core.ports import UnitOfWorkFactory
from zenzefi_core.security import hash_access_token
from zenzefi_core.services.admin import AccountChange, SetUserActive
from zenzefi_core.services.proxy import (
    CloseIdleSessions,
    InvalidAccessToken,
    OutsideScope,
    ProxyAccess,
    ProxyRequest,
    ProxyStatus,
    RecordUsage,
    ReportExpiredTokens,
    TokenInUse,
    UsageMeter,
    ready_key,
)
from zenzefi_core.services.tokens import PurchaseToken, RevokeToken, TokenOrder, TokenRevocation


def buy(uow_factory: UnitOfWorkFactory, clock: FixedClock, user_id, scope: str = "full"):
    bought = PurchaseToken(uow_factory, clock, ShopPolicy())(
        TokenOrder(user_id=user_id, duration_hours=24, scope=scope)
    )
    assert bought.plaintext is not None
    return bought.token, hash_access_token(bought.plaintext)


def session_for(token, device: str, clock: FixedClock) -> ProxySession:
    return ProxySession(
        id=new_id(),
        token_id=token.id,
        user_id=token.user_id,
        device_id=device,
        started_at=clock.now(),
        last_activity=clock.now(),
    )


def test_one_open_session_per_token(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    user = make_user(uow_factory, balance=Decimal("100.00"))
    token, _ = buy(uow_factory, clock, user.id)
    first = session_for(token, "device-one", clock)
    with uow_factory() as uow:
        assert uow.proxy_sessions.start(first)
        assert not uow.proxy_sessions.start(session_for(token, "device-two", clock))
        assert uow.proxy_sessions.open_for_token(token.id) == first
        uow.commit()
    clock.advance(timedelta(minutes=1))
    with uow_factory() as uow:
        # Not idle before a moment earlier than its last activity: stays open.
        assert not uow.proxy_sessions.end(first.id, clock.now(), idle_before=first.started_at)
        assert uow.proxy_sessions.end(first.id, clock.now())
        assert not uow.proxy_sessions.end(first.id, clock.now())
        second = session_for(token, "device-two", clock)
        assert uow.proxy_sessions.start(second)
        uow.commit()
    with uow_factory() as uow:
        assert [s.device_id for s in uow.proxy_sessions.list_for_token(token.id)] == [
            "device-one",
            "device-two",
        ]


def test_usage_adds_up_and_last_activity_only_moves_forward(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    user = make_user(uow_factory, balance=Decimal("100.00"))
    token, _ = buy(uow_factory, clock, user.id)
    session = session_for(token, "device-one", clock)
    with uow_factory() as uow:
        uow.proxy_sessions.start(session)
        uow.commit()
    later = clock.now() + timedelta(seconds=30)
    RecordUsage(uow_factory)(
        [
            UsageDelta(
                session.id, requests=3, bytes_in=10, bytes_out=2_000_000_000, last_activity=later
            )
        ]
    )
    RecordUsage(uow_factory)(
        [
            UsageDelta(
                session.id,
                requests=1,
                bytes_in=5,
                bytes_out=1_000_000_000,
                last_activity=clock.now(),
            )
        ]
    )
    with uow_factory() as uow:
        stored = uow.proxy_sessions.get(session.id)
    assert stored is not None
    assert (stored.request_count, stored.bytes_in, stored.bytes_out) == (4, 15, 3_000_000_000)
    assert stored.last_activity == later

    clock.advance(timedelta(minutes=10))
    assert CloseIdleSessions(uow_factory, clock)() == 1
    assert CloseIdleSessions(uow_factory, clock)() == 0
    with uow_factory() as uow:
        closed = uow.proxy_sessions.get(session.id)
    assert closed is not None
    assert closed.ended_at == later, "an idle session ends at its last use, not at the cleanup"


def test_the_meter_hands_out_each_count_once() -> None:
    meter = UsageMeter()
    session_id = new_id()
    clock = FixedClock(
        __import__("datetime").datetime(2026, 11, 26, tzinfo=__import__("datetime").UTC)
    )
    for size in (1, 2, 3):
        meter.count(session_id, requests=1, bytes_in=size, bytes_out=size * 10, at=clock.now())
    [delta] = meter.drain()
    assert (delta.requests, delta.bytes_in, delta.bytes_out) == (3, 6, 60)
    assert meter.drain() == []
    meter.restore([delta])
    assert meter.drain() == [delta]


def test_the_proxy_decisions(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    user = make_user(uow_factory, balance=Decimal("100.00"))
    cache = InProcessCache()
    access = ProxyAccess(uow_factory, clock, cache)
    status = ProxyStatus(uow_factory, clock, cache)
    token, token_hash = buy(uow_factory, clock, user.id, scope="certificates_only")

    assert status(token_hash).activated_at is None
    with pytest.raises(OutsideScope):
        access.authorize(ProxyRequest(token_hash, "device-one", path=("admin",)))
    assert status(token_hash).activated_at is None, "a refused path does not start the clock"
    assert access.check_cached(token_hash, "device-one") is None

    grant = access.authorize(
        ProxyRequest(token_hash, "device-one", path=("certificates", "filter"))
    )
    assert grant.token_id == token.id
    assert access.check_cached(token_hash, "device-one") == grant
    assert access.check_cached(token_hash, "device-two") is None
    with pytest.raises(TokenInUse):
        access.authorize(ProxyRequest(token_hash, "device-two"))
    assert status(token_hash).expires_at == clock.now() + timedelta(hours=24)

    with pytest.raises(InvalidAccessToken):
        access.authorize(ProxyRequest(hash_access_token("nope"), "device-one"))

    # An operator bans the owner: the cached grant is gone at once.
    admin = make_user(uow_factory, "operator")
    with uow_factory() as uow:
        stored = uow.users.get(admin.id)
        assert stored is not None
        uow.users.set_superuser(stored.id, True)
        uow.commit()
    SetUserActive(uow_factory, clock, cache)(AccountChange(admin.id, user.id, enable=False))
    assert access.check_cached(token_hash, "device-one") is None
    with pytest.raises(InvalidAccessToken):
        access.authorize(ProxyRequest(token_hash, "device-one"))
    with pytest.raises(InvalidAccessToken):
        status(token_hash)

    # Expiry needs no invalidation: the cached entry knows when it ends.
    SetUserActive(uow_factory, clock, cache)(AccountChange(admin.id, user.id, enable=True))
    access.authorize(ProxyRequest(token_hash, "device-one"))
    # The tombstone outlives the ban for a while: the cache misses, the database answers.
    assert access.check_cached(token_hash, "device-one") is None
    fresh = ProxyAccess(uow_factory, clock, InProcessCache())
    fresh.authorize(ProxyRequest(token_hash, "device-one"))
    assert fresh.check_cached(token_hash, "device-one") is not None
    clock.advance(timedelta(hours=24))
    with pytest.raises(InvalidAccessToken):
        fresh.check_cached(token_hash, "device-one")
    assert ReportExpiredTokens(uow_factory, clock)() == 1
    assert ReportExpiredTokens(uow_factory, clock)() == 0


def test_a_revoked_token_is_refused_at_once(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    user = make_user(uow_factory, balance=Decimal("100.00"))
    cache = InProcessCache()
    token, token_hash = buy(uow_factory, clock, user.id)
    assert ProxyStatus(uow_factory, clock, cache)(token_hash).activated_at is None
    # That status call cached the token as not activated; the revocation tombstones it.
    assert cache.get(ready_key(token_hash)) is not None
    RevokeToken(uow_factory, clock, ShopPolicy(), cache)(TokenRevocation(user.id, token.id))
    with pytest.raises(InvalidAccessToken):
        ProxyStatus(uow_factory, clock, cache)(token_hash)
    with pytest.raises(InvalidAccessToken):
        ProxyAccess(uow_factory, clock, cache).authorize(ProxyRequest(token_hash, "device-one"))


def race(workers: list[Callable[[], object]]) -> list[object]:
    barrier = threading.Barrier(len(workers))
    results: list[object] = [None] * len(workers)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = workers[index]()
        except Exception as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_first_requests_activate_once(
    engine: Engine, clock: FixedClock, make_user: UserMaker
) -> None:
    uow_factory = uow_factory_for(engine)
    user = make_user(uow_factory, balance=Decimal("100.00"))
    token, token_hash = buy(uow_factory, clock, user.id)
    accesses = [ProxyAccess(uow_factory, clock, InProcessCache()) for _ in range(6)]
    request = ProxyRequest(token_hash, "device-one")
    results = race([functools.partial(a.authorize, request) for a in accesses])
    assert all(not isinstance(r, Exception) for r in results), results
    with uow_factory() as uow:
        activated = [e for e in uow.outbox.pending(limit=100) if e.event_type == "token.activated"]
        assert len(activated) == 1
        assert len(uow.proxy_sessions.list_for_token(token.id)) == 1


def test_two_devices_racing_for_a_token_exactly_one_wins(
    engine: Engine, clock: FixedClock, make_user: UserMaker
) -> None:
    uow_factory = uow_factory_for(engine)
    user = make_user(uow_factory, balance=Decimal("100.00"))
    for _ in range(3):
        _, token_hash = buy(uow_factory, clock, user.id)
        devices = ["device-one", "device-two", "device-three"]
        results = race(
            [
                functools.partial(
                    ProxyAccess(uow_factory, clock, InProcessCache()).authorize,
                    ProxyRequest(token_hash, device),
                )
                for device in devices
            ]
        )
        winners = [r for r in results if not isinstance(r, Exception)]
        assert len(winners) == 1, results
        assert all(isinstance(r, TokenInUse) for r in results if r not in winners), results
