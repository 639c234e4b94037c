"""A mixed workload against a production-shaped installation for minutes on end: throughput,
latency and errors per operation, memory of every process over time, and the ledger afterwards.

    python bench/load.py [--duration 180] [--vus 32] [--users 16] [--weight login=0 ...]

What it does:

1. Recreates its own PostgreSQL database (`--database`, default `zenzefi_bench_load`, dropped
   first if a previous run left it; no other database is touched), migrates it and makes an
   operator. Redis keys go under a namespace of their own in `--redis` (database 7 by default,
   which the test suite does not use); the namespace's keys are deleted at the end.
2. Starts a local upstream in a process of its own (a minimal asyncio HTTP/1.1 server that
   serves `/1k` for the proxy and counts the webhook deliveries POSTed to `/hook`), then the
   installation as docs/worker.md describes it: two `zenzefi serve` processes on two loopback
   ports, one `zenzefi worker --processes 1` and one `zenzefi scheduler`, all on PostgreSQL and
   Redis, with provider-signed payment callbacks and loopback webhooks allowed.
3. Registers `--users` accounts through the API (every second one referred by the one before,
   so purchases pay referral bonuses and refunds claw them back), gives every fourth a webhook
   endpoint on the local receiver, credits each 100,000.00 ZNC through the operator route, and
   gives each of `--vus` virtual users (VU i acts for account i mod `--users`: two devices per
   wallet by default) a 720-hour token of its own for the proxy.
4. Runs the virtual users for `--warmup` then `--duration` seconds, closed loop (`--think`
   seconds between operations), each in its own httpx.AsyncClient, every request going to the
   next API process in turn (round robin, as behind a load balancer). Each operation is drawn
   at random with these weights: proxied GET of 1 KB as the desktop client does it
   (`X-Access-Token`, `X-Device-ID`), proxy status, balance, usage analytics (day, week or
   month), token purchase, token revocation (refund), bundle purchase, top-up (a payment intent,
   then the provider's signed callback), login (`--weight` changes them; one operation alone
   gives its cost per request). Wallets hold far more than the run can spend, so
   every answer other than the operation's success status is an error: 402, 429, 5xx, timeouts
   and dropped connections alike. The analytics operation is left out, with a note, when the
   route does not exist on this version.
5. Samples the resident memory (VmRSS) of every process every `--sample` seconds and the CPU
   each party used; afterwards waits (`--drain`) until the outbox is empty and every webhook
   delivery the run caused has reached the receiver exactly once.
6. Stops the installation, runs `zenzefi check-ledger`, and prints the report. Exit status 1 if
   any request failed, the worker did not catch up, a process's memory kept growing (judged on
   runs of a minute or more: the lowest sample of the last fifth more than max(5 MB, 5 %) above
   the lowest of the middle fifth), or the ledger is damaged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import conninfo

from support import CpuMeter, database_url, free_port, postgres_pids, redis_namespace, wait_for_port
from zenzefi_core.adapters.payments import HmacPaymentProvider, callback_body
from zenzefi_core.clock import SystemClock
from zenzefi_core.domain import PaymentStatus

PASSWORD = "bench password 1"  # noqa: S105 - throwaway accounts in a throwaway database
CREDIT = "100000.00"
TOP_UP = "50.00"
PROXY_PATH = "/api/v1/proxy/1k"
ONE_KB = b"z" * 1024
#: Operation -> weight (share of the draws); see the module docstring.
WEIGHTS = {
    "proxy": 40,
    "proxy status": 5,
    "balance": 20,
    "analytics": 10,
    "token purchase": 8,
    "token revoke": 3,
    "bundle purchase": 3,
    "top-up intent": 4,
    "login": 2,
}
#: Recorded with the top-up intent that precedes it, not drawn on its own.
CALLBACK = "top-up callback"
WEBHOOK_EVENTS = ["token.purchased", "token.revoked", "bundle.purchased", "balance.deposited"]


# --- the upstream and webhook receiver (its own process) ------------------------------------


def _http_answer(status: str, body: bytes, content_type: str = "application/octet-stream") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _serve_upstream(port: int) -> None:
    """`GET /1k` for the proxy; `POST /hook` answers 200 and notes the `webhook-id`;
    `GET /hook-stats` tells how many arrived, in all and distinct."""
    arrived: set[str] = set()
    total = 0
    one_kb = _http_answer("200 OK", ONE_KB)
    ok = _http_answer("200 OK", b"ok", "text/plain")
    missing = _http_answer("404 Not Found", b"")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal total
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, _, rest = head.partition(b"\r\n")
                headers = {}
                for line in rest.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get(b"content-length", b"0"))
                if length:
                    await reader.readexactly(length)
                method, target = request_line.split(b" ")[:2]
                path = target.split(b"?")[0]
                if path == b"/1k":
                    writer.write(one_kb)
                elif path == b"/hook" and method == b"POST":
                    total += 1
                    arrived.add(headers.get(b"webhook-id", b"").decode())
                    writer.write(ok)
                elif path == b"/hook-stats":
                    stats = json.dumps({"distinct": len(arrived), "total": total}).encode()
                    writer.write(_http_answer("200 OK", stats, "application/json"))
                else:
                    writer.write(missing)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


# --- the database, Redis and the processes ---------------------------------------------------


@contextlib.contextmanager
def own_database(server_url: str, name: str, keep: bool) -> Iterator[str]:
    """The database `name`, created empty (dropped first if a previous run left it)."""
    if not name.startswith("zenzefi_bench"):
        raise SystemExit("the load test only creates and drops databases named zenzefi_bench*")
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo.conninfo_to_dict(server_url)
    params["dbname"] = name
    try:
        yield conninfo.make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})
    finally:
        if not keep:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def zenzefi(
    *args: str, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(  # noqa: S603 - our own command line, with our own arguments
        [sys.executable, "-m", "zenzefi_api.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and done.returncode != 0:
        raise SystemExit(f"zenzefi {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done


@dataclass
class Process:
    label: str
    process: subprocess.Popen[bytes]
    port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Installation:
    """The processes of the run; each logs to its own file in the scratch folder."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.started: list[Process] = []

    def start(self, label: str, command: list[str], port: int | None = None) -> Process:
        log = (self.log_dir / f"{label.replace(' ', '-')}.log").open("wb")
        process = subprocess.Popen(  # noqa: S603 - our own command lines
            command, env=self.env, stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        started = Process(label, process, port)
        self.started.append(started)
        return started

    def zenzefi(self, label: str, *args: str, port: int | None = None) -> Process:
        return self.start(label, [sys.executable, "-m", "zenzefi_api.cli", *args], port)

    def check_alive(self) -> None:
        for started in self.started:
            if started.process.poll() is not None:
                log = self.log_dir / f"{started.label.replace(' ', '-')}.log"
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise SystemExit(f"{started.label} exited ({started.process.returncode}):\n{tail}")

    def stop(self) -> None:
        for started in reversed(self.started):
            if started.process.poll() is None:
                started.process.send_signal(signal.SIGTERM)
        for started in reversed(self.started):
            try:
                started.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                started.process.kill()
                started.process.wait()


def wait_until_healthy(installation: Installation, server: Process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        installation.check_alive()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{server.label} did not become healthy")


def descendants(pid: int) -> list[int]:
    """The children of `pid`, their children, and so on (Linux /proc)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                for child in (task / "children").read_text().split():
                    found.append(int(child))
                    pending.append(int(child))
    return found


def rss_kb(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def pids_named(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
    return pids


# --- accounts --------------------------------------------------------------------------------


@dataclass
class Account:
    number: int
    id: str
    email: str
    jwt: str
    webhook: bool


@dataclass
class VirtualUser:
    number: int
    account: Account
    access_token: str
    device: str
    #: Tokens this VU bought and has not revoked, newest last: what it may revoke.
    unused: list[str] = field(default_factory=list)


async def _expect(response: httpx.Response, status: int, what: str) -> dict[str, object]:
    if response.status_code != status:
        raise SystemExit(f"setup: {what} answered {response.status_code}: {response.text[:500]}")
    if not response.headers.get("content-type", "").startswith("application/json"):
        return {}
    body: dict[str, object] = response.json()
    return body


async def make_accounts(
    servers: list[Process], users: int, vus: int, admin_email: str, receiver: str
) -> tuple[list[VirtualUser], str]:
    """Register, fund and equip the accounts; returns the virtual users and a bundle id."""
    async with httpx.AsyncClient(base_url=servers[0].url, timeout=60) as http:

        async def login(email: str) -> str:
            answer = await http.post(
                "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
            )
            return str((await _expect(answer, 200, "login"))["access_token"])

        admin = {"Authorization": f"Bearer {await login(admin_email)}"}
        accounts: list[Account] = []
        referral_code = ""
        for number in range(users):
            email = f"load{number}@bench.example"
            params = {"ref": referral_code} if number % 2 == 1 else {}
            registered = await _expect(
                await http.post(
                    "/api/v1/auth/register",
                    params=params,
                    json={"email": email, "username": f"load{number}", "password": PASSWORD},
                ),
                201,
                "register",
            )
            referral_code = str(registered["referral_code"])
            jwt = await login(email)
            bearer = {"Authorization": f"Bearer {jwt}"}
            webhook = number % 4 == 0
            if webhook:
                await _expect(
                    await http.post(
                        "/api/v1/webhooks",
                        json={"url": receiver, "events": WEBHOOK_EVENTS},
                        headers=bearer,
                    ),
                    201,
                    "webhook",
                )
            await _expect(
                await http.post(
                    f"/api/v1/admin/users/{registered['id']}/credit",
                    json={"amount": CREDIT, "reason": "Load test funds"},
                    headers=admin,
                ),
                201,
                "credit",
            )
            accounts.append(Account(number, str(registered["id"]), email, jwt, webhook))
        virtual_users = []
        for number in range(vus):
            account = accounts[number % users]
            bought = await _expect(
                await http.post(
                    "/api/v1/tokens/purchase",
                    json={"duration_hours": 720},
                    headers={"Authorization": f"Bearer {account.jwt}"},
                ),
                201,
                "token purchase",
            )
            vu = VirtualUser(number, account, str(bought["token"]), f"load-device-{number:04d}")
            # The first proxied request starts the token's clock and binds it to the device.
            await _expect(
                await http.get(
                    PROXY_PATH,
                    headers={"X-Access-Token": vu.access_token, "X-Device-ID": vu.device},
                ),
                200,
                "first proxied request",
            )
            virtual_users.append(vu)
        bundles = await _expect(await http.get("/api/v1/bundles"), 200, "bundles")
        items = bundles["items"]
        assert isinstance(items, list), "no bundle list"
        assert items, "no bundle on sale"
        cheapest = min(items, key=lambda b: float(b["total_price"]))
        return virtual_users, str(cheapest["id"])


# --- the load --------------------------------------------------------------------------------


@dataclass
class OperationStats:
    ok: int = 0
    latencies: list[float] = field(default_factory=list)
    #: Failures anywhere in the run (warm-up included), by status code or exception name.
    errors: dict[str, int] = field(default_factory=dict)

    def percentile(self, share: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


@dataclass
class Load:
    servers: list[str]
    bundle_id: str
    provider: HmacPaymentProvider
    analytics: bool
    window: tuple[float, float]
    think: float
    weights: dict[str, int]
    stats: dict[str, OperationStats] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    #: The machine's load averages when the window opened and closed.
    loadavg: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    _turn: int = 0

    def next_server(self) -> str:
        self._turn += 1
        return self.servers[self._turn % len(self.servers)]

    def record(self, operation: str, started: float, failure: str | None) -> None:
        finished = time.perf_counter()
        stats = self.stats.setdefault(operation, OperationStats())
        if failure is not None:
            stats.errors[failure] = stats.errors.get(failure, 0) + 1
        elif self.window[0] <= finished < self.window[1]:
            stats.ok += 1
            stats.latencies.append(finished - started)

    def note(
        self, operation: str, failure: str, response: httpx.Response | None, detail: str
    ) -> None:
        """Keep the first few failures' bodies (or exception messages) for the report."""
        if len(self.samples) < 10:
            body = detail if response is None else response.text[:300]
            self.samples.append(f"{operation}: {failure} {body}")


async def call(
    load: Load,
    http: httpx.AsyncClient,
    operation: str,
    expected: int,
    method: str,
    path: str,
    check: Callable[[httpx.Response], bool] = lambda _: True,
    **request: Any,
) -> httpx.Response | None:
    """One request of `operation` to the next server; records its outcome and latency."""
    started = time.perf_counter()
    response: httpx.Response | None = None
    failure: str | None = None
    detail = ""
    server = load.next_server()
    try:
        response = await http.request(method, server + path, **request)
        if response.status_code != expected:
            failure = str(response.status_code)
        elif not check(response):
            failure = "unexpected body"
    except httpx.HTTPError as error:
        failure = type(error).__name__
        detail = f"{error} ({load.servers.index(server) + 1}. API process)"
    load.record(operation, started, failure)
    if failure is not None:
        load.note(operation, failure, response, detail)
        return None
    return response


async def top_up(load: Load, http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    """A payment intent, then the provider's signed callback that settles it."""
    intent = await call(
        load, http, "top-up intent", 201, "POST", "/api/v1/currency/purchase",
        json={"amount_znc": TOP_UP}, headers=bearer,
    )  # fmt: skip
    if intent is None:
        return
    body = callback_body(
        event_id=str(uuid.uuid4()),
        payment_id=uuid.UUID(intent.json()["payment_id"]),
        status=PaymentStatus.SUCCEEDED,
    )
    await call(
        load, http, CALLBACK, 200, "POST", "/api/v1/payments/webhook",
        lambda r: r.json()["credited"] is True,
        content=body, headers={"Content-Type": "application/json", **load.provider.sign(body)},
    )  # fmt: skip


async def operate(
    load: Load, http: httpx.AsyncClient, vu: VirtualUser, operation: str, draw: random.Random
) -> None:
    bearer = {"Authorization": f"Bearer {vu.account.jwt}"}
    proxy_headers = {"X-Access-Token": vu.access_token, "X-Device-ID": vu.device}
    if operation == "proxy":
        await call(
            load, http, operation, 200, "GET", PROXY_PATH, lambda r: r.content == ONE_KB,
            headers=proxy_headers,
        )  # fmt: skip
    elif operation == "proxy status":
        await call(
            load, http, operation, 200, "GET", "/api/v1/proxy/status",
            lambda r: r.json()["status"] == "active", headers=proxy_headers,
        )  # fmt: skip
    elif operation == "balance":
        await call(
            load, http, operation, 200, "GET", "/api/v1/currency/balance",
            lambda r: "balance" in r.json(), headers=bearer,
        )  # fmt: skip
    elif operation == "analytics":
        await call(
            load, http, operation, 200, "GET", "/api/v1/analytics/usage",
            lambda r: "total_requests" in r.json(),
            params={"period": draw.choice(["day", "week", "month"])}, headers=bearer,
        )  # fmt: skip
    elif operation == "token purchase":
        bought = await call(
            load, http, operation, 201, "POST", "/api/v1/tokens/purchase",
            json={"duration_hours": draw.choice([1, 12, 24])}, headers=bearer,
        )  # fmt: skip
        if bought is not None:
            vu.unused.append(str(bought.json()["id"]))
    elif operation == "token revoke":
        await call(
            load, http, operation, 200, "DELETE", f"/api/v1/tokens/{vu.unused.pop()}",
            lambda r: r.json()["revoked"] is True, headers=bearer,
        )  # fmt: skip
    elif operation == "bundle purchase":
        bought = await call(
            load, http, operation, 200, "POST", f"/api/v1/bundles/{load.bundle_id}/purchase",
            headers=bearer,
        )  # fmt: skip
        if bought is not None:
            vu.unused.extend(str(token["id"]) for token in bought.json()["tokens"])
    elif operation == "top-up intent":
        await top_up(load, http, bearer)
    elif operation == "login":
        answer = await call(
            load, http, operation, 200, "POST", "/api/v1/auth/login",
            json={"email": vu.account.email, "password": PASSWORD},
        )  # fmt: skip
        if answer is not None:
            vu.account.jwt = str(answer.json()["access_token"])


async def virtual_user(load: Load, vu: VirtualUser, seed: int) -> None:
    draw = random.Random(seed)
    operations = [
        name
        for name, weight in load.weights.items()
        if weight > 0 and (load.analytics or name != "analytics")
    ]
    weights = [load.weights[name] for name in operations]
    limits = httpx.Limits(max_connections=len(load.servers), max_keepalive_connections=2)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        while time.perf_counter() < load.window[1]:
            operation = draw.choices(operations, weights)[0]
            if operation == "token revoke" and not vu.unused:
                operation = "token purchase"
            await operate(load, http, vu, operation, draw)
            if load.think:
                await asyncio.sleep(load.think)


# --- memory ----------------------------------------------------------------------------------


@dataclass
class Memory:
    """VmRSS samples (kB) per process over the measured window."""

    labels: dict[int, str]
    samples: dict[int, list[tuple[float, int]]] = field(default_factory=dict)

    def sample(self, moment: float) -> None:
        for pid in self.labels:
            value = rss_kb(pid)
            if value is not None:
                self.samples.setdefault(pid, []).append((moment, value))

    async def run(self, window: tuple[float, float], every: float) -> None:
        while time.perf_counter() < window[0]:
            await asyncio.sleep(0.05)
        while (now := time.perf_counter()) < window[1]:
            self.sample(now - window[0])
            await asyncio.sleep(min(every, max(0.0, window[1] - time.perf_counter())))
        self.sample(window[1] - window[0])

    def rows(self, judge: bool) -> tuple[list[str], bool]:
        """Per process, its baseline (lowest sample) in the first, middle and last fifth of the
        window, its peak, and a verdict: growing when the last fifth's baseline is more than
        max(5 MB, 5 %) above the middle one's. Baselines, because a login's Argon2 hash holds
        64 MiB for a moment and a single sample may catch it; a leak lifts the baseline."""
        lines = []
        growing = False
        for pid, label in self.labels.items():
            points = self.samples.get(pid, [])
            if len(points) < 5:
                continue
            start, middle, end = (baseline(points, *part) for part in FIFTHS)
            peak = max(kb for _, kb in points)
            if not judge:
                verdict = "(run too short to judge)"
            elif end - middle > max(5 * 1024, middle * 0.05):
                verdict = "GROWING"
                growing = True
            else:
                verdict = "flat"
            lines.append(
                f"| {label} | {start / 1024:.0f} | {middle / 1024:.0f} | {end / 1024:.0f} | "
                f"{peak / 1024:.0f} | {verdict} |"
            )
        return lines, growing


#: The first, middle and last fifth of the window.
FIFTHS = ((0.0, 0.2), (0.4, 0.6), (0.8, 1.0))


def baseline(points: list[tuple[float, int]], low: float, high: float) -> int:
    """The lowest sample between `low` and `high` of the sampled time."""
    length = points[-1][0]
    inside = [kb for at, kb in points if low * length <= at <= high * length]
    return min(inside or [kb for _, kb in points])


# --- after the load --------------------------------------------------------------------------


def backlog(dsn: str) -> dict[str, int]:
    """What the worker still owes: undispatched events, deliveries the run's events call for
    that were not yet made or not yet succeeded, queued emails."""
    with psycopg.connect(dsn) as connection:
        pending = connection.execute(
            "SELECT count(*) FROM outbox_events WHERE dispatched_at IS NULL"
        ).fetchone()
        expected = connection.execute(
            "SELECT count(*) FROM outbox_events e JOIN webhook_endpoints w "
            "ON w.user_id = e.user_id AND e.created_at >= w.created_at "
            "WHERE e.event_type = ANY(%s)",
            (WEBHOOK_EVENTS,),
        ).fetchone()
        states: dict[str, int] = dict(
            connection.execute(
                "SELECT state, count(*) FROM webhook_deliveries GROUP BY state"
            ).fetchall()
        )
        emails: dict[str, int] = dict(
            connection.execute(
                "SELECT state, count(*) FROM notifications GROUP BY state"
            ).fetchall()
        )
    assert pending is not None
    assert expected is not None
    return {
        "events not dispatched": int(pending[0]),
        "deliveries expected": int(expected[0]),
        "deliveries succeeded": int(states.get("succeeded", 0)),
        "deliveries pending": int(states.get("pending", 0)),
        "deliveries failed": int(states.get("failed", 0)),
        "emails queued": int(emails.get("queued", 0)),
        "emails sent": int(emails.get("sent", 0)),
        "emails failed": int(emails.get("failed", 0)),
    }


def receiver_stats(upstream: str) -> dict[str, int]:
    answer = httpx.get(f"{upstream}/hook-stats", timeout=5).json()
    return {"distinct": int(answer["distinct"]), "total": int(answer["total"])}


def drain(dsn: str, upstream: str, timeout: float) -> tuple[bool, dict[str, int], float]:
    """Wait until every event is dispatched and every expected delivery has arrived."""
    started = time.monotonic()
    while True:
        state = backlog(dsn)
        received = receiver_stats(upstream)
        state["deliveries received (distinct)"] = received["distinct"]
        state["deliveries received (all attempts)"] = received["total"]
        done = (
            state["events not dispatched"] == 0
            and state["deliveries pending"] == 0
            and state["deliveries failed"] == 0
            and state["emails queued"] == 0
            and received["distinct"] == state["deliveries expected"]
            and state["deliveries succeeded"] == state["deliveries expected"]
        )
        waited = time.monotonic() - started
        if done or waited > timeout:
            return done, state, waited
        time.sleep(1)


# --- the run ---------------------------------------------------------------------------------


def report(load: Load, seconds: float, cpu: dict[str, float], memory: list[str], vus: int) -> int:
    print(f"\n{vus} virtual users, {seconds:g} s measured; CPU cores: {os.cpu_count()}")
    for moment, averages in load.loadavg.items():
        print(f"load average at the {moment}: " + ", ".join(f"{a:.1f}" for a in averages))
    if not load.analytics:
        print("analytics: GET /api/v1/analytics/usage does not exist here (404); left out")
    print("\n| operation | ok | per second | p50 ms | p99 ms | max ms | errors |")
    print("|---|---|---|---|---|---|---|")
    total_ok = total_errors = 0
    for name in [*WEIGHTS, CALLBACK]:
        stats = load.stats.get(name)
        if stats is None:
            continue
        errors = sum(stats.errors.values())
        total_ok += stats.ok
        total_errors += errors
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(stats.errors.items()))
        print(
            f"| {name} | {stats.ok:,} | {stats.ok / seconds:,.1f} | {stats.percentile(0.5):.1f} | "
            f"{stats.percentile(0.99):.1f} | {max(stats.latencies, default=0) * 1000:.0f} | "
            f"{errors}{f' ({detail})' if detail else ''} |"
        )
    every = [x for s in load.stats.values() for x in s.latencies]
    p50 = statistics.median(every) * 1000 if every else float("nan")
    p99 = sorted(every)[int(len(every) * 0.99)] * 1000 if every else float("nan")
    print(
        f"| **total** | {total_ok:,} | {total_ok / seconds:,.1f} | {p50:.1f} | {p99:.1f} | "
        f"{max(every, default=0) * 1000:.0f} | {total_errors} |"
    )
    rate = total_errors / max(1, total_ok + total_errors)
    print(f"\nerror rate: {rate:.4%} ({total_errors} of {total_ok + total_errors} requests)")
    for sample in load.samples:
        print(f"  {sample}")
    print("\nCPU used during the measured window (cores = CPU seconds / wall seconds):")
    print("  " + ", ".join(f"{name} {used / seconds:.2f}" for name, used in cpu.items()))
    if total_ok:
        per_request = {name: used * 1000 / total_ok for name, used in cpu.items()}
        print(
            "CPU ms per successful request: "
            + ", ".join(f"{name} {used:.2f}" for name, used in per_request.items())
        )
    print("\n| process | RSS start MB | middle MB | end MB | peak MB | trend |")
    print("|---|---|---|---|---|---|")
    for line in memory:
        print(line)
    return total_errors


async def run_load(
    load: Load, vus: list[VirtualUser], memory: Memory, sample_every: float, meter: CpuMeter
) -> dict[str, float]:
    cpu: dict[str, float] = {}
    loadavg = load.loadavg

    async def meter_window() -> None:
        await asyncio.sleep(max(0.0, load.window[0] - time.perf_counter()))
        meter.start()
        loadavg["start"] = os.getloadavg()
        own = os.times()
        await asyncio.sleep(max(0.0, load.window[1] - time.perf_counter()))
        cpu.update(meter.stop())
        loadavg["end"] = os.getloadavg()
        after = os.times()
        cpu["load generator"] = after.user + after.system - own.user - own.system

    await asyncio.gather(
        meter_window(),
        memory.run(load.window, sample_every),
        *(virtual_user(load, vu, seed=vu.number) for vu in vus),
    )
    return cpu


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "upstream"])
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=180.0, help="measured seconds (180)")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first")
    parser.add_argument("--vus", type=int, default=32, help="concurrent virtual users (32)")
    parser.add_argument("--users", type=int, default=16, help="accounts they act for (16)")
    parser.add_argument("--think", type=float, default=0.0, help="seconds between operations")
    parser.add_argument("--sample", type=float, default=2.0, help="memory sampling interval")
    parser.add_argument("--drain", type=float, default=120.0, help="longest wait for the worker")
    parser.add_argument("--worker-threads", type=int, default=8, help="threads of the worker")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "ZENZEFI_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="the PostgreSQL server to make the database on",
    )
    parser.add_argument("--database", default="zenzefi_bench_load", help="its name")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/7", help="Redis URL")
    parser.add_argument("--keep-database", action="store_true", help="do not drop it at the end")
    parser.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="OPERATION=N",
        help="change one operation's weight, e.g. --weight login=0 (repeatable); operations: "
        + ", ".join(f"{name!r}={weight}" for name, weight in WEIGHTS.items()),
    )
    args = parser.parse_args(argv)
    weights = dict(WEIGHTS)
    for change in args.weight:
        name, _, value = change.rpartition("=")
        if name not in weights or not value.isdigit():
            parser.error(f"--weight {change}: expected OPERATION=N with one of {list(WEIGHTS)}")
        weights[name] = int(value)
    if not any(weights.values()):
        parser.error("every weight is zero")
    if args.role == "upstream":
        asyncio.run(_serve_upstream(args.port))
        return 0
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    namespace = f"zenzefi-load-{os.getpid()}-{secrets.token_hex(4)}"
    payment_secret = secrets.token_urlsafe(32)
    with (
        own_database(args.postgres, args.database, args.keep_database) as dsn,
        tempfile.TemporaryDirectory(prefix="zenzefi-load-") as scratch,
        redis_namespace(args.redis, namespace),
    ):
        upstream_port = free_port()
        upstream = f"http://127.0.0.1:{upstream_port}"
        env = {
            **os.environ,
            "ZENZEFI_DATABASE_URL": database_url(dsn),
            "ZENZEFI_DATA_DIR": scratch,
            "ZENZEFI_SECRET_KEY": secrets.token_urlsafe(48),
            "ZENZEFI_REDIS_URL": args.redis,
            "ZENZEFI_REDIS_NAMESPACE": namespace,
            "ZENZEFI_UPSTREAM_URL": upstream,
            "ZENZEFI_PAYMENTS_SECRET": payment_secret,
            "ZENZEFI_WEBHOOK_ALLOW_PRIVATE": "true",
            # Not the default port 9191: a worker already running here, or another bench, may
            # hold it, and this bench reads no worker metrics.
            "ZENZEFI_METRICS_WORKER_PORT": "0",
            # Every virtual user logs in from 127.0.0.1: one address would hit the login and
            # registration limits at once, where real clients come from many.
            "ZENZEFI_RATE_LIMIT_ENABLED": "false",
        }
        print(f"database {database_url(dsn)}, Redis {args.redis} under {namespace}:")
        zenzefi("migrate", env=env)
        admin_email = "admin@bench.example"
        zenzefi(
            "admin", "create", "--email", admin_email, "--username", "admin",
            "--password", PASSWORD, env=env,
        )  # fmt: skip
        installation = Installation(env, Path(scratch))
        try:
            upstream_process = installation.start(
                "upstream",
                [sys.executable, __file__, "upstream", "--port", str(upstream_port)],
                upstream_port,
            )
            wait_for_port(upstream_port)
            api = [
                installation.zenzefi(f"api {n}", "serve", "--port", str(port), port=port)
                for n, port in enumerate((free_port(), free_port()), start=1)
            ]
            worker = installation.zenzefi(
                "worker", "worker", "--processes", "1", "--threads", str(args.worker_threads)
            )
            scheduler = installation.zenzefi("scheduler", "scheduler")
            for server in api:
                wait_until_healthy(installation, server)
            print("installation up: 2 API processes, 1 worker, 1 scheduler", flush=True)
            vus, bundle_id = asyncio.run(
                make_accounts(api, args.users, args.vus, admin_email, f"{upstream}/hook")
            )
            probe = httpx.get(
                f"{api[0].url}/api/v1/analytics/usage",
                headers={"Authorization": f"Bearer {vus[0].account.jwt}"},
                timeout=30,
            )
            installation.check_alive()
            labels = {p.process.pid: p.label for p in [*api, scheduler]}
            labels[worker.process.pid] = "worker (main)"
            for number, pid in enumerate(descendants(worker.process.pid), start=1):
                labels[pid] = f"worker (child {number})"
            database = str(conninfo.conninfo_to_dict(dsn)["dbname"])
            meter = CpuMeter(
                {
                    "API processes": lambda: [p.process.pid for p in api],
                    "worker": lambda: [worker.process.pid, *descendants(worker.process.pid)],
                    "scheduler": lambda: [scheduler.process.pid],
                    "PostgreSQL": lambda: postgres_pids(database),
                    "Redis (shared)": lambda: pids_named("redis-server"),
                    "upstream": lambda: [upstream_process.process.pid],
                }
            )
            provider = HmacPaymentProvider(
                secret=payment_secret, checkout_url="http://127.0.0.1/pay", clock=SystemClock()
            )
            now = time.perf_counter()
            window = (now + args.warmup, now + args.warmup + args.duration)
            load = Load(
                servers=[s.url for s in api],
                bundle_id=bundle_id,
                provider=provider,
                analytics=probe.status_code != 404,
                window=window,
                think=args.think,
                weights=weights,
            )
            memory = Memory(labels)
            print(
                f"running {args.vus} virtual users for {args.warmup:g} + {args.duration:g} s...",
                flush=True,
            )
            cpu = asyncio.run(run_load(load, vus, memory, args.sample, meter))
            installation.check_alive()
            print(f"load done; waiting up to {args.drain:g} s for the worker...", flush=True)
            caught_up, state, waited = drain(dsn, upstream, args.drain)
        finally:
            installation.stop()
        errors = report(
            load,
            args.duration,
            cpu,
            memory.rows(judge=args.duration >= 60)[0],
            args.vus,
        )
        _lines, growing = memory.rows(judge=args.duration >= 60)
        verdict = "caught up" if caught_up else "DID NOT CATCH UP"
        print(f"\nworker: {verdict} {waited:.0f} s after the load")
        for name, value in state.items():
            print(f"  {name}: {value:,}")
        duplicates = state["deliveries received (distinct)"] - state["deliveries succeeded"]
        if duplicates > 0:
            print(f"  {duplicates} deliveries arrived without being recorded as succeeded")
        checked = zenzefi("check-ledger", env=env, check=False)
        print(f"\nzenzefi check-ledger (exit {checked.returncode}):")
        print(checked.stdout.strip() or checked.stderr.strip())
        failed = errors > 0 or not caught_up or growing or checked.returncode != 0
        print(f"\nresult: {'FAILED' if failed else 'passed'}")
        if args.keep_database:
            print(f"database kept: {database_url(dsn)}")
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
