"""The proxy's token cache in Redis, shared by every API process (`REDIS_URL` set).

The core cannot import redis, so the adapter lives here; it implements the core's `AccessCache`.
Keys carry the configured namespace, so deployments and test runs can share one Redis.

The cache is only a shortcut: the database can decide everything it holds. So while Redis cannot
be reached the adapter behaves as an empty cache that keeps nothing (every read a miss, every
write dropped) instead of failing the request, and the proxy keeps serving from the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from zenzefi_core.adapters.cache import InProcessCache
from zenzefi_core.ports import AccessCache
from zenzefi_core.settings import Settings

logger = logging.getLogger("zenzefi.cache")
T = TypeVar("T")

#: After a failure Redis is left alone this long: the proxy reads it on the event loop, so an
#: outage must not cost every request a connection attempt or a wait.
RETRY_AFTER_FAILURE_SECONDS = 2.0
#: The cache's commands are O(1) on a nearby Redis and take a millisecond; one that has not
#: answered (or connected) within this long is treated as down. The event loop waits this
#: long at most, once per pause, when Redis hangs instead of refusing.
TIMEOUT_SECONDS = 0.5


def _milliseconds(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisAccessCache:
    """The `AccessCache` in Redis; an empty cache that keeps nothing while Redis is down.

    A dropped write is harmless for the proxy: a missing token entry sends the next request to
    the database, which fills it again. A ban's tombstone lost this way (Redis unreachable from
    this process, yet keeping its data for others) lets a device that already held the token
    keep it until its hold is re-read, at most `PROXY_DEVICE_RECHECK_SECONDS` later; that
    read goes to the database, which refuses the banned owner.
    """

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        *,
        retry_after_seconds: float = RETRY_AFTER_FAILURE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._prefix = f"{namespace}:cache:"
        self._retry_after = retry_after_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._down_until: float | None = None

    @classmethod
    def from_url(cls, url: str, namespace: str) -> RedisAccessCache:
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=TIMEOUT_SECONDS,
            socket_connect_timeout=TIMEOUT_SECONDS,
        )
        return cls(client, namespace)

    @property
    def available(self) -> bool:
        """False while Redis is being left alone after a failure."""
        down_until = self._down_until
        return down_until is None or self._monotonic() >= down_until

    def _call(self, operation: Callable[[], T], fallback: T) -> T:
        if not self.available:
            return fallback
        try:
            result = operation()
        except redis.RedisError as error:
            with self._lock:
                first = self._down_until is None
                self._down_until = self._monotonic() + self._retry_after
            if first:
                logger.warning(
                    "token cache unreachable, the database answers until it is back: %s: %s",
                    type(error).__name__,
                    error,
                )
            return fallback
        if self._down_until is not None:
            with self._lock:
                recovered = self._down_until is not None
                self._down_until = None
            if recovered:
                logger.warning("token cache reachable again")
        return result

    def ping(self) -> bool:
        """Does Redis answer? (It holds the broker too: `/health` reports degraded when not.)"""
        return self._call(lambda: bool(self._client.ping()), False)

    def get(self, key: str) -> str | None:
        value = self._call(lambda: self._client.get(self._prefix + key), None)
        return None if value is None else str(value)

    def add(self, key: str, value: str, ttl_seconds: float) -> bool:
        def store() -> bool:
            return bool(
                self._client.set(self._prefix + key, value, px=_milliseconds(ttl_seconds), nx=True)
            )

        return self._call(store, False)

    def set(self, key: str, value: str, ttl_seconds: float) -> None:
        self._call(
            lambda: self._client.set(self._prefix + key, value, px=_milliseconds(ttl_seconds)),
            None,
        )

    def delete(self, key: str) -> None:
        self._call(lambda: self._client.delete(self._prefix + key), None)

    def close(self) -> None:
        self._client.close()


def access_cache_for(settings: Settings) -> AccessCache:
    """Redis when configured, else the embedded default's in-process cache."""
    if settings.redis.url:
        return RedisAccessCache.from_url(settings.redis.url, settings.redis.namespace)
    return InProcessCache()
