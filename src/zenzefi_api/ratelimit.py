"""Rate limits: login and register per client address, and the proxy per access token.

`RateLimiter` is the interface: at most `limit` attempts in any `window` seconds per key, the
attempt beyond them refused (and not counted) with the seconds until one expires. Two keep it:

- `SlidingWindowLimiter` counts in this process: exact for one API process, and the embedded
  default's. With several processes each would count alone, multiplying the limit.
- `RedisWindowLimiter` (`REDIS_URL` set) keeps the same window in Redis, so every API process
  counts against one limit. A decision is one round trip at most (a script that checks,
  records and answers with the wait; under load one round trip carries the decisions of many
  requests), awaited on the event loop, never blocking it. While Redis does not
  answer it fails open to counting in this process, as without Redis, logging the outage once
  and counting each such decision in `zenzefi_rate_limit_fallbacks_total`: an outage neither
  refuses every request nor lifts the limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import redis
import redis.asyncio
from litestar.connection import ASGIConnection
from litestar.exceptions import TooManyRequestsException
from litestar.handlers import BaseRouteHandler
from litestar.types import Guard

from zenzefi_api.cache import RETRY_AFTER_FAILURE_SECONDS, TIMEOUT_SECONDS
from zenzefi_api.context import api_context, client_address
from zenzefi_api.metrics import RATE_LIMIT_FALLBACKS
from zenzefi_core.settings import Settings

logger = logging.getLogger("zenzefi.ratelimit")

Bucket = Literal["login", "register"]


class RateLimiter(Protocol):
    async def acquire(self, key: str, *, limit: int, window: float) -> float | None:
        """Count one attempt for `key`. None when it is allowed; otherwise the seconds until
        the oldest attempt in the window expires (the attempt is then not counted)."""
        ...

    async def aclose(self) -> None:
        """Let go of connections made on the running event loop (at the app's shutdown)."""
        ...


class SlidingWindowLimiter:
    """At most `limit` attempts in any `window` seconds, per key, counted in this process."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._attempts: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    async def acquire(self, key: str, *, limit: int, window: float) -> float | None:
        return self.hit(key, limit=limit, window=window)

    async def aclose(self) -> None:
        return None

    def hit(self, key: str, *, limit: int, window: float) -> float | None:
        """`acquire`, for callers off the event loop."""
        now = self._clock()
        with self._lock:
            attempts = self._attempts.setdefault(key, deque())
            while attempts and attempts[0] <= now - window:
                attempts.popleft()
            if len(attempts) >= limit:
                return attempts[0] + window - now
            attempts.append(now)
            if len(self._attempts) > self._max_keys:
                self._forget_idle(now - window)
            return None

    def _forget_idle(self, horizon: float) -> None:
        """Drop keys with no attempt left in the window, so memory stays bounded."""
        for key in [k for k, a in self._attempts.items() if not a or a[-1] <= horizon]:
            del self._attempts[key]


#: The sliding window, for every decision of a batch in turn, in one step. For each KEYS[i]
#: (with its limit ARGV[2i-1] and window in milliseconds ARGV[2i]) the key lists its latest
#: attempts, newest first, in milliseconds of Redis's own clock (so API processes on hosts whose
#: clocks differ agree); at most `limit` are kept. The `limit`-th newest still inside the window
#: means the window is full: answer the milliseconds until it leaves. Otherwise record this
#: attempt and answer -1.
SLIDING_WINDOW = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local answers = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  local oldest = redis.call('LINDEX', key, limit - 1)
  if oldest and tonumber(oldest) > now - window then
    answers[i] = tonumber(oldest) + window - now
  else
    redis.call('LPUSH', key, now)
    redis.call('LTRIM', key, 0, limit - 1)
    redis.call('PEXPIRE', key, window)
    answers[i] = -1
  end
end
return answers
"""

#: The most decisions one round trip carries, so that one script never holds Redis for long.
MAX_BATCH = 256
#: What a call to Redis may fail with: refused, reset, timed out, or an error answer.
REDIS_FAILURES = (redis.RedisError, OSError, asyncio.TimeoutError)


@dataclass(frozen=True, slots=True)
class _Attempt:
    key: str
    limit: int
    window: float
    decision: asyncio.Future[float | None]


class RedisWindowLimiter:
    """The sliding window kept in Redis, shared by every API process.

    Decisions asked for while one round trip is out wait for it to return and then go
    together in the next: at most one round trip per decision, and under load one for many,
    since each costs the event loop far more in the Redis client than the script costs Redis.
    While Redis does not answer, decisions are counted in this process (`fallback`), and Redis
    is left alone for a pause after each failure, so an outage costs no request a wait
    beyond the first.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        namespace: str,
        *,
        fallback: SlidingWindowLimiter | None = None,
        retry_after_seconds: float = RETRY_AFTER_FAILURE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._script = client.register_script(SLIDING_WINDOW)
        self._prefix = f"{namespace}:ratelimit:"
        self._fallback = fallback or SlidingWindowLimiter()
        self._retry_after = retry_after_seconds
        self._monotonic = monotonic
        self._down_until: float | None = None
        self._waiting: list[_Attempt] = []
        self._sender: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, namespace: str) -> RedisWindowLimiter:
        client = redis.asyncio.Redis.from_url(
            url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
        )
        return cls(client, namespace)

    async def acquire(self, key: str, *, limit: int, window: float) -> float | None:
        if self._pausing():
            return self._locally(key, limit=limit, window=window)
        decision: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Attempt(key, limit, window, decision))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())
        return await decision

    async def _send(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            try:
                answers = await self._decide(batch)
            except asyncio.CancelledError:
                for attempt in batch:
                    attempt.decision.cancel()
                raise
            except Exception as error:
                # Not an outage (those are decided in process): a fault each request reports.
                for attempt in batch:
                    if not attempt.decision.done():
                        attempt.decision.set_exception(error)
                continue
            for attempt, wait in zip(batch, answers, strict=True):
                if not attempt.decision.done():
                    attempt.decision.set_result(wait)

    async def _decide(self, batch: list[_Attempt]) -> list[float | None]:
        """Redis's decisions, or this process's while Redis does not answer."""
        if not self._pausing():
            try:
                waits = await self._ask(batch)
            except REDIS_FAILURES as error:
                self._went_down(error)
            else:
                if self._down_until is not None:
                    self._down_until = None
                    logger.warning("rate limits are shared through Redis again")
                return [None if wait_ms < 0 else wait_ms / 1000 for wait_ms in waits]
        return [self._locally(a.key, limit=a.limit, window=a.window) for a in batch]

    async def _ask(self, batch: list[_Attempt]) -> list[int]:
        arguments: list[int] = []
        for attempt in batch:
            arguments += [attempt.limit, max(1, math.ceil(attempt.window * 1000))]
        answers: Any = await self._script(
            keys=[self._prefix + attempt.key for attempt in batch], args=arguments
        )
        if not isinstance(answers, list) or len(answers) != len(batch):
            raise redis.ResponseError(f"the rate-limit script answered {answers!r}")
        return [int(answer) for answer in answers]

    def _pausing(self) -> bool:
        """True while Redis is left alone after a failure."""
        down_until = self._down_until
        return down_until is not None and self._monotonic() < down_until

    def _went_down(self, error: BaseException) -> None:
        if self._down_until is None:
            logger.warning(
                "rate limits are counted in this process alone until Redis answers: %s: %s",
                type(error).__name__,
                error,
            )
        self._down_until = self._monotonic() + self._retry_after

    def _locally(self, key: str, *, limit: int, window: float) -> float | None:
        RATE_LIMIT_FALLBACKS.labels(key.partition(":")[0]).inc()
        return self._fallback.hit(key, limit=limit, window=window)

    async def aclose(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        for attempt in self._waiting:
            attempt.decision.cancel()
        self._waiting = []
        await self._client.aclose()


def limiter_for(settings: Settings) -> RateLimiter:
    """Redis when configured (shared by every API process), else counted in this process."""
    if settings.redis.url:
        return RedisWindowLimiter.from_url(settings.redis.url, settings.redis.namespace)
    return SlidingWindowLimiter()


def too_many(detail: str, wait: float) -> TooManyRequestsException:
    retry_after = max(1, math.ceil(wait))
    return TooManyRequestsException(
        detail=f"{detail} Retry in {retry_after} seconds.",
        headers={"Retry-After": str(retry_after)},
    )


def rate_limited(bucket: Bucket) -> Guard:
    """A guard counting one attempt per request in `bucket` for the client's address.

    It runs before the body is read, so malformed requests count too: an attacker cannot get
    extra attempts by sending garbage in between.
    """

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        context = api_context(connection.app)
        limits = context.settings.rate_limit
        if not limits.enabled:
            return
        wait = await context.limiter.acquire(
            f"{bucket}:{client_address(connection) or 'unknown'}",
            limit=limits.login_attempts if bucket == "login" else limits.register_attempts,
            window=limits.window_seconds,
        )
        if wait is not None:
            raise too_many("Too many attempts.", wait)

    return guard
