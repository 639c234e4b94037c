"""A real upstream and the real API, both served by uvicorn on loopback, driven over HTTP.

The upstream (`upstream_app`) is a small ASGI app that tells what it received: method, raw
path, query, headers, and the length and SHA-256 of the body it read chunk by chunk. It can also
stream a download of any size, set several cookies, redirect, answer any status, and stall.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import uvicorn
from litestar import Litestar
from pydantic import SecretStr
from sqlalchemy import Engine, select

from zenzefi_api.app import create_app
from zenzefi_api.context import api_context
from zenzefi_api.proxy import ProxyRuntime
from zenzefi_core.adapters.sqlalchemy.tables import outbox_events
from zenzefi_core.bootstrap import Core
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType, User
from zenzefi_core.ports import AccessCache
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.accounts import add_user
from zenzefi_core.services.tokens import PurchaseToken, TokenOrder
from zenzefi_core.services.wallet import post_entry
from zenzefi_core.settings import (
    DatabaseSettings,
    ProxySettings,
    RateLimitSettings,
    Settings,
    UpstreamSettings,
)

SECRET_KEY = "proxy-test-secret-" + "x" * 48
CHUNK = 64 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Seen:
    """What the upstream received, for the tests to inspect."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, record: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(record)

    def paths(self) -> list[str]:
        with self.lock:
            return [r["raw_path"] for r in self.requests]


async def _read_body(receive: Any) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body = message.get("body", b"")
        size += len(body)
        digest.update(body)
        if not message.get("more_body", False):
            break
    return size, digest.hexdigest()


def make_upstream(seen: Seen) -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        query = parse_qs(scope["query_string"].decode())
        size, sha = await _read_body(receive)
        headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        record = {
            "method": scope["method"],
            "path": path,
            "raw_path": scope.get("raw_path", b"").decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": headers,
            "body_size": size,
            "body_sha256": sha,
        }
        seen.add(record)
        if path == "/download":
            total = int(query["size"][0])
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/octet-stream"),
                        (b"content-length", str(total).encode()),
                    ],
                }
            )
            block = bytes(range(256)) * (CHUNK // 256)
            left = total
            while left > 0:
                part = block[: min(CHUNK, left)]
                left -= len(part)
                await send({"type": "http.response.body", "body": part, "more_body": left > 0})
            return
        if path == "/stall":
            # Never answers; returns once the proxy gives up and hangs up.
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        status = 200
        extra: list[tuple[bytes, bytes]] = []
        if path == "/cookies":
            extra = [(b"set-cookie", b"a=1; Path=/"), (b"set-cookie", b"b=2; HttpOnly")]
        if path.startswith("/redirect"):
            status = 302
            port = scope["server"][1]
            target = {
                "/redirect": f"http://127.0.0.1:{port}/certificates/filter?x=1",
                "/redirect-relative": "/certificates/details/7",
                "/redirect-away": "https://example.com/elsewhere",
            }[path]
            extra = [(b"location", target.encode())]
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
        extra.append((b"connection", b"keep-alive, x-secret-hop"))
        extra.append((b"x-secret-hop", b"1"))
        body = b"" if status in (204, 304) else json.dumps(record).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), *extra],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


class ServerThread:
    """One uvicorn server in a thread with its own event loop."""

    def __init__(self, app: Any, port: int) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            access_log=False,
            # The tests talk to it directly: no trusted front proxy sets the client address.
            proxy_headers=False,
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve())

    def start(self) -> None:
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                return
            if not self.thread.is_alive():
                raise RuntimeError("server thread died")
            threading.Event().wait(0.01)
        raise RuntimeError("server did not start")

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.loop.close()


@pytest.fixture
def upstream() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    server = ServerThread(make_upstream(seen), free_port())
    server.start()
    yield server.url, seen
    server.stop()


