"""Every hot path in one run, each beside the reference it is judged against, measured with wrk.

    python bench/suite.py [--quick] [--seconds 5] [--engines postgres,sqlite] [--servers 1,2]
                          [--profile DIR]

What it does:

1. Makes sure wrk and nginx are installed (`apt-get install -y wrk nginx-light`, run for you
   when you are root, retried while another dpkg holds the lock; otherwise it tells you).
2. Starts nginx (one worker process) twice over: as the upstream diagnostic server, serving
   `/1k` and `/100k` from files, and as a reverse proxy in front of that upstream (the 100 KB
   reference). Starts a bare Litestar app (one route answering 1 KB from memory, under uvicorn
   with the options `zenzefi serve` uses): the reference for the other paths.
3. For each engine: `postgres` (a throwaway database on `--postgres`, Redis at `--redis` under a
   namespace of its own, and one `zenzefi worker` process) and `sqlite` (the embedded default:
   a SQLite file, the in-process broker and worker). For each of `--servers`, runs
   `zenzefi serve --workers N` and measures, with wrk, closed loop, after a warm-up:
   the proxy (1 KB at 1, 16 and 64 connections, 100 KB at 8), `/proxy/status` (warm: the
   token's cache entry is there), the authenticated balance read, and token purchases over 64
   users (wrk rotates their bearer tokens). With one process it also measures `/proxy/status`
   cold (a server whose cache entries expire at once), the bare route and nginx, and the same
   purchases as bare SQL from Python (what a purchase must write and nothing else; one
   thread on SQLite, which has one writer, 64 on PostgreSQL).
4. Prints each figure with its p50/p99/max latency, errors, and CPU milliseconds per request of
   the API processes, the worker and PostgreSQL (from /proc); then the ratios against the
   issue's targets, the machine's load, and `zenzefi check-ledger` after the purchases.

`--profile DIR` also samples the single API process with py-spy during each measurement (the
thread holding the GIL, so where its Python CPU time goes) and prints the shares by package
(`DIR` keeps the raw stacks, flame-graph ready).

wrk and the servers share the machine's cores, so every figure is a lower bound; the ratios,
measured side by side, are what to compare between runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from purchase import (
    PASSWORD,
    Buyer,
    make_buyers,
    measure_sql,
    throwaway_database,
    zenzefi,
)
from support import CpuMeter, database_url, free_port, postgres_pids, redis_namespace, wait_for_port

HERE = Path(__file__).resolve().parent
ONE_KB = b"z" * 1024
DEVICE = "bench-device-0001"
PURCHASE_BODY = '{"duration_hours": 1}'
APT_COMMAND = ["apt-get", "install", "-y", "wrk", "nginx-light"]


# --- pure helpers: wrk's summary, the ratio table, profiles ----------------------------------


#: Lua appended to every wrk script: one JSON line with the run's totals and latencies (µs).
WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK-SUMMARY {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, '
    .. '"read": %d, "write": %d, "status": %d, "timeout": %d, '
    .. '"p50_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    #: Answers other than 2xx/3xx, plus connect, read, write and timeout errors.
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        """Requests per second, failed ones left out."""
        return max(0, self.requests - self.errors) / self.seconds if self.seconds else 0.0


def parse_wrk(output: str) -> WrkResult:
    """The `WRK-SUMMARY` line that `WRK_DONE` makes wrk print at the end of a run."""
    for line in reversed(output.splitlines()):
        if line.startswith("WRK-SUMMARY "):
            data = json.loads(line.removeprefix("WRK-SUMMARY "))
            errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
            return WrkResult(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                errors=int(errors),
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                max_ms=data["max_us"] / 1000,
            )
    raise ValueError(f"no WRK-SUMMARY line in wrk's output:\n{output}")


def wrk_script(
    method: str, path: str, headers: dict[str, str], body: str = "", rotate: Sequence[str] = ()
) -> str:
    """A wrk script for one request; with `rotate`, each request takes the next of these
    Authorization headers in turn."""
    lines = [f"wrk.method = {json.dumps(method)}", f"wrk.path = {json.dumps(path)}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    if body:
        lines.append(f"wrk.body = {json.dumps(body)}")
    if rotate:
        values = ", ".join(json.dumps(value) for value in rotate)
        lines += [
            f"local rotate = {{{values}}}",
            "local counter = 0",
            "request = function()",
            "  counter = counter + 1",
            '  wrk.headers["Authorization"] = rotate[(counter % #rotate) + 1]',
            "  return wrk.format()",
            "end",
        ]
    return "\n".join(lines) + "\n" + WRK_DONE


@dataclass(frozen=True)
class Target:
    """`figure` divided by `reference` must reach `at_least` (both are figure names)."""

    label: str
    figure: str
    reference: str
    at_least: float


def ratio_rows(rates: dict[str, float], targets: Sequence[Target]) -> list[str]:
    """A markdown table: each target's ratio and whether it is met; targets whose figures were
    not measured in this run are left out."""
    rows = ["| target | figure / reference | ratio | needed | met |", "|---|---|---|---|---|"]
    for target in targets:
        figure, reference = rates.get(target.figure), rates.get(target.reference)
        if figure is None or not reference:
            continue
        ratio = figure / reference
        met = "yes" if ratio >= target.at_least else "**no**"
        rows.append(
            f"| {target.label} | {figure:,.0f} / {reference:,.0f} | {ratio:.1%} | "
            f"{target.at_least:.0%} | {met} |"
        )
    return rows


def frame_package(frame: str) -> str:
    """Which package a py-spy frame `function (package/module.py:line)` belongs to (py-spy
    writes paths relative to `sys.path`); a top-level module stands for itself."""
    start = frame.rfind(" (")
    path = frame[start + 2 :].rstrip(")").rsplit(":", 1)[0] if start >= 0 else frame
    for marker in ("site-packages/", "/src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    head = path.lstrip("/<").split("/", 1)[0]
    return head.removesuffix(".py").removesuffix(">")


def _samples(collapsed: str) -> Iterator[tuple[list[str], int]]:
    """(packages of the frames, outermost first; sample count) per line of py-spy's raw
    output (`frame;frame;...;frame count`)."""
    for line in collapsed.splitlines():
        stack, _, number = line.rpartition(" ")
        if stack and number.isdigit():
            yield [frame_package(frame) for frame in stack.split(";")], int(number)


def profile_shares(collapsed: str) -> dict[str, float]:
    """Share of samples by the package of the innermost frame (where the CPU was)."""
    counts: Counter[str] = Counter()
    for packages, number in _samples(collapsed):
        counts[packages[-1]] += number
    total = sum(counts.values())
    return {name: count / total for name, count in counts.most_common()} if total else {}


def profile_layers(collapsed: str, ignore_above: float = 0.9) -> dict[str, float]:
    """Share of samples with the package anywhere on the stack (time spent in it or in what
    it called), leaving out the packages on nearly every stack (the event loop, the server)."""
    counts: Counter[str] = Counter()
    total = 0
    for packages, number in _samples(collapsed):
        total += number
        for package in set(packages):
            counts[package] += number
    if not total:
        return {}
    return {
        name: count / total for name, count in counts.most_common() if count / total <= ignore_above
    }


# --- tools: wrk, nginx, py-spy ---------------------------------------------------------------


def find_tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )


def ensure_tools() -> tuple[str, str]:
    """wrk and nginx, installed with apt-get first if missing (and we are root)."""
    if find_tool("wrk") and find_tool("nginx"):
        return str(find_tool("wrk")), str(find_tool("nginx"))
    if os.geteuid() != 0:
        raise SystemExit(f"wrk and nginx are needed: run `sudo {' '.join(APT_COMMAND)}`")
    print(f"installing wrk and nginx: {' '.join(APT_COMMAND)}", flush=True)
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for _ in range(60):
        done = subprocess.run(  # noqa: S603 - a fixed command line
            APT_COMMAND, env=environment, capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            break
        if "lock" not in done.stderr:
            raise SystemExit(f"{' '.join(APT_COMMAND)} failed:\n{done.stderr}")
        time.sleep(5)  # another dpkg is at work; its lock goes when it is done
    wrk, nginx = find_tool("wrk"), find_tool("nginx")
    if not (wrk and nginx):
        raise SystemExit(f"wrk or nginx still missing; run `{' '.join(APT_COMMAND)}`")
    return wrk, nginx


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    upstream files {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{upstream} backlog=4096;
        root {prefix}/www;
        default_type application/octet-stream;
    }}
    server {{
        listen 127.0.0.1:{reverse} backlog=4096;
        location / {{
            proxy_pass http://files;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


@dataclass
class Processes:
    """Processes the run started, stopped (SIGTERM, then SIGKILL) in reverse order at the end."""

    logs: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - our own command lines
                command, env=env, stdout=log, stderr=log
            )
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process in self.started:
            self.started.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.started)):
            self.stop(process)


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children.get(current, []))
    return found


# --- the bare route -----------------------------------------------------------------------


def serve_bare(port: int) -> None:
    import uvicorn
    from litestar import Litestar, MediaType, get

    @get("/bare/1k", media_type=MediaType.TEXT, sync_to_thread=False)
    def bare() -> bytes:
        return ONE_KB

    uvicorn.run(
        Litestar([bare], logging_config=None),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
    )


# --- one engine: setup, servers, measurements -----------------------------------------------


@dataclass
class Figure:
    name: str
    result: WrkResult
    cpu_ms: dict[str, float]
    #: Innermost-frame and on-the-stack shares of the API process's samples, by package.
    profile: dict[str, float] = field(default_factory=dict)
    layers: dict[str, float] = field(default_factory=dict)

    def row(self) -> str:
        r = self.result
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in self.cpu_ms.items())
        return (
            f"| {self.name} | {r.rate:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
            f"{r.max_ms:,.0f} | {r.errors} | {cpu} |"
        )


FIGURE_HEAD = (
    "| figure | requests/s | p50 ms | p99 ms | max ms | errors | CPU ms per request |\n"
    "|---|---|---|---|---|---|---|"
)


@dataclass
class Run:
    args: argparse.Namespace
    wrk: str
    scratch: Path
    processes: Processes
    figures: dict[str, Figure] = field(default_factory=dict)

    def measure(
        self,
        name: str,
        port: int,
        script: str,
        connections: int,
        cpu_groups: dict[str, Callable[[], Sequence[int]]],
        profile_pid: int | None = None,
    ) -> Figure:
        path = self.scratch / f"wrk-{len(self.figures)}.lua"
        path.write_text(script)
        base = [self.wrk, "-t1", f"-c{connections}", "--timeout", "10s", "-s", str(path)]
        url = f"http://127.0.0.1:{port}"
        if self.args.warmup:
            subprocess.run(  # noqa: S603 - wrk with our own arguments
                [*base, f"-d{self.args.warmup}s", url], capture_output=True, check=False
            )
        meter = CpuMeter(cpu_groups)
        sampler = self._profile(name, profile_pid)
        meter.start()
        done = subprocess.run(  # noqa: S603 - wrk with our own arguments
            [*base, f"-d{self.args.seconds}s", url], capture_output=True, text=True, check=False
        )
        used = meter.stop()
        result = parse_wrk(done.stdout)
        served = max(1, result.requests)
        figure = Figure(name, result, {k: v * 1000 / served for k, v in used.items()})
        if sampler is not None:
            sampler.wait()
            raw = self.args.profile / f"{slug(name)}.txt"
            if raw.exists():
                figure.profile = profile_shares(raw.read_text())
                figure.layers = profile_layers(raw.read_text())
        self.figures[name] = figure
        print(figure.row(), flush=True)
        return figure

    def _profile(self, name: str, pid: int | None) -> subprocess.Popen[bytes] | None:
        if self.args.profile is None or pid is None:
            return None
        spy = Path(sys.executable).parent / "py-spy"
        return subprocess.Popen(  # noqa: S603 - py-spy with our own arguments
            [str(spy), "record", "--pid", str(pid), "--duration", str(int(self.args.seconds)),
             "--rate", "250", "--format", "raw", "--nonblocking", "--gil",
             "--output", str(self.args.profile / f"{slug(name)}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


@dataclass
class Engine:
    name: str
    env: dict[str, str]
    #: The PostgreSQL database, for its backends' CPU; None on SQLite.
    database: str | None
    dsn: str | None
    sqlite_path: Path | None


def wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a server on port {port} exited; see the logs under the scratch dir")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return
        time.sleep(0.3)
    raise SystemExit(f"the server on port {port} did not become healthy")


def serve(
    run: Run, engine: Engine, workers: int, extra: dict[str, str] | None = None
) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    command = [sys.executable, "-m", "zenzefi_api.cli", "serve", "--port", str(port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    process = run.processes.start(
        f"{engine.name}-serve-{workers}-{port}", command, {**engine.env, **(extra or {})}
    )
    wait_healthy(port, process)
    if workers > 1:
        # Health answers as soon as one process serves; give the others their startup too.
        deadline = time.monotonic() + 120
        while len(descendants(process.pid)) <= workers and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)
    return port, process


def proxy_token(port: int, buyer: Buyer) -> str:
    """A 720-hour token bought by `buyer`, activated on the bench's device."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        bought = http.post(
            "/api/v1/tokens/purchase",
            json={"duration_hours": 720},
            headers={"Authorization": f"Bearer {buyer.token}"},
        )
        bought.raise_for_status()
        token = str(bought.json()["token"])
        first = http.get(
            "/api/v1/proxy/1k", headers={"X-Access-Token": token, "X-Device-ID": DEVICE}
        )
        if first.status_code != 200:
            raise SystemExit(f"the first proxied request failed: {first.status_code} {first.text}")
    return token


