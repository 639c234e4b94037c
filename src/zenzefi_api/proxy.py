"""The access proxy: `/api/v1/proxy/status` and `/api/v1/proxy/{path}`, as the desktop client
expects them (API.md, "Proxy", fixed).

A request is checked in this order: device id present (403) and 8-255 characters (400), token
(401), path normalised and inside the token's scope (400 malformed, 403 outside), rate limit per
token (429), one device per token (409). The decisions are the core's (`services.proxy`); this
module forwards bytes. The hot path is a cache hit and touches no database; the first request
of a token, a new device and an expired device hold go through `ProxyAccess.authorize` in a
worker thread.

Bodies stream both ways through one keep-alive connection pool (`zenzefi_api.upstream`), so
memory does not grow with the size of an upload or a download. Uploads through the proxy are not
subject to the API's `MAX_REQUEST_BYTES`: they are streamed, never held, and the upstream server
is the judge of what it accepts. Upstream redirects go back to the client (pointing at the proxy
when they point at the upstream itself), and no error names the upstream's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import msgspec
from litestar import Controller, HttpMethod, Request, Response, get, route
from litestar.exceptions import (
    ClientException,
    NotAuthorizedException,
    PermissionDeniedException,
)
from litestar.response.base import ASGIResponse
from litestar.types import Receive, Scope, Send

from zenzefi_api.cache import TokenReader, token_reader_for
from zenzefi_api.context import api_context, client_address
from zenzefi_api.metrics import (
    PROXY_BYTES,
    PROXY_LATENCY,
    PROXY_REQUESTS,
    PROXY_RESULTS,
    TOKEN_CHECKS,
    proxy_result,
)
from zenzefi_api.ratelimit import too_many
from zenzefi_api.schemas import ErrorBody, OptionalTimestamp, error_responses, timestamp
from zenzefi_api.upstream import (
    Origin,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
    UpstreamTimeout,
    ssl_context,
)
from zenzefi_core.bootstrap import Core
from zenzefi_core.proxy_scope import InvalidPath, encode_path, in_scope, normalise_path
from zenzefi_core.security import hash_access_token
from zenzefi_core.services.proxy import (
    DEVICE_ID_MAX,
    DEVICE_ID_MIN,
    InvalidAccessToken,
    ProxyAccess,
    ProxyGrant,
    ProxyPolicy,
    ProxyRequest,
    ProxyStatus,
    RecordUsage,
    UsageMeter,
    cached_token,
    device_key,
    grant_from_cache,
    ready_key,
    state_from_cache,
    token_key,
)
from zenzefi_core.settings import Settings

logger = logging.getLogger("zenzefi.proxy")

PROXY_PREFIX = "/api/v1/proxy"
TOKEN_HEADER = "x-access-token"  # noqa: S105 - a header name, not a secret
DEVICE_HEADER = "x-device-id"
#: Connection-level headers (RFC 9110 7.6.1), never forwarded in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: Client headers dropped on the way up: ours to set (identity, forwarding), the proxy's own,
#: and those a server behind a CDN or load balancer may believe about the client's address
#: (`X-Real-IP` and kin) or the path it asked for (`X-Original-URL`, `X-Rewrite-URL`: IIS and
#: some frameworks route by them, which would walk past the scope check).
DROPPED_REQUEST_HEADERS = frozenset(
    {
        "host",
        TOKEN_HEADER,
        "x-user-id",
        "x-token-id",
        "forwarded",
        "content-length",
        "x-real-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "x-client-ip",
        "x-original-url",
        "x-rewrite-url",
    }
)
#: The metric series the proxy counts into, bound once rather than looked up per request.
_CACHE_HIT = TOKEN_CHECKS.labels("cache_hit")
_CACHE_MISS = TOKEN_CHECKS.labels("cache_miss")
_INVALID = TOKEN_CHECKS.labels("invalid")
_RESULTS = {result: PROXY_REQUESTS.labels(result) for result in PROXY_RESULTS}
_BYTES_IN = PROXY_BYTES.labels("in")
_BYTES_OUT = PROXY_BYTES.labels("out")
#: The proxy's authentication in the schema: an access token, never a login bearer.
ACCESS_TOKEN: list[dict[str, list[str]]] = [{"AccessToken": []}]
#: Bodies longer than this (or of unknown length) are watched for the client hanging up.
WATCH_ABOVE_BYTES = 1024 * 1024
UPSTREAM_DOWN = "Upstream server unavailable"
UPSTREAM_TIMEOUT = "Upstream server timed out"
FORWARDED_METHODS = [
    HttpMethod.GET,
    HttpMethod.HEAD,
    HttpMethod.POST,
    HttpMethod.PUT,
    HttpMethod.PATCH,
    HttpMethod.DELETE,
    HttpMethod.OPTIONS,
]


class ProxyStatusOut(msgspec.Struct, kw_only=True):
    connected: bool
    user_id: str
    token_id: str
    is_activated: bool
    expires_at: OptionalTimestamp
    duration_hours: int
    time_remaining_seconds: int
    status: str


@dataclass
class ProxyRuntime:
    """The proxy's parts for one running app: use cases, the usage meter, the upstream client
    and the flush task. Made by `start` in the app's lifespan, closed by `stop`."""

    settings: Settings
    core: Core
    access: ProxyAccess
    status: ProxyStatus
    tokens: TokenReader
    meter: UsageMeter = field(default_factory=UsageMeter)
    pool: UpstreamPool | None = None
    _flusher: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, settings: Settings, core: Core) -> ProxyRuntime:
        policy = ProxyPolicy(
            idle_seconds=settings.proxy.session_idle_seconds,
            cache_seconds=settings.proxy.cache_seconds,
            device_recheck_seconds=settings.proxy.device_recheck_seconds,
        )
        return cls(
            settings=settings,
            core=core,
            access=ProxyAccess(
                core.uow, core.clock, core.access_cache, policy, core.policy.referrals
            ),
            status=ProxyStatus(
                core.uow, core.clock, core.access_cache, settings.proxy.cache_seconds
            ),
            tokens=token_reader_for(core.access_cache),
        )

    async def start(self) -> None:
        upstream = self.settings.upstream
        if upstream.url:
            origin = Origin.parse(upstream.url)
            self.pool = UpstreamPool(
                origin,
                ssl_context=ssl_context(upstream.verify_tls, upstream.ca_file)
                if origin.scheme == "https"
                else None,
                max_connections=upstream.max_connections,
                connect_timeout=upstream.connect_timeout_seconds,
                # Also the longest wait for a free connection when the pool runs dry (504).
                read_timeout=upstream.read_timeout_seconds,
            )
        await self.tokens.start()
        self._flusher = asyncio.create_task(self._flush_periodically())

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush()
        if self.pool is not None:
            await self.pool.aclose()
            self.pool = None
        await self.tokens.aclose()

    async def flush(self) -> None:
        """Write the usage counted since the last flush, in one transaction; on failure keep it
        for the next one."""
        deltas = self.meter.drain()
        if not deltas:
            return
        try:
            await anyio.to_thread.run_sync(RecordUsage(self.core.uow), deltas)
        except Exception:
            logger.exception("could not record proxy usage; keeping it for the next flush")
            self.meter.restore(deltas)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.usage_flush_seconds)
            await self.flush()


