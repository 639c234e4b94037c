"""The proxy's token cache in Redis, shared by every API process (`REDIS_URL` set), and the
hot path's way of reading it without blocking the event loop.

The core cannot import redis, so the adapter lives here; it implements the core's `AccessCache`
(synchronous: the use cases run in worker threads). Keys carry the configured namespace, so
deployments and test runs can share one Redis.

The cache is only a shortcut: the database can decide everything it holds. So while Redis cannot
be reached the adapter behaves as an empty cache that keeps nothing (every read a miss, every
write dropped) instead of failing the request, and the proxy keeps serving from the database.

The proxy reads through a `TokenReader`: with Redis, `RedisTokenReader` keeps what it read in a
small dictionary of its own for a few seconds and asks Redis (`redis.asyncio`) only on a miss.
It keeps a key's absence the same way. Every write (a fill, a tombstone after a ban, a
revocation or an activation, a device's new hold, a delete) is published on the namespace's
invalidation channel, and every process's reader drops that key from its dictionary as the
message arrives, so a change made through one process holds in all of them at once. While the
subscription is down nothing is kept locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import anyio.to_thread
import redis
import redis.asyncio

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
#: Longest a reader keeps an entry of its own. Invalidations arrive at once by publication;
#: this bounds what a process that stops hearing them (a partition from Redis) can serve.
LOCAL_SECONDS = 5.0
#: Entries a reader keeps at most (cleared when full: a cache may always forget).
LOCAL_MAX_ENTRIES = 100_000


def invalidation_channel(namespace: str) -> str:
    return f"{namespace}:cache:invalidate"


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
        url: str | None = None,
    ) -> None:
        self._client = client
        #: Where Redis is, for the proxy's `RedisTokenReader` (None: a client made elsewhere).
        self.url = url
        self.namespace = namespace
        self._prefix = f"{namespace}:cache:"
        self._channel = invalidation_channel(namespace)
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
        return cls(client, namespace, url=url)

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
            stored = bool(
                self._client.set(self._prefix + key, value, px=_milliseconds(ttl_seconds), nx=True)
            )
            if stored:
                # Readers may hold the key's absence: they must drop that too.
                self._client.publish(self._channel, key)
            return stored

        return self._call(store, False)

    def set(self, key: str, value: str, ttl_seconds: float) -> None:
        def store() -> None:
            self._client.set(self._prefix + key, value, px=_milliseconds(ttl_seconds))
            self._client.publish(self._channel, key)

        self._call(store, None)

    def delete(self, key: str) -> None:
        def remove() -> None:
            self._client.delete(self._prefix + key)
            self._client.publish(self._channel, key)

        self._call(remove, None)

    def close(self) -> None:
        self._client.close()


class TokenReader(Protocol):
    """How the proxy's event loop reads the token cache: never a blocking call."""

    async def get(self, key: str) -> str | None: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


class InProcessTokenReader:
    """The embedded default's in-process cache, read directly: a dictionary lookup."""

    def __init__(self, cache: InProcessCache) -> None:
        self._cache = cache

    async def get(self, key: str) -> str | None:
        return self._cache.get(key)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class ThreadTokenReader:
    """Any other `AccessCache` (a library user's own), read in a worker thread since it may
    block."""

    def __init__(self, cache: AccessCache) -> None:
        self._cache = cache

    async def get(self, key: str) -> str | None:
        return await anyio.to_thread.run_sync(self._cache.get, key)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class RedisTokenReader:
    """Reads the Redis cache with `redis.asyncio`, keeping what it read for at most
    `LOCAL_SECONDS` (never beyond the entry's own expiry in Redis) and dropping a key the moment
    its invalidation is published (see the module docstring)."""

    def __init__(
        self,
        url: str,
        namespace: str,
        *,
        local_seconds: float = LOCAL_SECONDS,
        retry_after_seconds: float = RETRY_AFTER_FAILURE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = redis.asyncio.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=TIMEOUT_SECONDS,
            socket_connect_timeout=TIMEOUT_SECONDS,
        )
        # The subscription waits for messages as long as there are none: no read timeout.
        self._subscriber = redis.asyncio.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=TIMEOUT_SECONDS,
            socket_keepalive=True,
        )
        self._prefix = f"{namespace}:cache:"
        self._channel = invalidation_channel(namespace)
        self._local_seconds = local_seconds
        self._retry_after = retry_after_seconds
        self._monotonic = monotonic
        #: key -> (value, or None for a key known to be absent; until when it may be used)
        self._local: dict[str, tuple[str | None, float]] = {}
        #: Counts invalidations: a read that raced one is not kept.
        self._generation = 0
        self._subscribed = False
        self._down_until: float | None = None
        self._listener: asyncio.Task[None] | None = None

    @property
    def subscribed(self) -> bool:
        return self._subscribed

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen())

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._client.aclose()
        await self._subscriber.aclose()

    async def get(self, key: str) -> str | None:
        now = self._monotonic()
        entry = self._local.get(key)
        if entry is not None:
            if entry[1] > now:
                return entry[0]
            self._local.pop(key, None)
        down_until = self._down_until
        if down_until is not None and now < down_until:
            return None
        generation = self._generation
        name = self._prefix + key
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(name)
                pipe.pttl(name)
                value, ttl = await pipe.execute()
        except (redis.RedisError, OSError) as error:
            if self._down_until is None:
                logger.warning(
                    "token cache unreachable, the database answers until it is back: %s: %s",
                    type(error).__name__,
                    error,
                )
            self._down_until = now + self._retry_after
            return None
        if self._down_until is not None:
            self._down_until = None
            logger.warning("token cache reachable again")
        if self._subscribed and generation == self._generation:
            if value is None:
                keep = self._local_seconds
            elif ttl > 0:
                keep = min(ttl / 1000, self._local_seconds)
            else:  # expired between the two commands
                keep = 0.0
            if keep > 0:
                if len(self._local) >= LOCAL_MAX_ENTRIES:
                    self._local.clear()
                self._local[key] = (value, now + keep)
        return None if value is None else str(value)

    async def _listen(self) -> None:
        while True:
            pubsub = self._subscriber.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        self._local.clear()
                        self._subscribed = True
                    elif message["type"] == "message":
                        self._generation += 1
                        self._local.pop(message["data"], None)
            except (redis.RedisError, OSError) as error:
                logger.warning(
                    "token cache invalidations unreachable, nothing kept locally: %s: %s",
                    type(error).__name__,
                    error,
                )
            finally:
                self._subscribed = False
                self._generation += 1
                self._local.clear()
                with contextlib.suppress(redis.RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(self._retry_after)


def token_reader_for(cache: AccessCache) -> TokenReader:
    """The proxy's reader of `cache`: direct in process, asynchronous with Redis."""
    if isinstance(cache, InProcessCache):
        return InProcessTokenReader(cache)
    if isinstance(cache, RedisAccessCache) and cache.url is not None:
        return RedisTokenReader(cache.url, cache.namespace)
    return ThreadTokenReader(cache)


def access_cache_for(settings: Settings) -> AccessCache:
    """Redis when configured, else the embedded default's in-process cache."""
    if settings.redis.url:
        return RedisAccessCache.from_url(settings.redis.url, settings.redis.namespace)
    return InProcessCache()
