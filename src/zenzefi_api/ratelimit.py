"""Rate limits on the routes worth guessing at (login, register), per client address.

`RateLimiter` is the interface; `SlidingWindowLimiter` keeps its counts in this process, which is
exact for a single API process. With several API processes each counts on its own, so the limit
an attacker meets is multiplied by their number: a limiter keeping its windows in Redis (same
interface, a sorted set per key) is the thing to add when the API is scaled out.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal, Protocol

from litestar.connection import ASGIConnection
from litestar.exceptions import TooManyRequestsException
from litestar.handlers import BaseRouteHandler
from litestar.types import Guard

from zenzefi_api.context import api_context, client_address

Bucket = Literal["login", "register"]


class RateLimiter(Protocol):
    def hit(self, key: str, *, limit: int, window: float) -> float | None:
        """Count one attempt for `key`. None when it is allowed; otherwise the seconds until
        the oldest attempt in the window expires (the attempt is then not counted)."""
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

    def hit(self, key: str, *, limit: int, window: float) -> float | None:
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
        wait = context.limiter.hit(
            f"{bucket}:{client_address(connection) or 'unknown'}",
            limit=limits.login_attempts if bucket == "login" else limits.register_attempts,
            window=limits.window_seconds,
        )
        if wait is not None:
            retry_after = max(1, math.ceil(wait))
            raise TooManyRequestsException(
                detail=f"Too many attempts. Retry in {retry_after} seconds.",
                headers={"Retry-After": str(retry_after)},
            )

    return guard