def sqlite_purchases(path: Path, buyers: list[Buyer], seconds: float) -> float:
    """What a purchase writes, as bare SQL on SQLite from one thread (one writer at a time is
    all SQLite allows), round robin over the buyers; purchases per second."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    connection.execute("PRAGMA busy_timeout = 30000")
    done, number = 0, 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    try:
        while time.perf_counter() < deadline:
            buyer = buyers[number % len(buyers)]
            number += 1
            # SQLite keeps UTC moments without their zone (see the adapter's UtcDateTime).
            token_id = uuid.uuid4()
            now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
            secret = secrets.token_urlsafe(48)
            connection.execute("BEGIN IMMEDIATE")
            (balance,) = connection.execute(
                "UPDATE users SET balance = round(balance - 1.00, 2) "
                "WHERE id = ? AND balance >= 1.00 RETURNING balance",
                (buyer.id.hex,),
            ).fetchone()
            connection.execute(
                "INSERT INTO transactions (id, user_id, amount, balance_after, transaction_type, "
                "description, reference_type, reference_id, created_at) "
                "VALUES (?, ?, -1.00, ?, 'purchase', 'Access token: 1 h, full', 'token', ?, ?)",
                (uuid.uuid4().hex, buyer.id.hex, balance, str(token_id), now),
            )
            connection.execute(
                "INSERT INTO access_tokens (id, user_id, token_hash, token_prefix, "
                "duration_hours, scope, price_paid, created_at) "
                "VALUES (?, ?, ?, ?, 1, 'full', 1.00, ?)",
                (token_id.hex, buyer.id.hex, sha256_hex(secret), secret[:8], now),
            )
            connection.execute("COMMIT")
            done += 1
    finally:
        connection.close()
    return done / (time.perf_counter() - started)


def sha256_hex(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def measure_engine(run: Run, engine: Engine, bare: tuple[int, int], nginx_port: int) -> None:
    """Every figure of one engine, with 1 and 2 (`--servers`) API processes."""
    bare_port, bare_pid = bare
    args = run.args
    e = engine.name
    zenzefi("migrate", env=engine.env)
    zenzefi(
        "admin", "create", "--email", "admin@bench.example", "--username", "admin",
        "--password", PASSWORD, env=engine.env,
    )  # fmt: skip
    worker_pids: list[int] = []
    worker = None
    if engine.database is not None:
        worker = run.processes.start(
            f"{e}-worker",
            [sys.executable, "-m", "zenzefi_api.cli", "worker", "--processes", "1"],
            engine.env,
        )
        worker_pids = [worker.pid]
    buyers: list[Buyer] = []
    token = ""
    for workers in args.servers:
        port, server = serve(run, engine, workers)
        if not buyers:
            print(f"[{e}] registering and funding {args.users} users...", flush=True)
            buyers = make_buyers(f"http://127.0.0.1:{port}", args.users, "admin@bench.example")
            token = proxy_token(port, buyers[0])
        groups: dict[str, Callable[[], Sequence[int]]] = {
            "api": lambda pid=server.pid: descendants(pid)  # type: ignore[misc]
        }
        if worker_pids:
            groups["worker"] = lambda: [p for w in worker_pids for p in descendants(w)]
        if engine.database is not None:
            groups["postgres"] = lambda: postgres_pids(str(engine.database))
        profile_pid = server.pid if workers == 1 else None
        proxy_headers = {"X-Access-Token": token, "X-Device-ID": DEVICE}
        bearer = {"Authorization": f"Bearer {buyers[0].token}"}
        n = f"{e}, {workers} proc"
        print(f"\n[{e}] zenzefi serve --workers {workers}; load average {load()}\n")
        print(FIGURE_HEAD, flush=True)
        if workers == 1:
            run.measure(
                f"{e}: bare Litestar route 1 KB, 16 conn",
                bare_port,
                wrk_script("GET", "/bare/1k", {}),
                16,
                {"bare": lambda: [bare_pid]},
            )
            run.measure(
                f"{e}: nginx reverse proxy 100 KB, 8 conn",
                nginx_port,
                wrk_script("GET", "/100k", {}),
                8,
                {},
            )
        proxied = {
            "proxy 1 KB, 1 conn": ("/api/v1/proxy/1k", 1),
            "proxy 1 KB, 16 conn": ("/api/v1/proxy/1k", 16),
            "proxy 1 KB, 64 conn": ("/api/v1/proxy/1k", 64),
            "proxy 100 KB, 8 conn": ("/api/v1/proxy/100k", 8),
            "proxy status warm, 16 conn": ("/api/v1/proxy/status", 16),
        }
        for label, (path, connections) in proxied.items():
            run.measure(
                f"{n}: {label}",
                port,
                wrk_script("GET", path, proxy_headers),
                connections,
                groups,
                profile_pid,
            )
        run.measure(
            f"{n}: balance read, 16 conn",
            port,
            wrk_script("GET", "/api/v1/currency/balance", bearer),
            16,
            groups,
            profile_pid,
        )
        run.measure(
            f"{n}: token purchase, 64 users",
            port,
            wrk_script(
                "POST",
                "/api/v1/tokens/purchase",
                {"Content-Type": "application/json"},
                PURCHASE_BODY,
                rotate=[f"Bearer {b.token}" for b in buyers],
            ),
            64,
            groups,
            profile_pid,
        )
        run.processes.stop(server)
        if workers == 1:
            cold_port, cold = serve(run, engine, 1, {"ZENZEFI_PROXY_CACHE_SECONDS": "0.001"})
            run.measure(
                f"{n}: proxy status cold, 16 conn",
                cold_port,
                wrk_script("GET", "/api/v1/proxy/status", proxy_headers),
                16,
                {"api": lambda pid=cold.pid: descendants(pid)},  # type: ignore[misc]
                cold.pid,
            )
            run.processes.stop(cold)
    # The worker catches up on the purchases' events before the ledger is read.
    time.sleep(2)
    if worker is not None:
        run.processes.stop(worker)
    seconds = args.seconds
    if engine.dsn is not None:
        sql = measure_sql(engine.dsn, buyers, args.warmup, seconds)
        sql_rate = sql.rate
        cpu = f"postgres {sql.cpu.get('postgres', 0) * 1000 / max(1, sql.rate * seconds):.2f}"
    else:
        assert engine.sqlite_path is not None
        sql_rate = sqlite_purchases(engine.sqlite_path, buyers, seconds)
        cpu = "in this process"
    run.figures[f"{e}: bare SQL purchases"] = Figure(
        f"{e}: bare SQL purchases", WrkResult(int(sql_rate * seconds), seconds, 0, 0, 0, 0), {}
    )
    print(f"\n[{e}] bare SQL purchases from Python: {sql_rate:,.0f}/s (CPU ms: {cpu})")
    ledger = subprocess.run(
        [sys.executable, "-m", "zenzefi_api.cli", "check-ledger"],
        env=engine.env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    print(f"[{e}] ledger after the purchases: {ledger.stdout.strip()}", flush=True)
    if ledger.returncode != 0:
        run.figures[f"{e}: LEDGER DAMAGED"] = run.figures[f"{e}: bare SQL purchases"]


def load() -> str:
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


def targets(engine: str, processes: int) -> list[Target]:
    n = f"{engine}, {processes} proc"
    return [
        Target(f"{n}: proxy 1 KB / bare route", f"{n}: proxy 1 KB, 16 conn",
               f"{engine}: bare Litestar route 1 KB, 16 conn", 0.25),
        Target(f"{n}: proxy 100 KB / nginx", f"{n}: proxy 100 KB, 8 conn",
               f"{engine}: nginx reverse proxy 100 KB, 8 conn", 0.15),
        Target(f"{n}: status warm / bare", f"{n}: proxy status warm, 16 conn",
               f"{engine}: bare Litestar route 1 KB, 16 conn", 0.30),
        Target(f"{n}: status cold / bare", f"{n}: proxy status cold, 16 conn",
               f"{engine}: bare Litestar route 1 KB, 16 conn", 0.30),
        Target(f"{n}: balance read / bare", f"{n}: balance read, 16 conn",
               f"{engine}: bare Litestar route 1 KB, 16 conn", 0.15),
        Target(f"{n}: purchases / bare SQL", f"{n}: token purchase, 64 users",
               f"{engine}: bare SQL purchases", 0.25),
    ]  # fmt: skip


def report(run: Run) -> int:
    args = run.args
    rates = {name: figure.result.rate for name, figure in run.figures.items()}
    print("\n## Ratios (same run, same machine)\n")
    rows = []
    for engine in args.engines:
        for processes in args.servers:
            rows += targets(engine, processes)
    print("\n".join(ratio_rows(rates, rows)))
    print("\n## Other targets\n")
    for name, figure in run.figures.items():
        if "token purchase" in name:
            per = sum(v for k, v in figure.cpu_ms.items() if k in ("api", "worker"))
            verdict = "met" if per < 2 else "**not met**"
            print(f"- {name}: API + worker CPU {per:.2f} ms per purchase (< 2 ms: {verdict})")
        if "proxy 1 KB, 64 conn" in name and ", 2 proc" in name:
            r = figure.result
            verdict = "met" if r.p99_ms < 250 and r.max_ms < 1000 else "**not met**"
            print(f"- {name}: p99 {r.p99_ms:.0f} ms, max {r.max_ms:.0f} ms "
                  f"(p99 < 250 ms, none over 1 s: {verdict})")  # fmt: skip
    if args.profile is not None:
        print("\n## Where the API process spends its time (py-spy samples)\n")
        for name, figure in run.figures.items():
            if figure.profile:
                top = ", ".join(f"{k} {v:.0%}" for k, v in list(figure.profile.items())[:8])
                print(f"- {name}\n  - innermost frame: {top}")
                top = ", ".join(f"{k} {v:.0%}" for k, v in list(figure.layers.items())[:12])
                print(f"  - on the stack: {top}")
    print(f"\n({os.cpu_count()} CPUs; load average at the end {load()}; each figure "
          f"{args.seconds:g} s after {args.warmup:g} s of warm-up)")  # fmt: skip
    damaged = [name for name in run.figures if "LEDGER DAMAGED" in name]
    return 1 if damaged else 0


def engine_for(
    name: str, args: argparse.Namespace, scratch: Path, stack: contextlib.ExitStack
) -> Engine:
    folder = scratch / name
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZENZEFI_")}
    env.update(
        {
            "ZENZEFI_DATA_DIR": str(folder),
            "ZENZEFI_SECRET_KEY": secrets.token_urlsafe(48),
            "ZENZEFI_UPSTREAM_URL": f"http://127.0.0.1:{args.nginx_ports[0]}",
            "ZENZEFI_PROXY_RATE_LIMIT_PER_MINUTE": str(10**9),
            "ZENZEFI_RATE_LIMIT_ENABLED": "false",
            "ZENZEFI_METRICS_WORKER_PORT": "0",
        }
    )
    if name == "sqlite":
        path = folder / "zenzefi.db"
        env["ZENZEFI_DATABASE_URL"] = f"sqlite:///{path}"
        return Engine(name, env, None, None, path)
    dsn = stack.enter_context(throwaway_database(args.postgres, keep=False))
    namespace = f"zenzefi-bench-{os.getpid()}-{secrets.token_hex(4)}"
    stack.enter_context(redis_namespace(args.redis, namespace))
    env.update(
        {
            "ZENZEFI_DATABASE_URL": database_url(dsn),
            "ZENZEFI_REDIS_URL": args.redis,
            "ZENZEFI_REDIS_NAMESPACE": namespace,
        }
    )
    database = database_url(dsn).rsplit("/", 1)[1]
    return Engine(name, env, database, dsn, None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "bare"])
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="2 s per figure, 1 s warm-up")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per figure")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured time first")
    parser.add_argument("--engines", default="postgres,sqlite")
    parser.add_argument("--servers", default="1,2", help="API process counts to run")
    parser.add_argument("--users", type=int, default=64, help="buyers of the purchase figure")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy each path into DIR")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "ZENZEFI_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument(
        "--redis", default=os.environ.get("ZENZEFI_BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
    )
    args = parser.parse_args(argv)
    if args.role == "bare":
        serve_bare(args.port)
        return 0
    if args.quick:
        args.seconds, args.warmup = 2.0, 1.0
    args.seconds = max(1, round(args.seconds))
    args.warmup = max(0, round(args.warmup))
    args.engines = [name for name in args.engines.split(",") if name]
    args.servers = [int(n) for n in args.servers.split(",") if n]
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    wrk, nginx = ensure_tools()
    print(f"load average at the start: {load()} ({os.cpu_count()} CPUs)", flush=True)
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zenzefi-suite-")))
        processes = Processes(scratch)
        stack.callback(processes.stop_all)
        www = scratch / "nginx" / "www"
        (scratch / "nginx" / "tmp").mkdir(parents=True)
        www.mkdir(parents=True)
        (www / "1k").write_bytes(ONE_KB)
        (www / "100k").write_bytes(b"z" * 100 * 1024)
        # nginx's worker runs as an unprivileged user when started by root: let it read them.
        for folder in (scratch, scratch / "nginx", www):
            folder.chmod(0o755)
        args.nginx_ports = (free_port(), free_port())
        conf = scratch / "nginx" / "nginx.conf"
        prefix = scratch / "nginx"
        conf.write_text(
            NGINX_CONF.format(
                prefix=prefix, upstream=args.nginx_ports[0], reverse=args.nginx_ports[1]
            )
        )
        processes.start(
            "nginx",
            [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            dict(os.environ),
        )
        wait_for_port(args.nginx_ports[1])
        bare_port = free_port()
        bare = processes.start(
            "bare",
            [sys.executable, str(Path(__file__)), "bare", "--port", str(bare_port)],
            dict(os.environ),
        )
        wait_for_port(bare_port)
        run = Run(args, wrk, scratch, processes)
        try:
            for name in args.engines:
                engine = engine_for(name, args, scratch, stack)
                measure_engine(run, engine, (bare_port, bare.pid), args.nginx_ports[1])
        except (Exception, SystemExit):
            # The scratch folder goes with the run: show what the servers said first.
            for log in sorted(scratch.glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-15:]
                print(f"\n--- {log.name} (last lines)\n" + "\n".join(tail), file=sys.stderr)
            raise
        return report(run)


if __name__ == "__main__":
    sys.exit(main())
