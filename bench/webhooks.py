"""Webhook deliveries per second from `zenzefi worker` to a local receiver, and the p95 time
from a purchase's commit to its receipt, on PostgreSQL and Redis, in one run.

    python bench/webhooks.py [--deliveries 3000] [--processes 1,2] [--threads 8] [--rate 50]

What it does:

1. Creates a throwaway database on the PostgreSQL server (`--postgres`), migrates it, and uses
   its own Redis namespace; both are removed at the end.
2. Starts a minimal HTTP receiver (asyncio, one thread) on loopback that answers 200 at once and
   notes when each `webhook-id` arrived.
3. Throughput, for each entry of `--processes`: records `--deliveries` `token.purchased` events
   spread over `--endpoints` users, each with one endpoint (the per-endpoint concurrency limit
   would otherwise be what is measured), without handing them to the broker; starts
   `zenzefi worker --processes N --threads T`, lets it warm up, runs the `outbox-relay` job
   (which enqueues them all) and times until the receiver has every delivery.
4. Latency: with two worker processes running, buys 1-hour tokens through the core at `--rate`
   per second for `--seconds` (each purchase hands its event to Redis right after commit, as the
   API does) and reports percentiles of receipt time minus commit time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import psycopg
import redis
from psycopg import conninfo
from pydantic import SecretStr

from zenzefi_core.adapters.sqlalchemy import make_engine, upgrade
from zenzefi_core.bootstrap import Core
from zenzefi_core.clock import SystemClock
from zenzefi_core.domain import TransactionType
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.accounts import add_user
from zenzefi_core.services.events import record_event
from zenzefi_core.services.tokens import PurchaseToken, TokenOrder
from zenzefi_core.services.wallet import post_entry
from zenzefi_core.services.webhooks import CreateWebhook, WebhookPolicy
from zenzefi_core.settings import DatabaseSettings, RedisSettings, Settings
from zenzefi_core.webhooks import SecretCipher
from zenzefi_worker.app import WorkerApp
from zenzefi_worker.broker import build_broker

SECRET_KEY = "bench-webhooks-" + secrets.token_hex(24)
PASSWORD = "bench password 1"  # noqa: S105 - throwaway accounts in a throwaway database


class Receiver:
    """Answers every POST with 200 and notes the arrival time of each `webhook-id`."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                await reader.readexactly(int(headers.get("content-length", "0")))
                now = time.time()
                with self.lock:
                    self.arrived.setdefault(headers.get("webhook-id", ""), now)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def count(self) -> int:
        with self.lock:
            return len(self.arrived)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@contextmanager
def throwaway_database(admin_url: str) -> Iterator[str]:
    name = f"zenzefi_bench_webhooks_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo.conninfo_to_dict(admin_url)
    params["dbname"] = name
    url = "postgresql+psycopg://{user}@{host}:{port}/{dbname}".format(
        user=params.get("user", "postgres"),
        host=params.get("host", "127.0.0.1"),
        port=params.get("port", 5432),
        dbname=name,
    )
    try:
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def environment(settings: Settings, threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ZENZEFI_DATABASE_URL=settings.database_url,
        ZENZEFI_REDIS_URL=str(settings.redis.url),
        ZENZEFI_REDIS_NAMESPACE=settings.redis.namespace,
        ZENZEFI_SECRET_KEY=SECRET_KEY,
        ZENZEFI_WEBHOOK_ALLOW_PRIVATE="true",
        ZENZEFI_WORKER_THREADS=str(threads),
        ZENZEFI_DATA_DIR=str(settings.data_dir),
        # Not the default port 9191, which a worker already running here may hold.
        ZENZEFI_METRICS_WORKER_PORT="0",
    )
    return env


