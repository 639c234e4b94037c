"""The proxy's upstream client against raw servers that misbehave on purpose: keep-alive reuse,
the pool's bound and queue, a connection closed under a request, answers without a length,
interim answers, HEAD, and bodies cut short."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from zenzefi_api.upstream import (
    Origin,
    UpstreamPool,
    UpstreamTimeout,
    UpstreamUnreachable,
    ssl_context,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%b\r\n%b" % (len(body), extra, body)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request: its head and its body (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    body = b""
    length = next((int(line[15:]) for line in lines if line.startswith(b"content-length:")), 0)
    if length:
        body = await reader.readexactly(length)
    elif b"transfer-encoding: chunked" in lines:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            body += (await reader.readexactly(size + 2))[:size]
            if size == 0:
                break
    return head, body


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.handler(reader, writer, self.connections)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    def pool(self, **overrides: Any) -> UpstreamPool:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        settings: dict[str, Any] = {
            "ssl_context": None,
            "max_connections": 4,
            "connect_timeout": 2.0,
            "read_timeout": 2.0,
        }
        settings.update(overrides)
        return UpstreamPool(Origin.parse(f"http://127.0.0.1:{port}/base"), **settings)


class RecordingServer(Server):
    async def recorded(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        request = await read_request(reader)
        self.requests.append(request)
        return request


async def fetch(pool: UpstreamPool, method: str = "GET", **kwargs: Any) -> tuple[int, bytes]:
    response = await pool.request(method, "/base/x", [("accept", "*/*")], **kwargs)
    try:
        return response.status, b"".join([chunk async for chunk in response.body()])
    finally:
        await response.aclose()


def test_connections_are_kept_alive_and_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            await server.recorded(reader)
            writer.write(ok(b"hello"))

    async def main() -> None:
        async with server:
            pool = server.pool()
            assert [await fetch(pool) for _ in range(5)] == [(200, b"hello")] * 5
            await pool.aclose()
        assert server.connections == 1
        head = server.requests[0][0]
        assert head.startswith(b"GET /base/x HTTP/1.1\r\nhost: 127.0.0.1:")
        assert b"\r\naccept: */*\r\n" in head

    server = RecordingServer(handler)
    asyncio.run(main())


def test_the_pool_never_opens_more_than_its_bound_and_queues_the_rest() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            await read_request(reader)
            await asyncio.sleep(0.05)
            writer.write(ok(b"slow"))

    async def main() -> None:
        async with server:
            pool = server.pool(max_connections=2)
            results = await asyncio.gather(*(fetch(pool) for _ in range(8)))
            await pool.aclose()
        assert results == [(200, b"slow")] * 8
        assert server.most_open == 2
        assert server.connections == 2

    server = Server(handler)
    asyncio.run(main())


def test_a_request_waiting_too_long_for_a_connection_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async def main() -> None:
        async with server:
            pool = server.pool(max_connections=1, read_timeout=0.3)
            outcomes = await asyncio.gather(fetch(pool), fetch(pool), return_exceptions=True)
            assert all(isinstance(outcome, UpstreamTimeout) for outcome in outcomes), outcomes
            # Both slots came back: the pool still works.
            assert pool._open == 0
            await pool.aclose()

    server = Server(handler)
    asyncio.run(main())


def test_a_bodiless_request_on_a_connection_closed_under_it_is_sent_again() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        # Answers one request, then hangs up on the next without a word (as a server whose
        # keep-alive timeout just ran out).
        await read_request(reader)
        writer.write(ok(b"first"))
        await read_request(reader)

    async def main() -> None:
        async with server:
            pool = server.pool()
            assert await fetch(pool) == (200, b"first")
            assert await fetch(pool) == (200, b"first")
            assert server.connections == 2
            # A request with a body cannot be sent again: it is a 502.
            with pytest.raises(UpstreamUnreachable):
                await fetch(pool, "POST", body=_body(b"data"), chunked=True)
            await pool.aclose()

    server = Server(handler)
    asyncio.run(main())


async def _body(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def test_request_bodies_go_with_their_length_or_chunked() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            _head, body = await server.recorded(reader)
            writer.write(ok(body))

    async def main() -> None:
        async with server:
            pool = server.pool()
            chunked = await pool.request(
                "PUT", "/base/up", [], _body(b"ab", b"", b"cd" * 50_000), chunked=True
            )
            assert b"".join([c async for c in chunked.body()]) == b"ab" + b"cd" * 50_000
            await chunked.aclose()
            sized = await pool.request(
                "POST", "/base/up", [("content-length", "6")], _body(b"abc", b"def")
            )
            assert b"".join([c async for c in sized.body()]) == b"abcdef"
            await sized.aclose()
            await pool.aclose()
        assert b"transfer-encoding: chunked" in server.requests[0][0]
        assert b"transfer-encoding" not in server.requests[1][0]

    server = RecordingServer(handler)
    asyncio.run(main())


def test_answers_without_a_length_interim_answers_and_head() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        head, _ = await read_request(reader)
        if head.startswith(b"HEAD"):
            # A Content-Length with no body, as HEAD answers have.
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
            await reader.read()
        elif n == 1:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
        else:
            writer.write(
                b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final", b"x-a: 1\r\nconnection: close\r\n")
            )
            await reader.read()

    async def main() -> None:
        async with server:
            pool = server.pool()
            assert await fetch(pool) == (200, b"until the end")
            response = await pool.request("GET", "/base/x", [])
            assert response.status == 200
            assert (b"x-a", b"1") in response.headers
            assert b"".join([c async for c in response.body()]) == b"final"
            await response.aclose()
            head = await asyncio.wait_for(fetch(pool, "HEAD"), 1.0)
            assert head == (200, b"")
            await pool.aclose()

    server = Server(handler)
    asyncio.run(main())


def test_a_body_cut_short_is_an_error_not_a_short_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"z" * 1000)
        await writer.drain()

    async def main() -> None:
        async with server:
            pool = server.pool()
            response = await pool.request("GET", "/base/x", [])
            received: list[bytes] = []

            async def read_all() -> None:
                async for chunk in response.body():
                    received.append(chunk)

            with pytest.raises(UpstreamUnreachable):
                await read_all()
            assert b"".join(received) == b"z" * 1000
            await response.aclose()
            assert pool._open == 0
            await pool.aclose()

    server = Server(handler)
    asyncio.run(main())


def test_nothing_listening_is_unreachable() -> None:
    async def main() -> None:
        server = Server(read_request)  # type: ignore[arg-type]
        async with server:
            pool = server.pool()
        # The server has stopped listening.
        with pytest.raises(UpstreamUnreachable):
            await fetch(pool)
        assert pool._open == 0

    asyncio.run(main())


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by itself, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "upstream.test")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "upstream.pem", folder / "upstream.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_an_https_upstream_is_verified_unless_told_otherwise(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert_file, key_file)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await read_request(reader)
                writer.write(ok(b"secret"))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_tls)
        port = server.sockets[0].getsockname()[1]
        origin = Origin.parse(f"https://127.0.0.1:{port}")
        pools: list[UpstreamPool] = []

        def pool(verify: bool, ca_file: Path | None) -> UpstreamPool:
            pools.append(
                UpstreamPool(
                    origin,
                    ssl_context=ssl_context(verify, ca_file),
                    max_connections=2,
                    connect_timeout=2.0,
                    read_timeout=2.0,
                )
            )
            return pools[-1]

        try:
            # The system's CAs do not know this certificate: refused, never read.
            with pytest.raises(UpstreamUnreachable):
                await fetch(pool(True, None))
            assert await fetch(pool(True, cert_file)) == (200, b"secret")
            assert await fetch(pool(False, None)) == (200, b"secret")
        finally:
            for each in pools:
                await each.aclose()
            server.close()
            await asyncio.sleep(0.1)

    asyncio.run(main())