def proxy_runtime(request: Request[Any, Any, Any]) -> ProxyRuntime:
    runtime = api_context(request.app).proxy
    assert runtime is not None, "the proxy runtime starts with the app's lifespan"
    return runtime


def _token_hash(request: Request[Any, Any, Any]) -> str:
    token = request.headers.get(TOKEN_HEADER, "").strip()
    if not token:
        raise NotAuthorizedException(detail="Missing X-Access-Token header")
    return hash_access_token(token)


def _device_id(request: Request[Any, Any, Any]) -> str:
    device = request.headers.get(DEVICE_HEADER)
    if device is None or not device.strip():
        raise PermissionDeniedException(detail="Missing X-Device-ID header")
    device = device.strip()
    if not DEVICE_ID_MIN <= len(device) <= DEVICE_ID_MAX or not device.isprintable():
        raise ClientException(
            detail=f"X-Device-ID must be {DEVICE_ID_MIN} to {DEVICE_ID_MAX} printable characters"
        )
    return device


def _forward_operation_id(_handler: Any, method: str, path: list[Any]) -> str:
    """One id per method and path: the upstream's root (`/api/v1/proxy/`) and everything below."""
    below = any(not isinstance(component, str) for component in path)
    return f"proxyForward{method.title()}" if below else f"proxyForwardRoot{method.title()}"


