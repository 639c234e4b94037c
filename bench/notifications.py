"""The token-expiry scan over many tokens on PostgreSQL (time and SQL statements issued), and
emails per second through the worker to a local SMTP server, in one run.

    python bench/notifications.py [--tokens 10000,100000] [--emails 1000] [--threads 4]

What it does:

1. (a) For each entry of `--tokens`, creates a throwaway database on the PostgreSQL server
   (`--postgres`, default `postgresql://postgres@127.0.0.1:5432/postgres`), migrates it, and
   fills it by bulk SQL (`INSERT ... SELECT generate_series`) with one user per ten tokens,
   that many activated tokens whose `expires_at` lies between 1 and 23 hours from now, and
   `--history` times as many tokens that ran out days ago and were told about then (so
   `token_notices` has rows and statistics, as in a running system), then `ANALYZE`s it.
   It then runs the `token-expiry-scan` job of a `WorkerApp` (Dramatiq's
   in-process broker, no worker consuming: the scan's after-commit hand-over puts one message
   per event in memory and marks the events dispatched) until the job reports no token left.
   Every SQL statement the core's engine sends is counted (`before_cursor_execute`), per batch
   of the scan, and each batch is timed from its SELECT to the next one. The database is
   dropped afterwards.
2. (b) In another throwaway database, `--emails` users with one such token each; an aiosmtpd
   server on loopback counts what it receives; a Dramatiq worker (`--threads` threads) consumes
   the in-process broker with the real actors and the SMTP mailer. The clock starts when the
   scan job starts and stops when the last email has arrived: scan, `handle_event` (render the
   email into the notification log) and `send_notification` (one SMTP conversation each).
   Afterwards it checks that every email arrived exactly once (one per recipient, distinct
   Message-IDs, as many as the log has marked sent).

Everything runs in this one process (the SMTP server is a thread of it), beside PostgreSQL on
the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import dramatiq
from aiosmtpd.controller import Controller
from dramatiq.brokers.stub import StubBroker
from pydantic import SecretStr
from sqlalchemy import Engine, event, make_url, text

from support import free_port
from zenzefi_core.adapters.sqlalchemy import make_engine, normalize_url, upgrade
from zenzefi_core.bootstrap import Core
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.token_expiry import DEFAULT_SCAN_BATCH
from zenzefi_core.settings import DatabaseSettings, Settings, SmtpSettings
from zenzefi_worker.app import MAX_BATCHES_PER_RUN, WorkerApp

TOKENS_PER_USER = 10
#: Runs of the job allowed before the bench gives up (each run does at most 50 batches).
MAX_JOB_RUNS = 1000


# --- the throwaway database ------------------------------------------------------------------


@contextlib.contextmanager
def throwaway_database(server_url: str, keep: bool) -> Iterator[str]:
    """A new, migrated database on the server; dropped on the way out unless `keep`."""
    admin = make_engine(server_url, isolation_level="AUTOCOMMIT", pool_size=1)
    name = f"zenzefi_bench_{os.getpid()}_{secrets.token_hex(4)}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(normalize_url(server_url)).set(database=name)
    try:
        engine = make_engine(url.render_as_string(hide_password=False), pool_size=1)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        yield url.render_as_string(hide_password=False)
    finally:
        if not keep:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


FILL_USERS = """
INSERT INTO users (id, email, username, username_lower, password_hash, referral_code,
                   is_active, is_superuser, balance, created_at)
SELECT gen_random_uuid(), 'bench' || g || '@bench.example', 'bench' || g, 'bench' || g,
       'not-a-hash', 'B' || lpad(g::text, 10, '0'), true, false, 100.00, :now - interval '7 days'
FROM generate_series(1, :users) AS g
"""

# Token g belongs to user 1 + g % users and ends between 1 and 23 hours from now, in order of g.
FILL_TOKENS = """
INSERT INTO access_tokens (id, user_id, token_hash, token_prefix, duration_hours, scope,
                           price_paid, created_at, activated_at, expires_at)
SELECT gen_random_uuid(), u.id, encode(sha256(('bench-token-' || g)::bytea), 'hex'),
       'bt' || g, 24, 'full', 1.00, :now - interval '2 days',
       ends - interval '24 hours', ends
FROM generate_series(1, :tokens) AS g
CROSS JOIN LATERAL (SELECT :now + make_interval(secs => 3600 + g * 79200.0 / :tokens) AS ends) e
JOIN users AS u ON u.username_lower = 'bench' || (1 + g % :users)
"""


# Tokens tokens+1 .. tokens+history ran out two to three days ago and were told about then.
FILL_HISTORY = """
INSERT INTO access_tokens (id, user_id, token_hash, token_prefix, duration_hours, scope,
                           price_paid, created_at, activated_at, expires_at)
