"""Token purchases per second through the HTTP API, beside a bare SQL transaction doing the same
writes, on PostgreSQL, in one run.

    python bench/purchase.py [--seconds 15] [--clients 16] [--servers 1,2] [--redis URL]

What it does:

1. Creates a throwaway database on the PostgreSQL server (`--postgres`, default
   `postgresql://postgres@127.0.0.1:5432/postgres`), migrates it with `zenzefi migrate` and makes
   an operator with `zenzefi admin create`; the database is dropped at the end.
2. For each entry of `--servers`, starts that many `zenzefi serve` processes on loopback ports,
   registers `--clients` users through the API (first round only), credits each of them
   1,000,000.00 ZNC through the operator route, then runs `--clients` concurrent keep-alive
   connections, each buying 1-hour tokens (`POST /api/v1/tokens/purchase`) back to back for
   `--seconds` after a `--warmup`. Connections are spread evenly over the servers. By default
   each server is the embedded default (it also runs the worker and the scheduler); with
   `--redis` they enqueue their events to Redis, as in production, and no worker runs.
3. Runs `--clients` threads, each with its own connection, doing what a purchase must write and
   nothing else: `UPDATE users SET balance = balance - 1.00 WHERE id = ... AND balance >= 1.00
   RETURNING balance`, `INSERT` of the ledger entry, `INSERT` of the token, `COMMIT`.
4. Prints purchases per second, latency percentiles and the CPU seconds each party used, the
   API's and worker's CPU per purchase, then the ratio API / bare SQL, and checks the ledger
   (`zenzefi check-ledger`).

With `--redis` and `--workers N`, `zenzefi worker --processes N` consumes the events during the
API's measurement, and its CPU (the Dramatiq parent and its worker processes) is counted as
the worker's. With `--profile DIR`, every `zenzefi serve` (and worker) runs under `py-spy
record` and leaves its samples in DIR as collapsed stacks, one file per process; the profiler
costs CPU of its own, so take the figures from a run without it.

The load generator is a minimal HTTP/1.1 client on asyncio (one thread), so it costs the machine
as little as possible: it shares the CPU with the servers and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
from psycopg import conninfo

from support import CpuMeter, database_url, free_port, login, postgres_pids, redis_namespace

PRICE = Decimal("1.00")
DURATION_HOURS = 1
CREDIT = "1000000.00"
PASSWORD = "bench password 1"  # noqa: S105 - throwaway accounts in a throwaway database
PURCHASE_PATH = "/api/v1/tokens/purchase"


# --- the throwaway database and the servers --------------------------------------------------


@contextlib.contextmanager
def throwaway_database(server_url: str, keep: bool) -> Iterator[str]:
    """A new, empty database on the server; dropped on the way out unless `keep`."""
    name = f"zenzefi_bench_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo.conninfo_to_dict(server_url)
    params["dbname"] = name
    try:
        yield conninfo.make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})
    finally:
        if not keep:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def zenzefi(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(  # noqa: S603 - our own command line, with our own arguments
        [sys.executable, "-m", "zenzefi_api.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"zenzefi {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def children(pid: int) -> list[int]:
    """Every descendant of a process (Linux /proc)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += [int(child), *children(int(child))]
    return found


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    #: True when `process` is py-spy, which runs the server as its child.
    profiled: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The processes whose CPU is the server's (never the profiler's)."""
        if self.profiled:
            return children(self.process.pid)
        return [self.process.pid, *children(self.process.pid)]

    def stop(self) -> None:
        """SIGTERM to the server itself; py-spy writes its profile once its child exits."""
        if not self.profiled:
            self.process.terminate()
            return
        for pid in children(self.process.pid)[:1]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def launch(
    name: str, args: list[str], env: dict[str, str], log_dir: Path, profile: Path | None
) -> tuple[subprocess.Popen[bytes], bool]:
    """Start `zenzefi ARGS`, under `py-spy record` when `profile` names a folder."""
    command = [sys.executable, "-m", "zenzefi_api.cli", *args]
    if profile is not None:
        py_spy = Path(sys.executable).with_name("py-spy")
        output = profile / f"{name}.txt"
        command = [str(py_spy), "record", "--subprocesses", "-f", "raw", "-o", str(output), "--"]
        command += [sys.executable, "-m", "zenzefi_api.cli", *args]
    log = (log_dir / f"{name}.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log)  # noqa: S603
    log.close()
    return process, profile is not None


def stop_all(started: Sequence[Server]) -> None:
    for server in started:
        server.stop()
    for server in started:
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@contextlib.contextmanager
def servers(
    count: int, env: dict[str, str], log_dir: Path, profile: Path | None = None
) -> Iterator[list[Server]]:
    """`count` `zenzefi serve` processes, each on its own loopback port, until the block ends."""
    started: list[Server] = []
    try:
        for _ in range(count):
            port = free_port()
            args = ["serve", "--port", str(port)]
            process, profiled = launch(f"serve-{port}", args, env, log_dir, profile)
            started.append(Server(port, process, profiled))
        for server in started:
            wait_until_healthy(server)
        yield started
    finally:
        stop_all(started)


@contextlib.contextmanager
def workers(
    processes: int, env: dict[str, str], log_dir: Path, profile: Path | None = None
) -> Iterator[Server | None]:
    """`zenzefi worker --processes N` (port 0: it serves nothing) until the block ends; None
    when `processes` is 0."""
    if not processes:
        yield None
        return
    args = ["worker", "--processes", str(processes)]
    process, profiled = launch("worker", args, env, log_dir, profile)
    worker = Server(0, process, profiled)
    try:
        # Its processes fork and import the app first; give them the time before measuring.
        time.sleep(5)
        if process.poll() is not None:
            raise SystemExit("zenzefi worker exited; see its log")
        yield worker
    finally:
        stop_all([worker])


def wait_until_healthy(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"zenzefi serve on port {server.port} exited; see its log")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"zenzefi serve on port {server.port} did not become healthy")


# --- accounts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Buyer:
    id: uuid.UUID
    token: str


def make_buyers(base_url: str, count: int, admin_email: str) -> list[Buyer]:
    """Register `count` users through the API and credit each through the operator route."""
    buyers = []
    with httpx.Client(base_url=base_url, timeout=30) as http:
        admin = {"Authorization": f"Bearer {login(http, admin_email, PASSWORD)}"}
        for number in range(count):
            email = f"buyer{number}@bench.example"
            registered = http.post(
                "/api/v1/auth/register",
                json={"email": email, "username": f"buyer{number}", "password": PASSWORD},
            )
            registered.raise_for_status()
            user_id = uuid.UUID(registered.json()["id"])
            credited = http.post(
                f"/api/v1/admin/users/{user_id}/credit",
                json={"amount": CREDIT, "reason": "Benchmark funds"},
                headers=admin,
            )
            credited.raise_for_status()
            buyers.append(Buyer(user_id, login(http, email, PASSWORD)))
    return buyers


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Tally:
    """What one run counted inside its measuring window."""

    done: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(
        self, started: float, finished: float, ok: bool, window: tuple[float, float]
    ) -> None:
        if not window[0] <= finished < window[1]:
            return
        with self.lock:
            if ok:
                self.done += 1
                self.latencies.append(finished - started)
            else:
                self.failed += 1


@dataclass(frozen=True)
class Result:
    label: str
    rate: float
    failed: int
    p50_ms: float
    p99_ms: float
    cpu: dict[str, float]


def summarize(label: str, tally: Tally, seconds: float, cpu: dict[str, float]) -> Result:
    latencies = sorted(tally.latencies) or [0.0]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return Result(
        label=label,
        rate=tally.done / seconds,
        failed=tally.failed,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=p99 * 1000,
        cpu=cpu,
    )


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
        elif name.strip().lower() == "transfer-encoding":
            raise RuntimeError("chunked responses are not expected here")
    await reader.readexactly(length)
    return status


async def _purchase_loop(
    server: Server, buyer: Buyer, tally: Tally, window: tuple[float, float]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    body = json.dumps({"duration_hours": DURATION_HOURS}).encode()
    request = (
        f"POST {PURCHASE_PATH} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {buyer.token}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    try:
        while time.perf_counter() < window[1]:
            started = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            tally.record(started, time.perf_counter(), status == 201, window)
    finally:
        writer.close()
        await writer.wait_closed()


def measure_api(
    running: list[Server],
    buyers: list[Buyer],
    database: str,
    warmup: float,
    seconds: float,
    worker: Server | None = None,
) -> Result:
    tally = Tally()
    groups: dict[str, Callable[[], Sequence[int]]] = {
        "api": lambda: [pid for server in running for pid in server.pids()],
        "postgres": lambda: postgres_pids(database),
    }
    if worker is not None:
        groups["worker"] = worker.pids
    meter = CpuMeter(groups)
    client_cpu = 0.0

    async def start_meter() -> None:
        nonlocal client_cpu
        await asyncio.sleep(warmup)
        meter.start()
        client_cpu = own_cpu_seconds()

    async def run() -> None:
        now = time.perf_counter()
        window = (now + warmup, now + warmup + seconds)
        loops = [
            _purchase_loop(running[number % len(running)], buyer, tally, window)
            for number, buyer in enumerate(buyers)
        ]
        await asyncio.gather(start_meter(), *loops)

    asyncio.run(run())
    cpu = meter.stop()
    cpu["load generator"] = own_cpu_seconds() - client_cpu
    plural = "es" if len(running) > 1 else ""
    return summarize(f"HTTP API, {len(running)} server process{plural}", tally, seconds, cpu)


@dataclass
class Start:
    """Lets the SQL threads connect first, then start together on one measuring window."""

    connected: threading.Barrier
    #: Passed when every thread has stopped buying; connections stay open until `release`, so
    #: that the CPU their PostgreSQL backends used can still be read.
    finished: threading.Barrier
    go: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    window: tuple[float, float] = (0.0, 0.0)


def _sql_buyer(dsn: str, buyer: Buyer, tally: Tally, start: Start) -> None:
    with psycopg.connect(dsn) as connection:
        start.connected.wait()
        start.go.wait()
        window = start.window
        while time.perf_counter() < window[1]:
            started = time.perf_counter()
            token_id, now = uuid.uuid4(), datetime.now(UTC)
            secret = secrets.token_urlsafe(48)
            with connection.transaction():
                row = connection.execute(
                    "UPDATE users SET balance = balance - %(price)s "
                    "WHERE id = %(user)s AND balance >= %(price)s RETURNING balance",
                    {"price": PRICE, "user": buyer.id},
                ).fetchone()
                if row is None:
                    raise RuntimeError("the bench ran a wallet dry")
                connection.execute(
                    "INSERT INTO transactions (id, user_id, amount, balance_after, "
                    "transaction_type, description, reference_type, reference_id, created_at) "
                    "VALUES (%s, %s, %s, %s, 'purchase', %s, 'token', %s, %s)",
                    (
                        uuid.uuid4(),
                        buyer.id,
                        -PRICE,
                        row[0],
                        "Access token: 1 h, full",
                        str(token_id),
                        now,
                    ),
                )
                connection.execute(
                    "INSERT INTO access_tokens (id, user_id, token_hash, token_prefix, "
                    "duration_hours, scope, price_paid, created_at) "
                    "VALUES (%s, %s, encode(sha256(%s::bytea), 'hex'), %s, %s, 'full', %s, %s)",
                    (token_id, buyer.id, secret.encode(), secret[:8], DURATION_HOURS, PRICE, now),
                )
            tally.record(started, time.perf_counter(), True, window)
        start.finished.wait()
        start.release.wait()


def measure_sql(dsn: str, buyers: list[Buyer], warmup: float, seconds: float) -> Result:
    tally = Tally()
    database = conninfo.conninfo_to_dict(dsn)["dbname"]
    meter = CpuMeter({"postgres": lambda: postgres_pids(str(database))})
    start = Start(
        connected=threading.Barrier(len(buyers) + 1), finished=threading.Barrier(len(buyers) + 1)
    )
    threads = [
        threading.Thread(target=_sql_buyer, args=(dsn, buyer, tally, start), daemon=True)
        for buyer in buyers
    ]
    for thread in threads:
        thread.start()
    start.connected.wait()
    now = time.perf_counter()
    start.window = (now + warmup, now + warmup + seconds)
    start.go.set()
    time.sleep(warmup)
    meter.start()
    client_cpu = own_cpu_seconds()
    start.finished.wait()
    cpu = meter.stop()
    cpu["load generator"] = own_cpu_seconds() - client_cpu
    start.release.set()
    for thread in threads:
        thread.join()
    return summarize(f"bare SQL, {len(buyers)} threads", tally, seconds, cpu)


# --- the run ---------------------------------------------------------------------------------


def report(results: list[Result], seconds: float) -> None:
    print()
    print(
        f"{'':34} {'purchases/s':>11} {'p50 ms':>7} {'p99 ms':>7} {'failed':>6}  CPU seconds used"
    )
    for result in results:
        cpu = ", ".join(f"{name} {used:.1f}" for name, used in result.cpu.items())
        if result.rate and "api" in result.cpu:
            purchases = result.rate * seconds
            per_purchase = result.cpu["api"] / purchases * 1000
            cpu += f" (API: {per_purchase:.2f} ms per purchase"
            if "worker" in result.cpu:
                worker = result.cpu["worker"] / purchases * 1000
                cpu += f", worker: {worker:.2f} ms, together {per_purchase + worker:.2f} ms"
            cpu += ")"
        print(
            f"{result.label:34} {result.rate:11.0f} {result.p50_ms:7.1f} {result.p99_ms:7.1f} "
            f"{result.failed:6d}  {cpu}"
        )
    sql = next(r for r in results if r.label.startswith("bare SQL"))
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\n(each run measured for {seconds:g} s; {os.cpu_count()} CPUs; load average {load})")
    for result in results:
        if result is not sql and sql.rate:
            print(f"ratio {result.label} / bare SQL: {result.rate / sql.rate:.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured time first")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument(
        "--servers", default="1,2", help="API process counts to try, comma-separated"
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "ZENZEFI_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server to make the throwaway database on",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="serve as in production, enqueueing events to this Redis (no worker runs during "
        "the measurement; the bench's keys are deleted at the end). Default: the embedded "
        "default, where each zenzefi serve also runs the worker and the scheduler",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="with --redis: run `zenzefi worker --processes N` during the API measurement and "
        "count its CPU (default 0: no worker; on the embedded default each server is its own)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run each server and worker under `py-spy record`, leaving collapsed stacks in DIR",
    )
    parser.add_argument("--keep-database", action="store_true", help="do not drop it at the end")
    args = parser.parse_args(argv)
    if args.workers and not args.redis:
        parser.error("--workers needs --redis: the embedded default runs its worker in-process")
    if args.profile is not None:
        if not Path(sys.executable).with_name("py-spy").exists():
            parser.error("--profile needs py-spy beside this Python: pip install py-spy")
        args.profile.mkdir(parents=True, exist_ok=True)
    counts = [int(part) for part in args.servers.split(",") if part.strip()]

    namespace = f"zenzefi-bench-{os.getpid()}-{secrets.token_hex(4)}"
    with (
        throwaway_database(args.postgres, args.keep_database) as dsn,
        tempfile.TemporaryDirectory(prefix="zenzefi-bench-") as scratch,
        redis_namespace(args.redis, namespace),
    ):
        env = {
            **os.environ,
            "ZENZEFI_DATABASE_URL": database_url(dsn),
            "ZENZEFI_DATA_DIR": scratch,
            "ZENZEFI_SECRET_KEY": secrets.token_urlsafe(48),
            # Registering the buyers from one address would hit the limit at once.
            "ZENZEFI_RATE_LIMIT_ENABLED": "false",
        }
        if args.redis:
            env.update({"ZENZEFI_REDIS_URL": args.redis, "ZENZEFI_REDIS_NAMESPACE": namespace})
            consuming = (
                f"`zenzefi worker --processes {args.workers}` consuming"
                if args.workers
                else "no worker consuming"
            )
            print(f"events go to Redis at {args.redis} under {namespace}:, {consuming}")
        else:
            print("embedded default: each zenzefi serve also runs the worker and the scheduler")
        print(f"database: {database_url(dsn)}")
        zenzefi("migrate", env=env)
        admin_email = "admin@bench.example"
        zenzefi(
            "admin", "create", "--email", admin_email, "--username", "admin",
            "--password", PASSWORD, env=env,
        )  # fmt: skip
        buyers: list[Buyer] = []
        results = []
        for count in counts:
            with servers(count, env, Path(scratch), args.profile) as running:
                if not buyers:
                    buyers = make_buyers(running[0].url, args.clients, admin_email)
                print(f"measuring the HTTP API on {count} process(es)...", flush=True)
                database = str(conninfo.conninfo_to_dict(dsn)["dbname"])
                with workers(args.workers, env, Path(scratch), args.profile) as worker:
                    results.append(
                        measure_api(running, buyers, database, args.warmup, args.seconds, worker)
                    )
        if not buyers:
            with servers(1, env, Path(scratch)) as running:
                buyers = make_buyers(running[0].url, args.clients, admin_email)
        print("measuring bare SQL...", flush=True)
        results.append(measure_sql(dsn, buyers, args.warmup, args.seconds))
        report(results, args.seconds)
        print(zenzefi("check-ledger", env=env).strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
