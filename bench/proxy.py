"""Requests per second and latency through the access proxy, beside the upstream alone and a bare
route of the same server, in one run with one load generator.

    python bench/proxy.py [--seconds 5] [--connections 16,64] [--servers 1,2]

What it does:

1. Makes a throwaway SQLite database in a temporary folder, migrates it, and buys one 720-hour
   `full` token for a funded user through the core's use cases.
2. Starts the upstream: a minimal asyncio HTTP/1.1 server (keep-alive, no framework) in its own
   process, serving `/1k` and `/100k` from memory (nginx and wrk are not installed here).
3. For each entry of `--servers`, starts that many API processes (`create_app` under uvicorn, as
   `zenzefi serve` does, with the per-token rate limit raised out of the way), each with an extra
   bare Litestar route `GET /bare/1k` returning the same 1 KB from memory.
4. Measures, for each of `--connections` concurrent keep-alive connections (spread evenly over
   the servers): (a) direct to the upstream, (b) through the proxy with a valid activated token
   (1 KB and 100 KB), (c) the bare route. Closed loop: each connection sends its next request as
   soon as the previous answer is in, for `--seconds` after a `--warmup`.
5. Then the latency test at half the rate: the proxy's best 1 KB rate at the smaller connection
   count and one server, halved, sent open-loop (on a fixed schedule, latency counted from the
   scheduled moment) to the upstream directly and through the proxy.

The load generator is asyncio (uvloop when installed) in this process: it shares the two cores
with the servers, so every figure is a lower bound of what the servers could do alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from support import free_port, wait_for_port

ONE_KB = b"z" * 1024
HUNDRED_KB = b"z" * (100 * 1024)
DEVICE = "bench-device-0001"
TABLE_HEAD = (
    "| target | API processes | connections | requests/s | p50 ms | p99 ms | max ms | errors |\n"
    "|---|---|---|---|---|---|---|---|"
)


# --- the upstream: a minimal keep-alive HTTP/1.1 server ------------------------------------------


def _response(body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _serve_upstream(port: int) -> None:
    answers = {b"/1k": _response(ONE_KB), b"/100k": _response(HUNDRED_KB)}
    missing = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, _, rest = head.partition(b"\r\n")
                length = 0
                for line in rest.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                path = request_line.split(b" ")[1].split(b"?")[0]
                writer.write(answers.get(path, missing))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


# --- an API process -------------------------------------------------------------------------------


def _serve_api(port: int) -> None:
    import uvicorn
    from litestar import MediaType, get

    from zenzefi_api.app import create_app
    from zenzefi_core.settings import Settings

    @get("/bare/1k", media_type=MediaType.TEXT, sync_to_thread=False, include_in_schema=False)
    def bare() -> bytes:
        return ONE_KB

    app = create_app(Settings())
    app.register(bare)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- setup ----------------------------------------------------------------------------------------


def make_token(env: dict[str, str]) -> str:
    """Migrate the database and buy a token, in this process, through the core."""
    from zenzefi_core.bootstrap import Core
    from zenzefi_core.domain import TransactionType
    from zenzefi_core.security import fast_password_hasher
    from zenzefi_core.services.accounts import add_user
    from zenzefi_core.services.tokens import PurchaseToken, TokenOrder
    from zenzefi_core.services.wallet import post_entry
    from zenzefi_core.settings import DatabaseSettings, Settings

    settings = Settings(
        data_dir=Path(env["ZENZEFI_DATA_DIR"]),
        database=DatabaseSettings(url=env["ZENZEFI_DATABASE_URL"]),
    )
    core = Core.from_settings(settings, hasher=fast_password_hasher())
    try:
        core.migrate()
        with core.uow() as uow:
            user = add_user(
                uow,
                core.clock,
                core.hasher,
                email="bench@example.com",
                username="bench",
                password="bench password",  # noqa: S106 - a throwaway account
            )
            post_entry(
                uow,
                core.clock,
                user_id=user.id,
                amount=Decimal("1000.00"),
                transaction_type=TransactionType.DEPOSIT,
                description="Benchmark deposit",
                reference_type="bench",
                reference_id=str(user.id),
            )
            uow.commit()
        bought = PurchaseToken(core.uow, core.clock, core.policy)(
            TokenOrder(user_id=user.id, duration_hours=720)
        )
        assert bought.plaintext is not None
        return bought.plaintext
    finally:
        core.close()


@contextlib.contextmanager
def processes(commands: list[tuple[list[str], dict[str, str], int]]) -> Iterator[None]:
    started = []
    try:
        for command, env, port in commands:
            started.append(subprocess.Popen(command, env=env))  # noqa: S603 - our own script
            wait_for_port(port)
        yield
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


# --- the load generator ---------------------------------------------------------------------------


@dataclass
class Result:
    label: str
    connections: int
    servers: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, share: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000

    def row(self) -> str:
        return (
            f"| {self.label} | {self.servers} | {self.connections} | {self.rate:,.0f} | "
            f"{self.percentile(0.5):.1f} | {self.percentile(0.99):.1f} | "
            f"{max(self.latencies, default=0) * 1000:.0f} | {self.errors} |"
        )


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


def _request(path: str, port: int, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def closed_loop(
    ports: list[int], path: str, headers: dict[str, str], connections: int, seconds: float
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def connection(port: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = _request(path, port, headers)
        try:
            while (start := time.perf_counter()) < stop_at:
                writer.write(request)
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    errors += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection(ports[i % len(ports)]) for i in range(connections)))
    return latencies, errors


async def open_loop(
    port: int, path: str, headers: dict[str, str], connections: int, rate: float, seconds: float
) -> tuple[list[float], int]:
    """Each connection sends on a fixed schedule; a late answer delays the next send, and that
    delay counts in the next request's latency (no coordinated omission)."""
    latencies: list[float] = []
    errors = 0
    interval = connections / rate
    begin = time.perf_counter() + 0.05

    async def connection(index: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = _request(path, port, headers)
        due = begin + index * interval / connections
        try:
            while due < begin + seconds:
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(request)
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - due)
                if status != 200:
                    errors += 1
                due += interval
        except (ConnectionError, asyncio.IncompleteReadError):
            errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection(i) for i in range(connections)))
    return latencies, errors


