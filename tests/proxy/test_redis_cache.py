"""The proxy with its token cache in Redis (as with several API processes), and the adapter."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import Engine

from tests.proxy.conftest import ProxyEnv, Seen, free_port, start_proxy
from zenzefi_api.cache import RedisAccessCache, RedisTokenReader
from zenzefi_core.adapters.cache import InProcessCache
from zenzefi_core.ports import AccessCache
from zenzefi_core.services.admin import AccountChange, SetUserActive

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_cache(redis_url: str) -> Iterator[RedisAccessCache]:
    cache = RedisAccessCache.from_url(redis_url, f"test-{secrets.token_hex(6)}")
    yield cache
    cache.close()


@pytest.fixture(params=["memory", "redis"])
def any_cache(request: pytest.FixtureRequest) -> AccessCache:
    if request.param == "memory":
        return InProcessCache()
    cache: RedisAccessCache = request.getfixturevalue("redis_cache")
    return cache


def test_the_cache_adapters_agree(any_cache: AccessCache) -> None:
    assert any_cache.get("k") is None
    assert any_cache.add("k", "one", 60)
    assert not any_cache.add("k", "two", 60), "add never overwrites"
    assert any_cache.get("k") == "one"
    any_cache.set("k", "three", 60)
    assert any_cache.get("k") == "three"
    any_cache.delete("k")
    assert any_cache.get("k") is None
    assert any_cache.add("k", "four", 60)


def test_expired_entries_are_gone() -> None:
    now = [0.0]
    cache = InProcessCache(clock=lambda: now[0])
    cache.set("k", "v", 5)
    now[0] = 5.0
    assert cache.get("k") is None
    assert cache.add("k", "again", 5)


@pytest.fixture
def redis_proxy(
    tmp_path: Path, engine: Engine, upstream: tuple[str, Seen], redis_cache: RedisAccessCache
) -> Iterator[ProxyEnv]:
    yield from start_proxy(tmp_path, engine, upstream, access_cache=redis_cache)


def test_a_ban_reaches_the_proxy_through_redis_at_once(
    redis_proxy: ProxyEnv, redis_cache: RedisAccessCache
) -> None:
    owner = redis_proxy.user()
    operator = redis_proxy.user()
    with redis_proxy.core.uow() as uow:
        stored = uow.users.get(operator.id)
        assert stored is not None
        uow.users.set_superuser(stored.id, True)
        uow.commit()
    token = redis_proxy.token(owner)
    assert redis_proxy.forward("GET", "a", token).status_code == 200
    assert redis_proxy.status(token).json()["status"] == "active"

    # Another process (its own core, the same Redis) bans the owner.
    SetUserActive(redis_proxy.core.uow, redis_proxy.clock, redis_cache)(
        AccountChange(operator.id, owner.id, enable=False)
    )
    assert redis_proxy.forward("GET", "a", token).status_code == 401
    assert redis_proxy.status(token).status_code == 401


def test_concurrent_first_use_over_http_activates_once(redis_proxy: ProxyEnv) -> None:
    token = redis_proxy.token()
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def hit() -> None:
        with httpx.Client(base_url=redis_proxy.url, timeout=30) as client:
            barrier.wait()
            response = client.get(
                "/api/v1/proxy/echo",
                headers={"X-Access-Token": token, "X-Device-ID": "desktop-0001"},
            )
            statuses.append(response.status_code)

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 8
    assert len(redis_proxy.events("token.activated")) == 1


def test_two_devices_racing_over_http_exactly_one_wins(redis_proxy: ProxyEnv) -> None:
    token = redis_proxy.token()
    statuses: dict[str, int] = {}
    barrier = threading.Barrier(2)

    def hit(device: str) -> None:
        with httpx.Client(base_url=redis_proxy.url, timeout=30) as client:
            barrier.wait()
            response = client.get(
                "/api/v1/proxy/echo", headers={"X-Access-Token": token, "X-Device-ID": device}
            )
            statuses[device] = response.status_code

    threads = [threading.Thread(target=hit, args=(d,)) for d in ("device-one", "device-two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses.values()) == [200, 409]
    winner = next(d for d, s in statuses.items() if s == 200)
    loser = next(d for d, s in statuses.items() if s == 409)
    assert redis_proxy.forward("GET", "echo", token, device=winner).status_code == 200
    assert redis_proxy.forward("GET", "echo", token, device=loser).status_code == 409


async def _until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll until `condition` holds (a message crossing Redis), failing after a generous while."""
    for _ in range(500):
        if await condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def test_the_readers_local_copy_is_dropped_when_another_process_changes_it(
    redis_url: str, redis_cache: RedisAccessCache
) -> None:
    async def main() -> None:
        reader = RedisTokenReader(redis_url, redis_cache.namespace)
        await reader.start()
        try:

            async def subscribed() -> bool:
                return reader.subscribed

            await _until(subscribed, "the reader subscribed")
            raw = redis.Redis.from_url(redis_url)
            name = f"{redis_cache.namespace}:cache:tok:x"
            # The reader keeps a key's absence: written behind its back (nothing published),
            # the key stays absent to it...
            assert await reader.get("tok:x") is None
            raw.set(name, "sneaked in", px=60_000)
            assert await reader.get("tok:x") is None
            # ...until a write is published, as every write of the cache adapter is.
            redis_cache.set("tok:x", "first", 60)

            async def filled() -> bool:
                return await reader.get("tok:x") == "first"

            await _until(filled, "the fill reached the reader")
            # Kept locally: removed in Redis behind its back, the reader still answers from
            # its own copy...
            raw.delete(name)
            raw.close()
            assert await reader.get("tok:x") == "first"

            # ...until a change is published, as every write of the cache adapter does (a ban's
            # tombstone, a revocation, a device's new hold).
            redis_cache.set("tok:x", "-", 60)

            async def dropped() -> bool:
                return await reader.get("tok:x") == "-"

            await _until(dropped, "the invalidation reached the reader")
            redis_cache.delete("tok:x")

            async def deleted() -> bool:
                return await reader.get("tok:x") is None

            await _until(deleted, "the delete reached the reader")
        finally:
            await reader.aclose()

    asyncio.run(main())


def test_the_readers_local_copy_never_outlives_the_entry_in_redis(
    redis_url: str, redis_cache: RedisAccessCache
) -> None:
    async def main() -> None:
        reader = RedisTokenReader(redis_url, redis_cache.namespace)
        await reader.start()
        try:

            async def subscribed() -> bool:
                return reader.subscribed

            await _until(subscribed, "the reader subscribed")
            assert redis_cache.add("dev:x", "session|device", 0.2)
            assert await reader.get("dev:x") == "session|device"
            await asyncio.sleep(0.3)
            assert await reader.get("dev:x") is None
        finally:
            await reader.aclose()

    asyncio.run(main())


def test_a_reader_without_redis_misses_instead_of_failing() -> None:
    async def main() -> None:
        reader = RedisTokenReader(f"redis://127.0.0.1:{free_port()}/0", "nowhere")
        await reader.start()
        try:
            assert await reader.get("tok:x") is None
            assert await reader.get("tok:x") is None
            assert not reader.subscribed
        finally:
            await reader.aclose()

    asyncio.run(main())
