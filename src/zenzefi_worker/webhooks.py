"""The HTTP side of webhook delivery: one POST per attempt, with httpx.

The connection goes to one of the addresses the core checked, never to whatever the host
name resolves to a moment later: a name that answers with a public address at the check and a
loopback one at the connect (DNS rebinding) cannot lead the request inside. The host name
stays in the URL, so it is the `Host` header, the TLS server name (SNI) and the name the
certificate is verified against; only the step that turns it into a socket address is
replaced (`_CheckedAddresses`). Proxies from the environment are ignored for the same reason:
a proxy would resolve the name itself.

Redirects are not followed (a receiver could otherwise bounce us to an internal address),
the whole exchange must finish within the timeout, and at most `max_bytes` of the answer
are read, however much the receiver sends.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import httpcore
import httpx
import redis

from zenzefi_core.errors import WebhookSendFailed
from zenzefi_core.settings import WebhookSettings


@dataclass(frozen=True, slots=True)
class _Pin:
    addresses: tuple[str, ...]
    deadline: float


#: The checked addresses of the request this thread is sending. httpcore opens a connection in
#: the thread of the request that needs it, so the pin set around one `post` is the one its
#: connection uses.
_PINNED: ContextVar[_Pin | None] = ContextVar("zenzefi_webhook_addresses", default=None)


class _CheckedAddresses(httpcore.NetworkBackend):
    """Opens each connection to the current request's checked addresses, in order, instead of
    resolving the host name. With no checked address it refuses to connect at all.

    A kept-alive connection is reused only for the same scheme, host name and port, and it
    leads to an address that passed the check when it was opened.
    """

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        pin = _PINNED.get()
        if pin is None or not pin.addresses:
            raise httpcore.ConnectError(f"no checked address to connect to for {host}")
        failure: Exception | None = None
        for address in pin.addresses:
            left = pin.deadline - time.monotonic()
            if left <= 0:
                raise httpcore.ConnectTimeout("no connection within the timeout")
            wait = left if timeout is None else min(timeout, left)
            try:
                return self._backend.connect_tcp(address, port, wait, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        assert failure is not None  # at least one address was tried
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks are not sent over Unix sockets")

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


#: httpcore's errors, as the httpx errors a caller of httpx expects.
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


@contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except tuple(core for core, _ in _ERRORS) as error:
        mapped = next(outer for core, outer in _ERRORS if isinstance(error, core))
        raise mapped(str(error)) from error


class _Answer(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class _PinnedTransport(httpx.BaseTransport):
    """httpx's transport over an httpcore pool that connects through `_CheckedAddresses`."""

    def __init__(self, ssl_context: ssl.SSLContext, limits: httpx.Limits) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_CheckedAddresses(),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        outgoing = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            answer = self._pool.handle_request(outgoing)
        assert isinstance(answer.stream, Iterable)
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=_Answer(answer.stream),
            extensions=answer.extensions,
        )

    def close(self) -> None:
        self._pool.close()


class HttpxWebhookSender:
    """The core's `WebhookSender`; one connection pool for the process, used by every thread.

    `ssl_context` replaces the system's certificate authorities (tests use it to trust a
    receiver's self-signed certificate); the host name is verified either way.
    """

    def __init__(
        self, settings: WebhookSettings, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._timeout = settings.timeout_seconds
        self._max_bytes = settings.max_response_bytes
        self._client = httpx.Client(
            transport=_PinnedTransport(
                ssl_context or httpx.create_ssl_context(),
                httpx.Limits(max_connections=200, max_keepalive_connections=100),
            ),
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(self._timeout),
            headers={"user-agent": "Zenzefi-Webhooks/1"},
        )

    def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, addresses: Sequence[str]
    ) -> tuple[int, bytes]:
        # httpx's timeouts bound each wait; this bounds a receiver trickling its answer, and
        # the connection attempts to several addresses.
        deadline = time.monotonic() + self._timeout
        pinned = _PINNED.set(_Pin(tuple(addresses), deadline))
        try:
            with self._client.stream("POST", url, headers=dict(headers), content=body) as response:
                read = bytearray()
                for chunk in response.iter_bytes():
                    read += chunk
                    if len(read) >= self._max_bytes:
                        break
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("the answer took too long")
                return response.status_code, bytes(read[: self._max_bytes])
        except httpx.TimeoutException as error:
            raise WebhookSendFailed(f"no answer within {self._timeout:g} s") from error
        except httpx.HTTPError as error:
            raise WebhookSendFailed(f"{type(error).__name__}: {error}") from error
        finally:
            _PINNED.reset(pinned)

    def close(self) -> None:
        self._client.close()


class RedisSlotCache:
    """The core's `AccessCache` on the broker's Redis client, for the per-endpoint delivery
    slots: with Redis, every worker process counts against the same slots. (The API's own
    Redis cache lives in `zenzefi_api`, which the worker does not import.)"""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._client = client
        self._prefix = f"{namespace}:webhooks:"

    def get(self, key: str) -> str | None:
        value = self._client.get(self._prefix + key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def add(self, key: str, value: str, ttl_seconds: float) -> bool:
        ttl = max(1, int(ttl_seconds * 1000))
        return bool(self._client.set(self._prefix + key, value, px=ttl, nx=True))

    def set(self, key: str, value: str, ttl_seconds: float) -> None:
        self._client.set(self._prefix + key, value, px=max(1, int(ttl_seconds * 1000)))

    def delete(self, key: str) -> None:
        self._client.delete(self._prefix + key)