@contextmanager
def workers(settings: Settings, processes: int, threads: int) -> Iterator[None]:
    zenzefi = str(Path(sys.executable).parent / "zenzefi")
    command = [zenzefi, "worker", "--processes", str(processes)]
    command += ["--threads", str(threads), "--queues", "events", "webhooks"]
    process = subprocess.Popen(  # noqa: S603 - our own command line
        command,
        env=environment(settings, threads),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(3.0)  # the processes import and connect
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def make_users(core: Core, count: int, url: str, start: int) -> list[UUID]:
    clock = SystemClock()
    cipher = SecretCipher(SECRET_KEY)
    create = CreateWebhook(
        core.uow, clock, cipher, _NoResolver(), WebhookPolicy.from_settings(core.settings)
    )
    ids = []
    for n in range(start, start + count):
        with core.uow() as uow:
            user = add_user(
                uow,
                clock,
                core.hasher,
                email=f"bench{n}@example.com",
                username=f"bench{n}",
                password=PASSWORD,
            )
            post_entry(
                uow,
                clock,
                user_id=user.id,
                amount=Decimal("100000.00"),
                transaction_type=TransactionType.DEPOSIT,
                description="bench",
                reference_type="bench",
                reference_id=str(user.id),
            )
            uow.commit()
        create(user.id, url, ["token.purchased"])
        ids.append(user.id)
    return ids


class _NoResolver:
    def resolve(self, host: str) -> list[str]:
        return []


def throughput(core: Core, receiver: Receiver, args: argparse.Namespace, processes: int) -> float:
    users = make_users(core, args.endpoints, receiver.url, start=processes * 10_000)
    before = receiver.count()
    with core.uow() as uow:
        for n in range(args.deliveries):
            record_event(
                uow, core.clock, "token.purchased", {"n": n}, user_id=users[n % len(users)]
            )
        uow.commit()
    with workers(core.settings, processes, args.threads):
        app = WorkerApp(core, build_broker(core.settings))
        started = time.perf_counter()
        while True:
            app.run_job("outbox-relay")
            with core.uow() as uow:
                if not uow.outbox.pending(limit=1):
                    break
        while receiver.count() - before < args.deliveries:
            if time.perf_counter() - started > args.timeout:
                raise SystemExit(f"only {receiver.count() - before} deliveries arrived")
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        app.close()
    core.publisher = None
    return float(args.deliveries) / elapsed


def latency(core: Core, receiver: Receiver, args: argparse.Namespace) -> list[float]:
    [buyer] = make_users(core, 1, receiver.url, start=99_000)
    committed: dict[UUID, float] = {}
    with workers(core.settings, 2, args.threads):
        app = WorkerApp(core, build_broker(core.settings))  # hands events over after commit
        buy = PurchaseToken(core.uow, core.clock, core.policy)
        interval = 1.0 / args.rate
        next_at = time.perf_counter()
        for _ in range(int(args.rate * args.seconds)):
            bought = buy(TokenOrder(user_id=buyer, duration_hours=1))
            committed[bought.token.id] = time.time()
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
        deadline = time.perf_counter() + args.timeout
        ids = _delivery_ids(core, buyer, committed)
        while any(i not in receiver.arrived for i in ids.values()):
            if time.perf_counter() > deadline:
                raise SystemExit("not every purchase arrived")
            time.sleep(0.05)
            ids = _delivery_ids(core, buyer, committed)
        app.close()
    core.publisher = None
    return [receiver.arrived[ids[token]] - at for token, at in committed.items()]


def _delivery_ids(core: Core, buyer: UUID, committed: dict[UUID, float]) -> dict[UUID, str]:
    """Token id -> webhook-id, read from the deliveries' bodies."""
    found: dict[UUID, str] = {}
    with core.uow() as uow:
        for endpoint in uow.webhooks.active_endpoints(buyer):
            for delivery in uow.webhooks.deliveries_for_endpoint(endpoint.id, limit=100_000):
                token = json.loads(delivery.body)["data"].get("token_id")
                if token is not None and UUID(token) in committed:
                    found[UUID(token)] = str(delivery.id)
    return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--endpoints", type=int, default=50)
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    namespace = f"zenzefi-bench-{secrets.token_hex(4)}"
    receiver = Receiver()
    with throwaway_database(args.postgres) as database_url:
        engine = make_engine(database_url)
        upgrade(engine)
        engine.dispose()
        settings = Settings(
            data_dir=Path(tempfile.mkdtemp(prefix=namespace)),
            secret_key=SecretStr(SECRET_KEY),
            webhook_allow_private=True,
            database=DatabaseSettings(url=database_url),
            redis=RedisSettings(url=args.redis, namespace=namespace),
        )
        core = Core.from_settings(settings, hasher=fast_password_hasher())
        try:
            for processes in (int(p) for p in args.processes.split(",")):
                rate = throughput(core, receiver, args, processes)
                print(
                    f"{processes} worker process(es) x {args.threads} threads: "
                    f"{args.deliveries} deliveries, {rate:.0f} deliveries/s"
                )
            waits = latency(core, receiver, args)
            print(
                f"commit -> receipt at {args.rate:g} purchases/s over {args.seconds:g} s "
                f"({len(waits)} purchases): p50 {statistics.median(waits) * 1000:.0f} ms, "
                f"p95 {percentile(waits, 0.95) * 1000:.0f} ms, "
                f"max {max(waits) * 1000:.0f} ms"
            )
        finally:
            core.close()
            client = redis.Redis.from_url(args.redis)
            keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
