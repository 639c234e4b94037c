"""`GET /health` (fixed by the API contract) and the probes behind it.

Healthy: the database answers. Degraded: it answers, but a dependency that only some features
need does not: the upstream Zenzefi server (the proxy), or Redis when configured (the broker and
the shared token cache; meanwhile events wait in the outbox and the database answers for the
cache). Unhealthy (503): the database is down, so nothing works. Every probe has a short
timeout, and the upstream result is reused for a few seconds, so frequent polling by a load
balancer stays cheap.
"""

from __future__ import annotations

import math
import time
from enum import StrEnum
from typing import Any

import httpx
import msgspec
from litestar import Controller, Request, Response, get
from litestar.openapi.datastructures import ResponseSpec

from zenzefi_api.cache import RedisAccessCache
from zenzefi_api.context import ApiContext, api_context
from zenzefi_api.probes import within
from zenzefi_api.schemas import Timestamp, timestamp
from zenzefi_core.ports import AccessCache


class UpstreamProbe:
    """Is the upstream server reachable at all? Any HTTP answer counts, even an error status."""

    def __init__(self, url: str, timeout: float, cache_seconds: float = 10.0) -> None:
        self._url = url
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._cache_seconds = cache_seconds
        self._checked_at = -math.inf
        self._reachable = False

    async def reachable(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= self._cache_seconds:
            try:
                await self._client.get(self._url)
                self._reachable = True
            except (httpx.HTTPError, httpx.InvalidURL):
                self._reachable = False
            self._checked_at = now
        return self._reachable

    async def aclose(self) -> None:
        await self._client.aclose()


async def _redis_reachable(cache: AccessCache, timeout: float) -> bool:
    """True without Redis; with it, whether it answers within `timeout` (the cache leaves it
    alone for a moment after a failure, so a load balancer's polling adds no load)."""
    if not isinstance(cache, RedisAccessCache):
        return True
    return await within(timeout, cache.ping) is True


async def _optional_parts_reachable(context: ApiContext, timeout: float) -> bool:
    upstream = context.upstream
    if upstream is not None and not await upstream.reachable():
        return False
    return await _redis_reachable(context.core.access_cache, timeout)


class Status(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


class HealthOut(msgspec.Struct, kw_only=True):
    status: Status
    timestamp: Timestamp


class HealthController(Controller):
    path = "/health"
    tags = ("Operations",)

    @get(
        operation_id="health",
        summary="Liveness and dependencies",
        description="200 healthy or degraded (upstream or Redis unreachable); 503 unhealthy when "
        "the database is down.",
        responses={
            503: ResponseSpec(
                data_container=HealthOut,
                description='`{"status": "unhealthy"}`: the database is down',
                generate_examples=False,
            )
        },
    )
    async def health(self, request: Request[Any, Any, Any]) -> Response[HealthOut]:
        context = api_context(request.app)
        timeout = context.settings.health_timeout_seconds
        database_up = await within(timeout, context.core.database.ping) is True
        status = Status.HEALTHY
        if not database_up:
            status = Status.UNHEALTHY
        elif not await _optional_parts_reachable(context, timeout):
            status = Status.DEGRADED
        body = HealthOut(status=status, timestamp=timestamp(context.core.clock.now()))
        return Response(body, status_code=503 if status is Status.UNHEALTHY else 200)