def _raw_target(request: Request[Any, Any, Any]) -> str:
    """The path after the proxy prefix exactly as the client sent it, still percent-encoded."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if raw else request.scope["path"]
    root = request.scope.get("root_path", "") + PROXY_PREFIX
    if path.startswith(root):
        path = path[len(root) :]
    return path


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response[ErrorBody]:
    return Response(
        ErrorBody(status_code=status, detail=detail), status_code=status, headers=headers
    )


def _request_headers(
    request: Request[Any, Any, Any], grant: ProxyGrant, address: str | None
) -> list[tuple[str, str]]:
    connection_named = {
        name.strip().lower()
        for value in request.headers.getall("connection", [])
        for name in value.split(",")
    }
    headers = [
        (name, value)
        for name, value in request.headers.multi_items()
        if name not in HOP_BY_HOP
        and name not in connection_named
        and name not in DROPPED_REQUEST_HEADERS
        and not name.startswith("x-forwarded-")
    ]
    length = request.headers.get("content-length")
    if length is not None:
        headers.append(("content-length", length))
    headers.extend(
        [
            ("x-user-id", str(grant.user_id)),
            ("x-token-id", str(grant.token_id)),
            ("x-forwarded-for", address or "unknown"),
            ("x-forwarded-proto", request.url.scheme),
            ("x-forwarded-host", request.headers.get("host", "")),
        ]
    )
    return headers


def _response_headers(upstream: UpstreamResponse, origin: Origin) -> list[tuple[bytes, bytes]]:
    connection_named = {
        name.strip().lower()
        for header, value in upstream.headers
        if header == b"connection"
        for name in value.split(b",")
    }
    headers = []
    for name, value in upstream.headers:
        if name.decode("latin-1") in HOP_BY_HOP or name in connection_named:
            continue
        if name == b"location":
            value = _client_location(value.decode("latin-1"), origin).encode("latin-1")
        headers.append((name, value))
    return headers


def _client_location(location: str, origin: Origin) -> str:
    """A redirect into the upstream itself is shown as the same place behind the proxy, so the
    client follows it through the proxy and never learns the upstream's address."""
    target = urlsplit(location)
    if not target.netloc:
        if location.startswith("/"):
            return PROXY_PREFIX + location
        return location
    same_origin = (
        target.scheme == origin.scheme
        and (target.hostname or "") == origin.host
        and (target.port or _default_port(target.scheme)) == origin.port
    )
    if same_origin:
        path = target.path
        if origin.base_path and path.startswith(origin.base_path):
            path = path[len(origin.base_path) :]
        query = f"?{target.query}" if target.query else ""
        return PROXY_PREFIX + (path or "/") + query
    return location


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