SELECT gen_random_uuid(), u.id, encode(sha256(('bench-token-' || g)::bytea), 'hex'),
       'bt' || g, 24, 'full', 1.00, :now - interval '5 days',
       ends - interval '24 hours', ends
FROM generate_series(:tokens + 1, :tokens + :history) AS g
CROSS JOIN LATERAL (SELECT :now - make_interval(secs => 172800 + g % 86400) AS ends) e
JOIN users AS u ON u.username_lower = 'bench' || (1 + g % :users)
"""
FILL_HISTORY_NOTICES = """
INSERT INTO token_notices (token_id, kind, created_at)
SELECT id, 'expiring', expires_at - interval '12 hours' FROM access_tokens WHERE expires_at < :now
"""


def fill(url: str, users: int, tokens: int, history: int = 0) -> float:
    """Users and activated tokens ending within the next day, plus `history` tokens that ran
    out days ago and were told about then; returns the seconds it took."""
    started = time.perf_counter()
    engine = make_engine(url, pool_size=1)
    now = datetime.now(UTC)
    sizes = {"now": now, "users": users, "tokens": tokens, "history": history}
    try:
        with engine.begin() as connection:
            connection.execute(text(FILL_USERS), sizes)
            connection.execute(text(FILL_TOKENS), sizes)
            if history:
                connection.execute(text(FILL_HISTORY), sizes)
                connection.execute(text(FILL_HISTORY_NOTICES), sizes)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()
    return time.perf_counter() - started


def bench_settings(url: str, data_dir: Path, smtp_port: int | None = None) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database": DatabaseSettings(url=url),
        "secret_key": SecretStr(secrets.token_urlsafe(48)),
        "public_url": "https://zenzefi.example",
    }
    if smtp_port is not None:
        values["smtp"] = SmtpSettings(
            host="127.0.0.1",
            port=smtp_port,
            starttls=False,
            timeout_seconds=10,
            ZENZEFI_SMTP_FROM="Zenzefi <no-reply@zenzefi.example>",
        )
    return Settings(**values)


# --- counting statements -----------------------------------------------------------------------

_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE)\s+\"?(\w+)", re.IGNORECASE)
#: The scan's select: the first statement of every batch.
_SCAN_SELECT = re.compile(r"^\s*SELECT\b.*\bFROM access_tokens\b.*\btoken_notices\b", re.DOTALL)


def label(statement: str) -> str:
    verb = statement.split(None, 1)[0].upper() if statement.strip() else "?"
    found = _TABLE.search(statement)
    return f"{verb} {found.group(1)}" if found else verb


@dataclass
class Batch:
    started: float
    statements: Counter[str] = field(default_factory=Counter)
    ended: float = 0.0
    #: How long the scan's select itself took, in seconds.
    select_seconds: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.statements.values())

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class StatementCounter:
    """Every statement an engine sends, grouped into the scan's batches (each starts with the
    scan's select); statements outside any batch are counted too."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.total: Counter[str] = Counter()
        self.outside = 0
        self.batches: list[Batch] = []
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._seen)
        event.listen(engine, "after_cursor_execute", self._done)

    def _seen(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        kind = label(statement)
        with self._lock:
            self.total[kind] += 1
            if _SCAN_SELECT.search(statement):
                now = time.perf_counter()
                if self.batches:
                    self.batches[-1].ended = now
                self.batches.append(Batch(started=now))
            if self.batches:
                self.batches[-1].statements[kind] += 1
            else:
                self.outside += 1

    def _done(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if _SCAN_SELECT.search(statement):
            with self._lock:
                batch = self.batches[-1]
                batch.select_seconds = time.perf_counter() - batch.started

    def finish(self) -> None:
        if self.batches and not self.batches[-1].ended:
            self.batches[-1].ended = time.perf_counter()

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)
        event.remove(self.engine, "after_cursor_execute", self._done)

    @property
    def statements(self) -> int:
        return sum(self.total.values())


# --- (a) the scan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanResult:
    tokens: int
    fill_seconds: float
    job_runs: int
    seconds: float
    statements: int
    batches: list[Batch]
    told: int
    events: int
    messages: int

    @property
    def full(self) -> list[Batch]:
        return [b for b in self.batches if b.statements.get("INSERT token_notices")]


def scan(server_url: str, tokens: int, history: int, keep: bool) -> ScanResult:
    with (
        throwaway_database(server_url, keep) as url,
        tempfile.TemporaryDirectory(prefix="zenzefi-bench-") as scratch,
    ):
        users = max(1, tokens // TOKENS_PER_USER)
        print(
            f"(a) {tokens:,} tokens of {users:,} users, {history:,} told about before: filling...",
            flush=True,
        )
        fill_seconds = fill(url, users, tokens, history)
        core = Core.from_settings(bench_settings(url, Path(scratch)), hasher=fast_password_hasher())
        broker = StubBroker()
        app = WorkerApp(core, broker)
        counter = StatementCounter(core.database.engine)
        try:
            print(f"    filled in {fill_seconds:.1f} s; scanning...", flush=True)
            started = time.perf_counter()
            runs = 0
            for runs in range(1, MAX_JOB_RUNS + 1):  # noqa: B007 - the count is the result
                summary = app.run_job("token-expiry-scan")
                print(f"    {time.perf_counter() - started:6.1f} s  {summary}", flush=True)
                if summary.startswith("token-expiry-scan: 0 token"):
                    break
            seconds = time.perf_counter() - started
            counter.finish()
        finally:
            counter.close()
        with core.database.engine.connect() as connection:
            told = connection.execute(
                text(
                    "SELECT count(*) FROM token_notices WHERE created_at > now() - interval '1 day'"
                )
            ).scalar_one()
            events = connection.execute(
                text(
                    "SELECT count(*) FROM outbox_events WHERE event_type = 'token.expiring' "
                    "AND dispatched_at IS NOT NULL"
                )
            ).scalar_one()
        messages = broker.queues["events"].qsize()
        app.close()
        core.close()
        return ScanResult(
            tokens=tokens,
            fill_seconds=fill_seconds,
            job_runs=runs,
            seconds=seconds,
            statements=counter.statements,
            batches=counter.batches,
            told=told,
            events=events,
            messages=messages,
        )


def report_scan(results: Sequence[ScanResult]) -> None:
    print(f"\n(a) token-expiry scan on PostgreSQL, batches of {DEFAULT_SCAN_BATCH}")
    head = (
        f"{'tokens':>8} {'job runs':>8} {'batches':>7} {'seconds':>8} {'tokens/s':>9} "
        f"{'statements':>10} {'per batch':>9} {'per token':>9} "
        f"{'batch ms: 1st':>13} {'median':>6} {'last':>5} "
        f"{'select ms: 1st':>14} {'last':>5}"
    )
    print(head)
    for r in results:
        full = r.full or r.batches
        times = [b.seconds * 1000 for b in full]
        print(
            f"{r.tokens:8,} {r.job_runs:8} {len(r.batches):7} {r.seconds:8.2f} "
            f"{r.tokens / r.seconds:9,.0f} {r.statements:10,} "
            f"{r.statements / max(len(r.batches), 1):9.2f} {r.statements / r.tokens:9.4f} "
            f"{times[0]:13.0f} {statistics.median(times):6.0f} {times[-1]:5.0f} "
            f"{full[0].select_seconds * 1000:14.1f} {full[-1].select_seconds * 1000:5.1f}"
        )
    print("statements in each batch that claimed tokens (min-max), and in the final empty one:")
    for r in results:
        counts = [b.count for b in r.full]
        kinds: Counter[str] = Counter()
        for batch in r.full:
            kinds.update(batch.statements)
        per = ", ".join(f"{k} {v / len(r.full):g}" for k, v in sorted(kinds.items()))
        last = r.batches[-1]
        print(
            f"  {r.tokens:,} tokens: {min(counts)}-{max(counts)} per batch ({per}); "
            f"final batch {last.count} ({', '.join(sorted(last.statements))})"
        )
    for r in results:
        ok = r.told == r.events == r.messages == r.tokens
        print(
            f"  {r.tokens:,} tokens: {r.told:,} told, {r.events:,} token.expiring events "
            f"dispatched, {r.messages:,} messages on the broker: {'OK' if ok else 'MISMATCH'}"
        )


# --- (b) emails through the worker ----------------------------------------------------------


class Inbox:
    """What the SMTP server received: recipients and Message-IDs, counted."""

    def __init__(self) -> None:
        self.recipients: Counter[str] = Counter()
        self.message_ids: Counter[str] = Counter()
        self.count = 0
        self.last_at = 0.0
        self.complete = threading.Event()
        self.expected = 0
        self._lock = threading.Lock()
        self._parser = BytesHeaderParser()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        headers = self._parser.parsebytes(envelope.content)
        with self._lock:
            self.recipients.update(envelope.rcpt_tos)
            self.message_ids[str(headers.get("Message-ID"))] += 1
            self.count += 1
            self.last_at = time.perf_counter()
            if self.count >= self.expected:
                self.complete.set()
        return "250 Message accepted for delivery"


@dataclass(frozen=True)
class EmailResult:
    emails: int
    threads: int
    scan_seconds: float
    seconds: float
    received: int
    recipients: int
    duplicates: int
    sent_in_log: int
    statements: int


def settle(broker: StubBroker, worker: dramatiq.Worker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        remaining = max(int((deadline - time.monotonic()) * 1000), 1)
        for queue in list(broker.queues):
            if not queue.endswith(".DQ"):
                broker.join(queue, timeout=remaining)
        worker.join()
        if not any(q.unfinished_tasks for q in broker.queues.values()):
            return


def emails(server_url: str, count: int, threads: int, keep: bool, timeout: float) -> EmailResult:
    inbox = Inbox()
    inbox.expected = count
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, ready_timeout=10)
    controller.start()
    try:
        with (
            throwaway_database(server_url, keep) as url,
            tempfile.TemporaryDirectory(prefix="zenzefi-bench-") as scratch,
        ):
            print(f"(b) {count:,} users with a token ending within a day: filling...", flush=True)
            fill(url, count, count)
            settings = bench_settings(url, Path(scratch), smtp_port=port)
            core = Core.from_settings(settings, hasher=fast_password_hasher())
            broker = StubBroker()
            app = WorkerApp(core, broker)  # the SMTP mailer, from the settings
            counter = StatementCounter(core.database.engine)
            worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
            worker.start()
            try:
                print(f"    sending through a worker of {threads} threads...", flush=True)
                started = time.perf_counter()
                summary = app.run_job("token-expiry-scan")
                scan_seconds = time.perf_counter() - started
                if not summary.startswith(f"token-expiry-scan: {count} token"):
                    raise SystemExit(f"unexpected scan result: {summary}")
                if not inbox.complete.wait(timeout):
                    print(f"    only {inbox.count} of {count} emails within {timeout:g} s")
                seconds = (inbox.last_at or time.perf_counter()) - started
                settle(broker, worker, timeout)
                time.sleep(1.0)  # a late duplicate would show up here
            finally:
                worker.stop(timeout=10_000)
                counter.close()
            with core.database.engine.connect() as connection:
                sent = connection.execute(
                    text("SELECT count(*) FROM notifications WHERE state = 'sent'")
                ).scalar_one()
            app.close()
            core.close()
    finally:
        controller.stop()
    return EmailResult(
        emails=count,
        threads=threads,
        scan_seconds=scan_seconds,
        seconds=seconds,
        received=inbox.count,
        recipients=len(inbox.recipients),
        duplicates=sum(n - 1 for n in inbox.message_ids.values() if n > 1)
        + sum(n - 1 for n in inbox.recipients.values() if n > 1),
        sent_in_log=sent,
        statements=counter.statements,
    )


def report_emails(r: EmailResult) -> None:
    print("\n(b) emails through the worker to aiosmtpd on loopback (in-process broker)")
    print(
        f"{'emails':>7} {'threads':>7} {'scan s':>7} {'total s':>8} {'emails/s':>9} "
        f"{'received':>8} {'recipients':>10} {'duplicates':>10} {'sent in log':>11} "
        f"{'SQL/email':>9}"
    )
    print(
        f"{r.emails:7,} {r.threads:7} {r.scan_seconds:7.2f} {r.seconds:8.2f} "
        f"{r.received / r.seconds:9.1f} {r.received:8,} {r.recipients:10,} {r.duplicates:10} "
        f"{r.sent_in_log:11,} {r.statements / r.emails:9.1f}"
    )
    ok = r.received == r.recipients == r.sent_in_log == r.emails and not r.duplicates
    print(f"  every email arrived exactly once: {'yes' if ok else 'NO'}")


# --- the run ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--tokens",
        default="10000,100000",
        help="token counts for the scan, comma-separated (0 or empty: skip the scan)",
    )
    parser.add_argument(
        "--history",
        type=float,
        default=1.0,
        help="tokens that ran out days ago and were told about then, per token scanned, so "
        "token_notices has rows and statistics as in a running system (0: start empty)",
    )
    parser.add_argument("--emails", type=int, default=1000, help="emails to send (0: skip)")
    parser.add_argument("--threads", type=int, default=4, help="worker threads for the emails")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the emails"
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "ZENZEFI_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server to make the throwaway databases on",
    )
    parser.add_argument("--keep-database", action="store_true", help="do not drop them at the end")
    args = parser.parse_args(argv)
    sizes = [int(part) for part in args.tokens.split(",") if part.strip() and int(part)]
    logging.basicConfig(level=logging.WARNING)

    scans = [
        scan(args.postgres, size, int(size * args.history), args.keep_database) for size in sizes
    ]
    mailed = None
    if args.emails:
        mailed = emails(args.postgres, args.emails, args.threads, args.keep_database, args.timeout)

    if scans:
        report_scan(scans)
        print(f"  (one job run handles at most {MAX_BATCHES_PER_RUN} batches)")
    if mailed:
        report_emails(mailed)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\n({os.cpu_count()} CPUs; load average {load})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