@dataclass
class ProxyEnv:
    """The running API with its core, the upstream's record, and helpers to make tokens."""

    url: str
    core: Core
    clock: FixedClock
    seen: Seen
    server: ServerThread
    client: httpx.Client
    app: Litestar
    users: int = 0

    @property
    def runtime(self) -> ProxyRuntime:
        runtime = api_context(self.app).proxy
        assert runtime is not None
        return runtime

    def flush(self) -> None:
        self.server.call(self.runtime.flush())

    def events(self, event_type: str) -> list[dict[str, Any]]:
        """The payloads of every event of this type recorded so far, oldest first, whether
        handed to the worker or not: an event nothing consumes (no webhook endpoint, no email)
        is stored already dispatched."""
        with self.core.database.engine.connect() as connection:
            rows = connection.execute(
                select(outbox_events.c.payload)
                .where(outbox_events.c.event_type == event_type)
                .order_by(outbox_events.c.created_at)
            ).all()
        return [row.payload for row in rows]

    def user(self, name: str | None = None) -> User:
        self.users += 1
        name = name or f"user{self.users}"
        with self.core.uow() as uow:
            user = add_user(
                uow,
                self.clock,
                fast_password_hasher(),
                email=f"{name}@example.com",
                username=name,
                password="correct horse",
            )
            post_entry(
                uow,
                self.clock,
                user_id=user.id,
                amount=Decimal("1000.00"),
                transaction_type=TransactionType.DEPOSIT,
                description="Opening deposit",
                reference_type="test",
                reference_id=str(user.id),
            )
            uow.commit()
        return user

    def token(self, user: User | None = None, *, scope: str = "full", hours: int = 24) -> str:
        owner = user or self.user()
        bought = PurchaseToken(self.core.uow, self.clock, self.core.policy)(
            TokenOrder(user_id=owner.id, duration_hours=hours, scope=scope)
        )
        assert bought.plaintext is not None
        return bought.plaintext

    def status(self, token: str) -> httpx.Response:
        return self.client.get("/api/v1/proxy/status", headers={"X-Access-Token": token})

    def forward(
        self,
        method: str,
        path: str,
        token: str,
        device: str = "device-aaaa-1",
        **kwargs: Any,
    ) -> httpx.Response:
        headers = {"X-Access-Token": token, "X-Device-ID": device, **kwargs.pop("headers", {})}
        return self.client.request(method, "/api/v1/proxy/" + path, headers=headers, **kwargs)


def proxy_settings(tmp_path: Path, engine: Engine, upstream_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "secret_key": SecretStr(SECRET_KEY),
        "database": DatabaseSettings(url=engine.url.render_as_string(hide_password=False)),
        "rate_limit": RateLimitSettings(login_attempts=10_000, register_attempts=10_000),
        "upstream": UpstreamSettings(url=upstream_url, read_timeout_seconds=2.0),
        # Flushed by the tests themselves (`ProxyEnv.flush`), so counts are never half-written.
        "usage_flush_seconds": 3600.0,
        "proxy": ProxySettings(),
    }
    values.update(overrides)
    return Settings(**values)


def start_proxy(
    tmp_path: Path,
    engine: Engine,
    served: tuple[str, Seen],
    *,
    access_cache: AccessCache | None = None,
    upstream_url: str | None = None,
    **overrides: Any,
) -> Iterator[ProxyEnv]:
    url, seen = served
    settings = proxy_settings(tmp_path, engine, upstream_url or url, **overrides)
    clock = FixedClock(datetime.now(UTC))
    core = Core.from_settings(
        settings, clock=clock, hasher=fast_password_hasher(), access_cache=access_cache
    )
    app = create_app(settings, core)
    server = ServerThread(app, free_port())
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield ProxyEnv(
            url=server.url,
            core=core,
            clock=clock,
            seen=seen,
            server=server,
            client=client,
            app=app,
        )
    server.stop()
    core.close()


@pytest.fixture
def proxy(tmp_path: Path, engine: Engine, upstream: tuple[str, Seen]) -> Iterator[ProxyEnv]:
    yield from start_proxy(tmp_path, engine, upstream)