class UpstreamStream(ASGIResponse):
    """The upstream's response, passed on as it comes: status, every header in order (each
    `Set-Cookie` too), and the body chunk by chunk. Counts the bytes and closes the upstream
    response when done, even when the client goes away first.

    A long body (over `WATCH_ABOVE_BYTES`, or of unknown length) stops being read from the
    upstream as soon as the client hangs up: the server drops what is sent to a client that has
    gone without a word, so without watching, an abandoned download would still be pulled
    through to its last byte. Short ones are not worth a watcher."""

    def __init__(
        self,
        upstream: UpstreamResponse,
        headers: Iterable[tuple[bytes, bytes]],
        on_done: Callable[[int], None],
    ) -> None:
        super().__init__(status_code=upstream.status)
        self._upstream = upstream
        self._raw_headers = list(headers)
        self._on_done = on_done
        length = next(
            (value for name, value in upstream.headers if name == b"content-length"), None
        )
        self._watch = length is None or not length.isdigit() or int(length) > WATCH_ABOVE_BYTES

    def encode_headers(self) -> list[tuple[bytes, bytes]]:
        return self._raw_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = 0
        gone: asyncio.Future[None] | None = None
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self._upstream.status,
                    "headers": self._raw_headers,
                }
            )
            if self._watch:
                gone = asyncio.ensure_future(_client_gone(receive))
            async for chunk in self._upstream.body():
                if gone is not None and gone.done():
                    return
                sent += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except UpstreamError:
            # Headers are out: all that is left is to cut the connection short.
            logger.warning("upstream failed while streaming a response")
        finally:
            if gone is not None:
                if not gone.done():
                    gone.cancel()
                elif not gone.cancelled():
                    gone.exception()  # retrieved, so an error there is not reported as lost
            await self._upstream.aclose()
            self._on_done(sent)


