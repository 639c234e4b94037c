"""The Redis token cache while Redis is down: an empty cache that keeps nothing, never an error,
tried again only after a pause, and itself again once Redis answers.

(tests/fault/test_redis_outage.py stops a real Redis under `zenzefi serve`; these pin the
adapter's rules without one.)
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis

from zenzefi_api.cache import RedisAccessCache


class FlakyRedis:
    """Enough of `redis.Redis` for the cache: a dict, or ConnectionError while `down`."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self.values: dict[str, str] = {}
        self.published: list[tuple[str, str]] = []

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379.")

    def get(self, key: str) -> str | None:
        self._check()
        return self.values.get(key)

    def set(self, key: str, value: str, px: int, nx: bool = False) -> bool | None:
        self._check()
        if nx and key in self.values:
            return None
        self.values[key] = value
        return True

    def delete(self, key: str) -> int:
        self._check()
        return 1 if self.values.pop(key, None) is not None else 0

    def publish(self, channel: str, message: str) -> int:
        self._check()
        self.published.append((channel, message))
        return 0


@pytest.fixture
def now() -> list[float]:
    return [100.0]


@pytest.fixture
def client() -> FlakyRedis:
    return FlakyRedis()


@pytest.fixture
def cache(client: FlakyRedis, now: list[float]) -> RedisAccessCache:
    fake: Any = client
    return RedisAccessCache(fake, "ns", retry_after_seconds=1.0, monotonic=lambda: now[0])


def test_while_redis_is_down_every_read_misses_and_writes_are_dropped(
    cache: RedisAccessCache, client: FlakyRedis
) -> None:
    cache.set("k", "v", 60)
    assert cache.get("k") == "v"
    client.down = True
    assert cache.get("k") is None
    assert cache.add("new", "v", 60) is False
    cache.set("k", "other", 60)
    cache.delete("k")
    assert not cache.available


def test_after_a_failure_redis_is_left_alone_for_a_while(
    cache: RedisAccessCache, client: FlakyRedis, now: list[float]
) -> None:
    client.down = True
    assert cache.get("k") is None
    calls = client.calls
    for _ in range(100):
        assert cache.get("k") is None
    assert client.calls == calls, "no round trip to a Redis known to be down"
    now[0] += 1.0
    assert cache.get("k") is None
    assert client.calls == calls + 1, "tried again once the pause is over"


def test_the_cache_is_itself_again_once_redis_answers(
    cache: RedisAccessCache, client: FlakyRedis, now: list[float]
) -> None:
    client.values["ns:cache:k"] = "kept"
    client.down = True
    assert cache.get("k") is None
    client.down = False
    assert cache.get("k") is None, "still pausing"
    now[0] += 1.0
    assert cache.get("k") == "kept"
    assert cache.available
    assert cache.add("fresh", "v", 60) is True
    assert cache.add("fresh", "again", 60) is False


def test_an_outage_is_logged_when_it_starts_and_ends(
    cache: RedisAccessCache, client: FlakyRedis, now: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="zenzefi.cache")
    client.down = True
    for _ in range(3):
        cache.get("k")
        now[0] += 1.0
    client.down = False
    cache.get("k")
    cache.get("k")
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("token cache unreachable, the database answers")
    assert messages[1] == "token cache reachable again"
