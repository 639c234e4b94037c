"""The account read of every authenticated request, three ways, in one process on PostgreSQL:
which costs the API process the least CPU per read?

    python bench/reads.py [--seconds 3] [--concurrency 16]

1. sync SQLAlchemy in anyio's worker threads, a transaction around the read (as before);
2. the same, read-only (autocommit: the query alone, as `Core.reader` does it now);
3. SQLAlchemy's asyncio API on psycopg's async connection, autocommit, on the event loop.

Each runs `--concurrency` tasks reading one user row by id, back to back, for `--seconds`; it
prints reads per second and this process's CPU milliseconds per read (PostgreSQL's own work is
the same in all three). Uses a throwaway database on `--postgres`, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from purchase import throwaway_database
from support import database_url
from zenzefi_core.adapters.sqlalchemy import Database, SqlAlchemyUnitOfWork
from zenzefi_core.adapters.sqlalchemy.engine import normalize_url
from zenzefi_core.adapters.sqlalchemy.tables import users
from zenzefi_core.clock import SystemClock
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.accounts import add_user


def cpu() -> float:
    times = os.times()
    return times.user + times.system


async def measure(
    label: str, read: Callable[[], Awaitable[object]], concurrency: int, seconds: float
) -> None:
    done = 0
    stop_at = 0.0

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await read()
            done += 1

    stop_at = time.perf_counter() + seconds / 3  # warm-up
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    done, started, used = 0, time.perf_counter(), cpu()
    stop_at = started + seconds
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed, used = time.perf_counter() - started, cpu() - used
    print(f"| {label} | {done / elapsed:,.0f} | {used * 1000 / max(1, done):.3f} |", flush=True)


async def run(url: str, args: argparse.Namespace) -> None:
    database = Database(url)
    database.migrate()
    with database.unit_of_work() as uow:
        user = add_user(
            uow, SystemClock(), fast_password_hasher(), email="reader@bench.example",
            username="reader", password="bench password 1",  # noqa: S106 - throwaway
        )  # fmt: skip
        uow.commit()
    engine = database.engine
    anyio.to_thread.current_default_thread_limiter().total_tokens = 40

    def in_transaction() -> object:
        with SqlAlchemyUnitOfWork(engine) as uow:
            return uow.users.get(user.id)

    def read_only() -> object:
        with SqlAlchemyUnitOfWork(engine, read_only=True) as uow:
            return uow.users.get(user.id)

    async_url = normalize_url(url).replace("postgresql+psycopg", "postgresql+psycopg_async")
    async_engine = create_async_engine(
        async_url, pool_size=10, max_overflow=20, isolation_level="AUTOCOMMIT"
    )

    async def asyncio_read() -> object:
        async with async_engine.connect() as connection:
            return (await connection.execute(select(users).where(users.c.id == user.id))).first()

    print("| account read | reads/s | CPU ms per read (this process) |")
    print("|---|---|---|")
    await measure(
        "sync, thread, transaction",
        lambda: anyio.to_thread.run_sync(in_transaction),
        args.concurrency,
        args.seconds,
    )
    await measure(
        "sync, thread, read-only",
        lambda: anyio.to_thread.run_sync(read_only),
        args.concurrency,
        args.seconds,
    )
    await measure("asyncio API, read-only", asyncio_read, args.concurrency, args.seconds)
    await async_engine.dispose()
    database.dispose()
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\n(load average {load}; {os.cpu_count()} CPUs)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "ZENZEFI_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args(argv)
    with throwaway_database(args.postgres, keep=False) as dsn:
        asyncio.run(run(database_url(dsn), args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