async def _client_gone(receive: Receive) -> None:
    """Returns once the client has disconnected (or the response is complete)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class UpstreamResponseBody(Response[bytes]):
    """Hands Litestar the `UpstreamStream` as it is."""

    def __init__(self, stream: UpstreamStream) -> None:
        super().__init__(b"")
        self._stream = stream

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        return self._stream


class ProxyController(Controller):
    path = "/proxy"
    tags = ("Proxy",)
    security = ACCESS_TOKEN

    @get(
        "/status",
        operation_id="proxyStatus",
        summary="The access token's state, as the desktop client polls it; never activates",
        responses=error_responses(401, 503),
    )
    async def status(self, request: Request[Any, Any, Any]) -> ProxyStatusOut:
        runtime = proxy_runtime(request)
        token_hash = _token_hash(request)
        tokens = runtime.tokens
        state = state_from_cache(
            cached_token(await tokens.get(token_key(token_hash))),
            cached_token(await tokens.get(ready_key(token_hash))),
            runtime.core.clock.now(),
        )
        if state is None:
            # Read from the database, which fills the cache for the next call.
            state = await anyio.to_thread.run_sync(runtime.status.from_database, token_hash)
        return ProxyStatusOut(
            connected=True,
            user_id=str(state.user_id),
            token_id=str(state.token_id),
            is_activated=state.activated_at is not None,
            expires_at=None if state.expires_at is None else timestamp(state.expires_at),
            duration_hours=state.duration_hours,
            time_remaining_seconds=state.seconds_left,
            status=state.status.value,
        )

    @route(
        ["/", "/{path:path}"],
        http_method=FORWARDED_METHODS,
        operation_id=_forward_operation_id,
        summary="Forward a request to the diagnostic server (X-Access-Token and X-Device-ID)",
        description="Streams both ways. 400 bad device id or path, 401 bad token, 403 missing "
        "device id or path outside the token's scope, 409 token in use on another device, "
        "429 rate limit, 502 upstream unreachable, 504 upstream timeout.",
        request_max_body_size=None,
        responses=error_responses(400, 401, 403, 409, 429, 502, 503, 504),
    )
    async def forward(self, request: Request[Any, Any, Any]) -> Response[Any]:
        runtime = proxy_runtime(request)
        device_id = _device_id(request)
        token_hash = _token_hash(request)
        raw = _raw_target(request)
        try:
            segments = normalise_path(raw)
        except InvalidPath:
            raise ClientException(detail="Invalid path") from None
        address = client_address(request)
        try:
            grant = await self._cached_grant(runtime, token_hash, device_id)
            if grant is not None:
                _CACHE_HIT.inc()
            else:
                grant = await anyio.to_thread.run_sync(
                    runtime.access.authorize,
                    ProxyRequest(
                        token_hash=token_hash,
                        device_id=device_id,
                        ip=address,
                        user_agent=request.headers.get("user-agent"),
                        path=segments,
                    ),
                )
                _CACHE_MISS.inc()
        except InvalidAccessToken:
            _INVALID.inc()
            raise
        if not in_scope(grant.scope, segments):
            raise PermissionDeniedException(detail="Path is outside the access token's scope")
        await self._rate_limit(request, grant)
        if runtime.pool is None:
            return _error(502, UPSTREAM_DOWN)
        return await self._send(request, runtime, grant, segments, raw, address)

    @staticmethod
    async def _cached_grant(
        runtime: ProxyRuntime, token_hash: str, device_id: str
    ) -> ProxyGrant | None:
        """The grant from the cache alone (the hot path), or None: the database decides."""
        token = cached_token(await runtime.tokens.get(token_key(token_hash)))
        if token is None or token.expires_at is None:
            return None
        now = runtime.core.clock.now()
        if now >= token.expires_at:
            raise InvalidAccessToken()
        holder = await runtime.tokens.get(device_key(token.token_id))
        return grant_from_cache(token, holder, device_id, now)

    @staticmethod
    async def _rate_limit(request: Request[Any, Any, Any], grant: ProxyGrant) -> None:
        context = api_context(request.app)
        wait = await context.limiter.acquire(
            f"proxy:{grant.token_id}",
            limit=context.settings.proxy.rate_limit_per_minute,
            window=60.0,
        )
        if wait is not None:
            raise too_many("Too many requests for this access token.", wait)

    async def _send(
        self,
        request: Request[Any, Any, Any],
        runtime: ProxyRuntime,
        grant: ProxyGrant,
        segments: tuple[str, ...],
        raw: str,
        address: str | None,
    ) -> Response[Any]:
        pool = runtime.pool
        assert pool is not None
        started = time.perf_counter()
        received = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal received
            async for chunk in request.stream():
                if chunk:
                    received += len(chunk)
                    yield chunk

        headers = request.headers
        has_body = "content-length" in headers or "transfer-encoding" in headers
        target = pool.origin.base_path + encode_path(
            segments, trailing_slash=raw.endswith(("/", "\\"))
        )
        query = request.scope.get("query_string", b"")
        if query:
            target += "?" + query.decode("latin-1")
        try:
            upstream = await pool.request(
                request.method,
                target,
                _request_headers(request, grant, address),
                body() if has_body else None,
                chunked="content-length" not in headers,
            )
        except UpstreamTimeout:
            PROXY_LATENCY.observe(time.perf_counter() - started)
            self._count(runtime, grant, received, 0, "timeout")
            return _error(504, UPSTREAM_TIMEOUT)
        except UpstreamError:
            PROXY_LATENCY.observe(time.perf_counter() - started)
            self._count(runtime, grant, received, 0, "unreachable")
            return _error(502, UPSTREAM_DOWN)
        # The latency the proxy and the upstream add, without the body's streaming time.
        PROXY_LATENCY.observe(time.perf_counter() - started)
        result = proxy_result(upstream.status)

        def done(sent: int) -> None:
            self._count(runtime, grant, received, sent, result)

        return UpstreamResponseBody(
            UpstreamStream(upstream, _response_headers(upstream, pool.origin), done)
        )

    @staticmethod
    def _count(
        runtime: ProxyRuntime,
        grant: ProxyGrant,
        received: int,
        sent: int,
        result: str,
    ) -> None:
        """Count one forwarded request for the session's usage and for the metrics."""
        _RESULTS[result].inc()
        _BYTES_IN.inc(received)
        _BYTES_OUT.inc(sent)
        runtime.meter.count(
            grant.session_id,
            requests=1,
            bytes_in=received,
            bytes_out=sent,
            at=runtime.core.clock.now(),
        )
