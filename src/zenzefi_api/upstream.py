"""The proxy's HTTP/1.1 client to the diagnostic server: a small keep-alive pool on asyncio
protocols with httptools (uvicorn's own parser) reading the answers.

Chosen over httpx and aiohttp by measurement (docs/performance.md): the proxy needs one host,
HTTP/1.1, keep-alive, streaming both ways, timeouts and a bounded pool, and a general client's
layers (httpx → httpcore → anyio → h11) cost several times what the proxy itself does. httpx
stays wherever it is not hot (the health probe, webhooks).

What it guarantees:
- At most `max_connections` connections; a request beyond that waits for a free one, and one
  waiting longer than the read timeout fails as a timeout (the proxy answers 504).
- Connecting longer than the connect timeout, a refused connection or a connection broken
  before the answer's headers: `UpstreamUnreachable` (502). No headers, or no next piece of the
  body, within the read timeout: `UpstreamTimeout` (504). A body cut short (the connection
  broken before its announced end) raises `UpstreamUnreachable` from the body iterator.
- A request without a body that fails on a reused connection before any answer came back (the
  server closed the idle connection just as it was picked) is sent once more on a new one.
  Connections idle for `KEEPALIVE_EXPIRY_SECONDS` are not reused: servers commonly close idle
  connections after 5 s, and a request sent into a closing connection is lost.
- Bodies are never held: the answer's body is read only as fast as the caller takes it (the
  socket stops being read beyond `HIGH_WATER` buffered bytes), and a request body is written
  piece by piece as the client sends it, waiting whenever the socket's buffer is full.
- A connection goes back to the pool only after an answer read to its end with keep-alive;
  anything else (an answer abandoned half way, a `HEAD`, a protocol error) closes it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

#: An idle connection older than this is closed rather than reused (below the usual 5 s
#: keep-alive timeout of servers, so the server is not the one closing it under a request).
KEEPALIVE_EXPIRY_SECONDS = 4.0
#: Body bytes buffered from the upstream before the socket stops being read.
HIGH_WATER = 256 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})


class UpstreamError(Exception):
    """The upstream could not be asked, or did not answer properly."""


class UpstreamUnreachable(UpstreamError):
    """Refused, unreachable, or the connection broke (502)."""


class UpstreamTimeout(UpstreamError):
    """No connection, header or body piece within the timeout (504)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the upstream is: scheme, host, port and the path prefix requests go under."""

    scheme: str
    host: str
    port: int
    base_path: str

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the upstream URL must be http:// or https:// with a host")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def host_header(self) -> bytes:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (host if self.port == default else f"{host}:{self.port}").encode("idna")


class UpstreamResponse:
    """The answer's status and headers; its body is read with `body()`, and `aclose()` must be
    called in every case (it returns the connection to the pool or closes it)."""

    __slots__ = ("_connection", "_pool", "headers", "status")

    def __init__(
        self,
        pool: UpstreamPool,
        connection: _Connection,
        status: int,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection
        self.status = status
        #: Every header as received, names lower-cased, in order.
        self.headers = headers

    async def body(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            return
        while True:
            chunk = await connection.next_chunk(self._pool.read_timeout)
            if chunk is None:
                return
            yield chunk

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.release(connection)


class _Connection(asyncio.Protocol):
    """One connection to the upstream and the answer being read on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.used = False
        self._error: UpstreamError | None = None
        # The answer in progress.
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._head: asyncio.Future[None] | None = None
        self._head_done = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._reading_paused = False
        self._body_waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._until_close = False
        self._skip_body = False
        self.keep_alive = False
        self.got_bytes = False
        # Writing.
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement `asyncio.Transport` without deriving from it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamUnreachable("the upstream switched protocols"))
        except httptools.HttpParserError:
            self._fail(UpstreamUnreachable("the upstream sent a malformed answer"))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._head_done and self._until_close and not self._complete:
            # An answer without a length ends with its connection.
            self._complete = True
            self._wake_body()
            return
        self._fail(UpstreamUnreachable("the upstream closed the connection"))
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(UpstreamUnreachable("connection lost"))

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self._headers = []
            return
        self._status = status
        self._head_done = True
        framed = status in _NO_BODY_STATUSES or any(
            name in (b"content-length", b"transfer-encoding") for name, _ in self._headers
        )
        self._until_close = not framed and not self._skip_body
        if self._head is not None and not self._head.done():
            self._head.set_result(None)
        if self._skip_body:
            # A HEAD answer: its Content-Length announces a body that never comes, which the
            # parser would wait for; the connection is not reused.
            self._complete = True
            self.keep_alive = False

    def on_body(self, body: bytes) -> None:
        if not self._head_done or self._complete:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake_body()

    def on_message_complete(self) -> None:
        if not self._head_done or self._complete:
            return
        self._complete = True
        self.keep_alive = self._parser.should_keep_alive()
        self._wake_body()

    # the pool's side
    def _fail(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        self._wake_body()

    def _wake_body(self) -> None:
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def reusable(self) -> bool:
        return (
            not self.closed
            and self._error is None
            and self._complete
            and self.keep_alive
            and not self._chunks
        )

    def begin(self, head_only: bool) -> None:
        self._status = 0
        self._headers = []
        self._head = self._loop.create_future()
        self._head_done = False
        self._chunks.clear()
        self._buffered = 0
        self._complete = False
        self._until_close = False
        self._skip_body = head_only
        self.keep_alive = False
        self.got_bytes = False

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise UpstreamUnreachable("the upstream closed the connection")
        self.transport.write(data)

    async def drain(self, timeout: float) -> None:
        if not self._writing_paused:
            return
        if self.closed:
            raise UpstreamUnreachable("connection lost")
        self._drain_waiter = self._loop.create_future()
        await _within(self._drain_waiter, timeout, self._loop)

    async def head(self, timeout: float) -> tuple[int, list[tuple[bytes, bytes]]]:
        assert self._head is not None
        if not self._head.done():
            await _within(self._head, timeout, self._loop)
        self._head.result()
        return self._status, self._headers

    async def next_chunk(self, timeout: float) -> bytes | None:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._reading_paused and self._buffered <= HIGH_WATER // 2 and self.transport:
                    self._reading_paused = False
                    self.transport.resume_reading()
                return chunk
            if self._complete:
                return None
            if self._error is not None:
                raise self._error
            self._body_waiter = self._loop.create_future()
            await _within(self._body_waiter, timeout, self._loop)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


async def _within(
    waiter: asyncio.Future[Any], timeout: float, loop: asyncio.AbstractEventLoop
) -> None:
    """Wait for `waiter`, failing it with `UpstreamTimeout` after `timeout` seconds (a timer
    handle: far cheaper than `asyncio.wait_for`, which makes a task per wait)."""

    def expire() -> None:
        if not waiter.done():
            waiter.set_exception(UpstreamTimeout("the upstream did not answer in time"))

    timer = loop.call_later(timeout, expire)
    try:
        await waiter
    finally:
        timer.cancel()


class UpstreamPool:
    """Keep-alive connections to one upstream, at most `max_connections` of them."""

    def __init__(
        self,
        origin: Origin,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.origin = origin
        self._ssl = ssl_context
        self._max = max_connections
        self._connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: collections.deque[_Connection] = collections.deque()
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()
        self._closed = False

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: AsyncIterator[bytes] | None = None,
        *,
        chunked: bool = False,
    ) -> UpstreamResponse:
        """Send one request (`target`: path and query, already encoded) and wait for the
        answer's headers. With `chunked`, the body is sent with chunked transfer coding (the
        client gave no length); otherwise `headers` must carry its Content-Length."""
        head = self._head(method, target, headers, chunked=chunked and body is not None)
        head_only = method == "HEAD"
        for attempt in (1, 2):
            connection = await self._acquire()
            reused = connection.used
            connection.used = True
            connection.begin(head_only)
            try:
                connection.write(head)
                if body is not None:
                    await self._send_body(connection, body, chunked=chunked)
                status, answer_headers = await connection.head(self.read_timeout)
            except UpstreamUnreachable:
                connection.close()
                self.release(connection)
                if attempt == 1 and reused and body is None and not connection.got_bytes:
                    continue
                raise
            except BaseException:
                connection.close()
                self.release(connection)
                raise
            return UpstreamResponse(self, connection, status, answer_headers)
        raise AssertionError("unreachable")  # pragma: no cover

    def _head(
        self, method: str, target: str, headers: list[tuple[str, str]], *, chunked: bool
    ) -> bytes:
        lines = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1")]
        lines.append(b"host: " + self.origin.host_header + b"\r\n")
        lines.extend(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers)
        if chunked:
            lines.append(b"transfer-encoding: chunked\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    async def _send_body(
        self, connection: _Connection, body: AsyncIterator[bytes], *, chunked: bool
    ) -> None:
        async for chunk in body:
            if not chunk:
                continue
            if chunked:
                connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                connection.write(chunk)
            await connection.drain(self.read_timeout)
        if chunked:
            connection.write(b"0\r\n\r\n")

    async def _acquire(self) -> _Connection:
        if self._closed:
            raise UpstreamUnreachable("the proxy is shutting down")
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < KEEPALIVE_EXPIRY_SECONDS:
                return connection
            connection.close()
            self._open -= 1
        if self._open >= self._max:
            handed = await self._wait_for_connection()
            if handed is not None:
                return handed
            # `_wake` counted a new connection for us: open it.
        else:
            self._open += 1
        try:
            return await self._connect()
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    async def _wait_for_connection(self) -> _Connection | None:
        """Queue for a connection: one handed back by `release`, or None when a slot came
        free (already counted) to open a new one in."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            await _within(waiter, self.read_timeout, loop)
        except BaseException:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Served just as the wait was given up: pass it on.
                handed = waiter.result()
                if handed is not None:
                    self.release(handed)
                else:
                    self._open -= 1
                    self._wake()
            raise
        return waiter.result()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        origin = self.origin
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop),
                    origin.host,
                    origin.port,
                    ssl=self._ssl,
                    server_hostname=origin.host if self._ssl is not None else None,
                )
        except TimeoutError:
            raise UpstreamUnreachable("could not connect to the upstream in time") from None
        except (OSError, ssl.SSLError) as error:
            raise UpstreamUnreachable(f"could not connect to the upstream: {error}") from None
        return connection

    def release(self, connection: _Connection) -> None:
        """Take a connection back after an answer: into the pool if it may carry another."""
        if not self._closed and connection.reusable:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(connection)
                    return
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
            return
        connection.close()
        self._open -= 1
        self._wake()

    def _wake(self) -> None:
        """A slot came free: let the longest waiter open a connection in it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._open += 1
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
            self._open -= 1


def ssl_context(verify_tls: bool, ca_file: Any) -> ssl.SSLContext:
    """The TLS settings for an https upstream: verified against the system's CAs by default, a
    PEM bundle of its own when given, or not verified at all (test setups only)."""
    if not verify_tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_file is not None:
        return ssl.create_default_context(cafile=str(ca_file))
    return ssl.create_default_context()