async def measure(
    label: str,
    ports: list[int],
    path: str,
    headers: dict[str, str],
    connections: int,
    servers: int,
    args: argparse.Namespace,
) -> Result:
    await closed_loop(ports, path, headers, connections, args.warmup)
    latencies, errors = await closed_loop(ports, path, headers, connections, args.seconds)
    result = Result(label, connections, servers, args.seconds, latencies, errors)
    print(result.row(), flush=True)
    return result


async def run(args: argparse.Namespace, token: str, env: dict[str, str], upstream: int) -> None:
    proxy_headers = {"x-access-token": token, "x-device-id": DEVICE}
    print(TABLE_HEAD)
    results: dict[tuple[str, int, int], Result] = {}
    for connections in args.connections:
        for label, path in (
            ("(a) upstream direct, 1 KB", "/1k"),
            ("(a) upstream direct, 100 KB", "/100k"),
        ):
            results[(label, 0, connections)] = await measure(
                label, [upstream], path, {}, connections, 0, args
            )
    for servers in args.servers:
        ports = [free_port() for _ in range(servers)]
        command = [sys.executable, __file__, "api", "--port"]
        with processes(
            [([*command, str(port)], {**env, "BENCH_PORT": str(port)}, port) for port in ports]
        ):
            for port in ports:
                # The first proxied request activates the token and binds the device.
                await closed_loop([port], "/api/v1/proxy/1k", proxy_headers, 1, 0.2)
            for connections in args.connections:
                for label, path, headers in (
                    ("(b) proxy, 1 KB", "/api/v1/proxy/1k", proxy_headers),
                    ("(b) proxy, 100 KB", "/api/v1/proxy/100k", proxy_headers),
                    ("(c) bare Litestar route, 1 KB", "/bare/1k", {}),
                ):
                    results[(label, servers, connections)] = await measure(
                        label, ports, path, headers, connections, servers, args
                    )
            if servers == args.servers[0]:
                connections = args.connections[0]
                best = results[("(b) proxy, 1 KB", servers, connections)].rate
                half = best / 2
                print()
                print(
                    f"Open loop at half the proxy's best 1 KB rate ({half:,.0f} requests/s, "
                    f"{connections} connections, {servers} API process):"
                )
                print()
                print("| target | p50 ms | p99 ms | max ms | errors |")
                print("|---|---|---|---|---|")
                p99 = {}
                for label, port, path, headers in (
                    ("(a) upstream direct, 1 KB", upstream, "/1k", {}),
                    ("(b) proxy, 1 KB", ports[0], "/api/v1/proxy/1k", proxy_headers),
                ):
                    latencies, errors = await open_loop(
                        port, path, headers, connections, half, args.seconds
                    )
                    result = Result(label, connections, servers, args.seconds, latencies, errors)
                    p99[label] = result.percentile(0.99)
                    print(
                        f"| {label} | {result.percentile(0.5):.1f} | {p99[label]:.1f} | "
                        f"{max(latencies, default=0) * 1000:.0f} | {errors} |",
                        flush=True,
                    )
                added = p99["(b) proxy, 1 KB"] - p99["(a) upstream direct, 1 KB"]
                print(f"\nThe proxy adds {added:.1f} ms to p99 at half its best rate.\n")
                print(TABLE_HEAD)
    print()
    for servers in args.servers:
        for connections in args.connections:
            proxied = results[("(b) proxy, 1 KB", servers, connections)].rate
            bare = results[("(c) bare Litestar route, 1 KB", servers, connections)].rate
            print(
                f"{servers} API process(es), {connections} connections: proxy 1 KB reaches "
                f"{proxied / bare:.0%} of the bare route"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "upstream", "api"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--servers", default="1,2")
    args = parser.parse_args()
    if args.role == "upstream":
        asyncio.run(_serve_upstream(args.port))
        return 0
    if args.role == "api":
        _serve_api(args.port)
        return 0
    args.connections = [int(n) for n in args.connections.split(",")]
    args.servers = [int(n) for n in args.servers.split(",")]
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    with tempfile.TemporaryDirectory(prefix="zenzefi-bench-") as folder:
        upstream = free_port()
        env = {
            **os.environ,
            "ZENZEFI_DATA_DIR": folder,
            "ZENZEFI_DATABASE_URL": f"sqlite:///{folder}/zenzefi.db",
            "ZENZEFI_SECRET_KEY": secrets.token_urlsafe(48),
            "ZENZEFI_UPSTREAM_URL": f"http://127.0.0.1:{upstream}",
            "ZENZEFI_PROXY_RATE_LIMIT_PER_MINUTE": str(10**9),
        }
        env.pop("ZENZEFI_REDIS_URL", None)
        token = make_token(env)
        upstream_command = [sys.executable, __file__, "upstream", "--port", str(upstream)]
        with processes([(upstream_command, env, upstream)]):
            asyncio.run(run(args, token, env, upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
