"""Usage analytics on PostgreSQL with two million proxy sessions: the API beside one raw SQL
statement computing the same figures, and beside the product document's way (load the rows,
sum in Python), in one run.

    python bench/analytics.py [--sessions 2000000] [--users 2000] [--repeat 20]
    python bench/analytics.py --sessions 1000000      # the size issue 15's ratios are set for

What it does:

1. Drops and creates the database `--database` (default `zenzefi_bench_analytics`) on the
   PostgreSQL server (`--postgres`, default `postgresql://postgres@127.0.0.1:5432/postgres`),
   migrates it with the project's migrations and fills it by set-based SQL (`INSERT ... SELECT
   generate_series`): `--users` users created over the last 90 days, a third of the later ones
   referred by one of the first 200; `--sessions` proxy sessions over the last 30 days, ten per
   access token, one user (the heavy one) holding a twentieth of them (100,000 of 2,000,000);
   one token in ten never used, half of those refunded; a bundle purchase per 40 tokens; the
   ledger that paid for all of it (deposits, purchases, refunds, referral bonuses and their
   clawbacks, with running balances that `zenzefi check-ledger` accepts), then `VACUUM
   ANALYZE`. A superuser and the heavy user log in with `PASSWORD`.
2. Starts the API on that database in a process of its own (`create_app` under uvicorn, as
   `zenzefi serve` runs it but without the embedded worker and scheduler, so that no job
   changes the data while it is measured) and times, over keep-alive HTTP,
   `GET /api/v1/analytics/usage` as the heavy user and
   `GET /api/v1/analytics/admin/global-stats` as the superuser, for each period: `--repeat`
   calls after `--warmup` unmeasured ones, median and 95th percentile. In turns with each
   call it times one raw SQL statement computing the same figures (`RAW_USAGE`,
   `RAW_GLOBAL`: psycopg on a connection of its own, never prepared, every bucket and total,
   the live counts, the active and top users), so that the ratio of the two holds however
   busy the machine is.
3. Computes the same figures the product document's way (`PHASE_FUTURE.md`, stage 3.5): the
   rows selected with SQLAlchemy Core, every column as the document's `query(...).all()`
   loads them, and summed, bucketed and ranked in Python; timed the same way
   (`--baseline-repeat` calls).
4. Prints a table with the milliseconds, the API's time over the raw statement's and the
   speed-up over loading rows, then checks that all three ways agree on every number of every
   response (for the window the API reported) and exits 1 if they do not, or 2 if a target is
   missed (`--no-targets` to report without failing). The database is dropped at the end.

`--keep-database` keeps the database, `--reuse-database` measures a kept one again, and
`--api-only` leaves out loading the rows (the API and the raw statement are still timed and
compared): together they compare two versions of the queries on the same data in a minute.
`--py-spy FILE` runs the API under py-spy and writes its sampled stacks to FILE; with
`--only usage|global` and `--periods month` it profiles one figure alone, e.g.

    python bench/analytics.py --sessions 1000000 --reuse-database --api-only \
        --only usage --periods month --repeat 300 --py-spy usage.txt

Targets, on the medians: issue 8, the heavy user's month under 50 ms, global-stats month under
1 s, each at least 20 times faster than loading the rows; issue 15, the heavy user's month
within 2x of the raw statement, global-stats month within 1.5x.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
from sqlalchemy import Connection, Engine, Table, func, make_url, or_, select, text

from support import CpuMeter, free_port, login, postgres_pids
from zenzefi_core.adapters.sqlalchemy import make_engine, upgrade
from zenzefi_core.adapters.sqlalchemy.tables import (
    access_tokens,
    proxy_sessions,
    transactions,
    users,
)
from zenzefi_core.security import fast_password_hasher

if TYPE_CHECKING:
    from litestar import Litestar

PASSWORD = "bench password 1"  # noqa: S105 - throwaway accounts in a throwaway database
ADMIN_EMAIL = "admin@bench.example"
USAGE_PATH = "/api/v1/analytics/usage"
GLOBAL_PATH = "/api/v1/analytics/admin/global-stats"
HEAVY_EMAIL = "user1@bench.example"
SESSIONS_PER_TOKEN = 10
#: The heavy user's share of the sessions: 100,000 of 2,000,000.
HEAVY_SHARE = 20
#: One token never used per this many tokens with sessions, and one bundle purchase per
#: `BUNDLE_EVERY` of them.
UNUSED_EVERY = 10
BUNDLE_EVERY = 40
#: Users 1 .. REFERRERS may refer others; a third of the later users were referred.
REFERRERS = 200
REFERRAL_PERCENT = 10
DEPOSIT = 1_000_000


def uid(kind: int, number: str) -> str:
    """SQL for a deterministic UUID: `kind` says which table, `number` (an SQL expression) which
    row, so that rows of one table can name rows of another without a lookup."""
    return f"('{kind:08x}-0000-4000-8000-' || lpad(to_hex({number}), 12, '0'))::uuid"


# Kinds of ids, one per table (and per cause of a ledger entry).
USER, TOKEN, SESSION, BUNDLE, BUNDLE_PURCHASE, BONUS = 1, 2, 3, 4, 5, 6
TX_DEPOSIT, TX_TOKEN, TX_BUNDLE, TX_REFUND, TX_BONUS_TOKEN, TX_BONUS_BUNDLE, TX_CLAWBACK = (
    0x71,
    0x72,
    0x73,
    0x74,
    0x75,
    0x76,
    0x77,
)


@dataclass(frozen=True)
class Shape:
    """How much data to make; everything else follows from these two."""

    users: int
    sessions: int

    @property
    def heavy_sessions(self) -> int:
        return self.sessions // HEAVY_SHARE

    @property
    def tokens(self) -> int:
        """Tokens with sessions (ten sessions each, the last one possibly short)."""
        return math.ceil(self.sessions / SESSIONS_PER_TOKEN)

    @property
    def heavy_tokens(self) -> int:
        return math.ceil(self.heavy_sessions / SESSIONS_PER_TOKEN)

    @property
    def unused_tokens(self) -> int:
        return self.tokens // UNUSED_EVERY

    @property
    def bundle_purchases(self) -> int:
        return max(1, self.tokens // BUNDLE_EVERY)


# --- seeding -----------------------------------------------------------------------------------

# Durations by token number modulo 10, with the default prices: mostly days and half-days.
DURATIONS = """(VALUES (0, 24, 18.00), (1, 24, 18.00), (2, 24, 18.00), (3, 24, 18.00),
        (4, 12, 10.00), (5, 12, 10.00), (6, 12, 10.00), (7, 1, 1.00), (8, 168, 100.00),
        (9, 720, 300.00)) AS d(k, hours, price)"""

# Three bundles whose prices split into equal cents, so every share is the same.
BUNDLES = f"""
INSERT INTO token_bundles (id, name, description, token_count, duration_hours, scope,
                           discount_percent, base_price, total_price, is_active, created_at)
SELECT {uid(BUNDLE, "k")}, name, NULL, count, hours, 'full', discount, base, total, true,
       :now - interval '120 days'
FROM (VALUES (0, 'Five days', 5, 24, 10.00, 90.00, 81.00),
             (1, 'Ten half-days', 10, 12, 15.00, 100.00, 85.00),
             (2, 'Three weeks', 3, 168, 20.00, 300.00, 240.00))
     AS b(k, name, count, hours, discount, base, total)
"""  # noqa: S608 - built from this module's constants, no input

# Users 1 .. :users, created evenly over the last 90 days (user 1 first: the heavy one);
# `floor_at` is when each may start buying within the last 30 days.
USERS = f"""
CREATE TEMP TABLE b_users ON COMMIT DROP AS
SELECT n, {uid(USER, "n")} AS id, created_at,
       greatest(created_at, :now - interval '30 days') + interval '1 hour' AS floor_at,
       CASE WHEN n > {REFERRERS} AND n % 3 = 0
            THEN {uid(USER, f"1 + (n * 7) % {REFERRERS}")} END AS referrer_id
FROM (SELECT n, :now - interval '90 days' + (n - 1) * (interval '89 days' / :users) AS created_at
      FROM generate_series(1, :users) AS n) AS u;
CREATE UNIQUE INDEX ON b_users (n);
INSERT INTO users (id, email, username, username_lower, password_hash, full_name,
                   referral_code, referred_by_id, is_active, is_superuser, balance, created_at)
SELECT id, 'user' || n || '@bench.example', 'user' || n, 'user' || n, :password_hash, NULL,
       'B' || lpad(n::text, 11, '0'), referrer_id, true, false, 0, created_at
FROM b_users
UNION ALL
SELECT {uid(USER, "0")}, '{ADMIN_EMAIL}', 'admin', 'admin', :password_hash, NULL,
       'A00000000000', NULL, true, true, 0, :now - interval '120 days';
"""  # noqa: S608 - built from this module's constants, no input

# Tokens 1 .. :tokens carry the sessions: the heavy user's first, then round-robin over the
# others. Each was bought up to an hour before its first use, somewhere in the last 30 days.
SESSION_TOKENS = f"""
CREATE TEMP TABLE b_tokens ON COMMIT DROP AS
SELECT t, user_id, referrer_id, hours, price, activated_at,
       activated_at - r * interval '1 hour' AS created_at,
       activated_at + hours * interval '1 hour' AS expires_at
FROM (SELECT t, u.id AS user_id, u.referrer_id, d.hours, d.price::numeric(18, 2) AS price,
             u.floor_at + random() * (:now - interval '5 minutes' - u.floor_at) AS activated_at,
             random() AS r
      FROM generate_series(1, :tokens) AS t
      JOIN b_users AS u
        ON u.n = CASE WHEN t <= :heavy_tokens THEN 1
                      ELSE 2 + (t - :heavy_tokens - 1) % (:users - 1) END
      JOIN {DURATIONS} ON d.k = t % 10
      OFFSET 0) AS bought;
CREATE UNIQUE INDEX ON b_tokens (t);
INSERT INTO access_tokens (id, user_id, token_hash, token_prefix, duration_hours, scope,
                           price_paid, bundle_purchase_id, created_at, activated_at, expires_at,
                           revoked_at)
SELECT {uid(TOKEN, "t")}, user_id, encode(sha256(('bench-token-' || t)::bytea), 'hex'),
       'bt' || t, hours, 'full', price, NULL, created_at, activated_at, expires_at, NULL
FROM b_tokens;
"""  # noqa: S608 - built from this module's constants, no input

# Ten sessions per token, spread over the token's life so far, each one a slice of it. The
# last session of one in four tokens still running is open, seen in the last half minute.
SESSIONS = f"""
CREATE TEMP TABLE b_sessions ON COMMIT DROP AS
SELECT s, (s - 1) / {SESSIONS_PER_TOKEN} + 1 AS t, (s - 1) % {SESSIONS_PER_TOKEN} AS k,
       random() AS r1, random() AS r2, random() AS r3, random() AS r4
FROM generate_series(1, :sessions) AS s;
INSERT INTO proxy_sessions (id, token_id, user_id, device_id, started_at, last_activity,
                            ended_at, request_count, bytes_in, bytes_out, ip, user_agent)
SELECT {uid(SESSION, "s.s")}, {uid(TOKEN, "s.t")}, tk.user_id, 'device-' || (s.t % 3),
       x.started_at,
       CASE WHEN x.open THEN :now - s.r2 * interval '30 seconds' ELSE x.ended_at END,
       CASE WHEN x.open THEN NULL ELSE x.ended_at END,
       x.requests, x.requests * (200 + (s.r3 * 600)::int),
       x.requests * (1000 + (s.r4 * 50000)::int), '10.0.' || (s.t % 250) || '.' || (s.k + 1),
       'Mozilla/5.0 (bench)'
FROM b_sessions AS s
JOIN b_tokens AS tk ON tk.t = s.t
CROSS JOIN LATERAL (
    SELECT least(tk.hours * interval '1 hour', :now - tk.activated_at)
           / {SESSIONS_PER_TOKEN} AS slot
) AS span
CROSS JOIN LATERAL (
    SELECT tk.activated_at + span.slot * (s.k + 0.5 * s.r1) AS started_at,
           tk.activated_at + span.slot * (s.k + 0.5 * s.r1 + 0.45 * s.r2)
               + interval '1 second' AS ended_at,
           s.k = {SESSIONS_PER_TOKEN - 1} AND tk.expires_at > :now AND s.t % 4 = 0 AS open,
           1 + (s.r3 * s.r4 * 4000)::int AS requests
) AS x;
"""  # noqa: S608 - built from this module's constants, no input

# Tokens never used: bought in the last 30 days; every other one refunded since.
UNUSED_TOKENS = f"""
CREATE TEMP TABLE b_unused ON COMMIT DROP AS
SELECT j, t, user_id, referrer_id, hours, price, created_at,
       CASE WHEN j % 2 = 0
            THEN created_at + r * (:now - interval '1 minute' - created_at) END AS revoked_at
FROM (SELECT j, :tokens + j AS t, u.id AS user_id, u.referrer_id, d.hours,
             d.price::numeric(18, 2) AS price,
             u.floor_at + random() * (:now - interval '10 minutes' - u.floor_at) AS created_at,
             random() AS r
      FROM generate_series(1, :unused) AS j
      JOIN b_users AS u ON u.n = 1 + (j * 13) % :users
      JOIN {DURATIONS} ON d.k = j % 10
      OFFSET 0) AS bought;
INSERT INTO access_tokens (id, user_id, token_hash, token_prefix, duration_hours, scope,
                           price_paid, bundle_purchase_id, created_at, activated_at, expires_at,
                           revoked_at)
SELECT {uid(TOKEN, "t")}, user_id, encode(sha256(('bench-token-' || t)::bytea), 'hex'),
       'bt' || t, hours, 'full', price, NULL, created_at, NULL, NULL, revoked_at
FROM b_unused;
"""  # noqa: S608 - built from this module's constants, no input

# Bundle purchases, each with its tokens (not used yet).
BUNDLE_PURCHASES = f"""
CREATE TEMP TABLE b_bundles ON COMMIT DROP AS
SELECT b, u.id AS user_id, u.referrer_id, tb.id AS bundle_id, tb.name, tb.token_count,
       tb.duration_hours, tb.total_price,
       u.floor_at + random() * (:now - interval '10 minutes' - u.floor_at) AS created_at
FROM generate_series(1, :bundle_purchases) AS b
JOIN b_users AS u ON u.n = 1 + (b * 17) % :users
JOIN token_bundles AS tb ON tb.id = {uid(BUNDLE, "b % 3")};
INSERT INTO bundle_purchases (id, user_id, bundle_id, bundle_name, token_count, duration_hours,
                              scope, total_price, created_at)
SELECT {uid(BUNDLE_PURCHASE, "b")}, user_id, bundle_id, name, token_count, duration_hours,
       'full', total_price, created_at
FROM b_bundles;
INSERT INTO access_tokens (id, user_id, token_hash, token_prefix, duration_hours, scope,
                           price_paid, bundle_purchase_id, created_at, activated_at, expires_at,
                           revoked_at)
SELECT {uid(TOKEN, "x.t")}, b.user_id, encode(sha256(('bench-token-' || x.t)::bytea), 'hex'),
       'bt' || x.t, b.duration_hours, 'full', b.total_price / b.token_count,
       {uid(BUNDLE_PURCHASE, "b.b")}, b.created_at, NULL, NULL, NULL
FROM b_bundles AS b
CROSS JOIN LATERAL generate_series(1, b.token_count) AS i
CROSS JOIN LATERAL (SELECT :tokens + :unused + (b.b - 1) * 10 + i AS t) AS x;
"""  # noqa: S608 - built from this module's constants, no input

# The ledger: every purchase, refund, referral bonus and clawback, then deposits made when each
# user registered, enough for all of it; running balances by user in time order.
LEDGER = f"""
CREATE TEMP TABLE b_tx (
    id uuid, user_id uuid, amount numeric(18, 2), transaction_type text, description text,
    reference_type text, reference_id text, created_at timestamptz
) ON COMMIT DROP;
INSERT INTO b_tx
SELECT {uid(TX_TOKEN, "t")}, user_id, -price, 'purchase',
       'Access token: ' || hours || ' h, full', 'token', {uid(TOKEN, "t")}::text, created_at
FROM (SELECT t, user_id, price, hours, created_at FROM b_tokens
      UNION ALL SELECT t, user_id, price, hours, created_at FROM b_unused) AS bought;
INSERT INTO b_tx
SELECT {uid(TX_BUNDLE, "b")}, user_id, -total_price, 'purchase',
       'Bundle purchase: ' || name || ' (' || token_count || ' tokens)', 'bundle_purchase',
       {uid(BUNDLE_PURCHASE, "b")}::text, created_at
FROM b_bundles;
INSERT INTO b_tx
SELECT {uid(TX_REFUND, "t")}, user_id, price, 'refund', 'Refund of unused access token bt' || t,
       'token', {uid(TOKEN, "t")}::text, revoked_at
FROM b_unused WHERE revoked_at IS NOT NULL;
CREATE TEMP TABLE b_bonus ON COMMIT DROP AS
SELECT {uid(BONUS, "t")} AS id, {uid(TX_BONUS_TOKEN, "t")} AS tx_id, referrer_id, user_id,
       'token' AS purchase_type, {uid(TOKEN, "t")} AS purchase_id, price AS purchase_amount,
       round(price * {REFERRAL_PERCENT} / 100, 2) AS amount, created_at, revoked_at,
       {uid(TX_CLAWBACK, "t")} AS clawback_id
FROM (SELECT t, user_id, referrer_id, price, created_at, NULL::timestamptz AS revoked_at
      FROM b_tokens
      UNION ALL SELECT t, user_id, referrer_id, price, created_at, revoked_at FROM b_unused)
     AS bought
WHERE referrer_id IS NOT NULL
UNION ALL
SELECT {uid(BONUS, "1000000000 + b")}, {uid(TX_BONUS_BUNDLE, "b")}, referrer_id, user_id,
       'bundle_purchase', {uid(BUNDLE_PURCHASE, "b")}, total_price,
       round(total_price * {REFERRAL_PERCENT} / 100, 2), created_at, NULL, NULL
FROM b_bundles WHERE referrer_id IS NOT NULL;
INSERT INTO b_tx
SELECT b.tx_id, b.referrer_id, b.amount, 'referral_bonus',
       'Referral bonus from ' || u.username, b.purchase_type, b.purchase_id::text, b.created_at
FROM b_bonus AS b JOIN users AS u ON u.id = b.user_id;
INSERT INTO b_tx
SELECT clawback_id, referrer_id, -amount, 'referral_clawback',
       'Referral bonus reversed: the purchase it came from was refunded', 'token',
       purchase_id::text, revoked_at
FROM b_bonus WHERE revoked_at IS NOT NULL;
INSERT INTO b_tx
SELECT {uid(TX_DEPOSIT, "u.n * 1000 + k")}, u.id, ceil((s.spent + 100) / c.count / 100) * 100,
       'deposit', 'Deposit', 'bench_deposit', 'bench-deposit-' || u.n || '-' || k,
       u.created_at + k * interval '1 millisecond'
FROM b_users AS u
LEFT JOIN (SELECT user_id, -sum(amount) AS spent FROM b_tx WHERE amount < 0 GROUP BY user_id)
     AS spending ON spending.user_id = u.id
CROSS JOIN LATERAL (SELECT coalesce(spending.spent, 0) AS spent) AS s
CROSS JOIN LATERAL (SELECT 1 + floor(s.spent / {DEPOSIT})::int AS count) AS c
CROSS JOIN LATERAL generate_series(1, c.count) AS k;
INSERT INTO transactions (id, user_id, amount, balance_after, transaction_type, description,
                          reference_type, reference_id, created_at)
SELECT id, user_id, amount,
       sum(amount) OVER (PARTITION BY user_id ORDER BY created_at, id ROWS UNBOUNDED PRECEDING),
       transaction_type, description, reference_type, reference_id, created_at
FROM b_tx;
INSERT INTO referral_bonuses (id, referrer_id, referee_id, purchase_type, purchase_id,
                              purchase_amount, amount, clawed_back, shortfall, transaction_id,
                              created_at)
SELECT id, referrer_id, user_id, purchase_type, purchase_id, purchase_amount, amount,
       CASE WHEN revoked_at IS NULL THEN 0 ELSE amount END, 0, tx_id, created_at
FROM b_bonus;
UPDATE users SET balance = t.total
FROM (SELECT user_id, sum(amount) AS total FROM b_tx GROUP BY user_id) AS t
WHERE users.id = t.user_id;
"""  # noqa: S608 - built from this module's constants, no input


def _run(connection: Connection, script: str, params: dict[str, object]) -> None:
    for statement in script.split(";\n"):
        if statement.strip():
            connection.execute(text(statement), params)


#: Tables whose secondary indexes are dropped while they are filled and built afterwards: one
#: sort per index instead of two million scattered inserts into each.
BULK_TABLES = ("proxy_sessions", "access_tokens", "transactions")

SECONDARY_INDEXES = """
SELECT i.indexname, i.indexdef FROM pg_indexes AS i
WHERE i.schemaname = current_schema() AND i.tablename = ANY(:tables)
  AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c
                  WHERE c.conindid = (quote_ident(i.schemaname) || '.'
                                      || quote_ident(i.indexname))::regclass)
"""

# Every reference the bulk load made, checked at once since the load skipped the per-row checks.
DANGLING = """
SELECT (SELECT count(*) FROM proxy_sessions AS s
        WHERE NOT EXISTS (SELECT 1 FROM access_tokens AS t
                          WHERE t.id = s.token_id AND t.user_id = s.user_id))
     + (SELECT count(*) FROM access_tokens AS t
        WHERE NOT EXISTS (SELECT 1 FROM users AS u WHERE u.id = t.user_id)
           OR (t.bundle_purchase_id IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM bundle_purchases AS b
                               WHERE b.id = t.bundle_purchase_id)))
     + (SELECT count(*) FROM transactions AS x
        WHERE NOT EXISTS (SELECT 1 FROM users AS u WHERE u.id = x.user_id))
     + (SELECT count(*) FROM referral_bonuses AS r
        WHERE NOT EXISTS (SELECT 1 FROM transactions AS x WHERE x.id = r.transaction_id)
           OR NOT EXISTS (SELECT 1 FROM users AS u WHERE u.id = r.referrer_id)
           OR NOT EXISTS (SELECT 1 FROM users AS u WHERE u.id = r.referee_id))
     + (SELECT count(*) FROM bundle_purchases AS b
        WHERE NOT EXISTS (SELECT 1 FROM users AS u WHERE u.id = b.user_id)
           OR NOT EXISTS (SELECT 1 FROM token_bundles AS k WHERE k.id = b.bundle_id))
     + (SELECT count(*) FROM users AS u
        WHERE u.referred_by_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM users AS r WHERE r.id = u.referred_by_id))
"""


def seed(engine: Engine, shape: Shape, now: datetime) -> dict[str, float]:
    """Fill a migrated, empty database; returns the seconds each step took.

    The foreign-key triggers are off during the load (`session_replication_role = replica`, as
    a restore does) and the secondary indexes of the big tables are built after it: with both
    on, two million sessions took 95 s to load, without them 34 s (on a shared 2-core machine).
    The references are checked in one query at the end instead, and the load fails if any
    dangles.
    """
    params: dict[str, object] = {
        "now": now,
        "users": shape.users,
        "sessions": shape.sessions,
        "tokens": shape.tokens,
        "heavy_tokens": shape.heavy_tokens,
        "unused": shape.unused_tokens,
        "bundle_purchases": shape.bundle_purchases,
        "password_hash": fast_password_hasher().hash(PASSWORD),
    }
    steps = {
        "users": BUNDLES + ";\n" + USERS,
        "tokens": SESSION_TOKENS,
        "sessions": SESSIONS,
        "unused tokens": UNUSED_TOKENS,
        "bundles": BUNDLE_PURCHASES,
        "ledger": LEDGER,
    }
    took: dict[str, float] = {}
    with engine.begin() as connection:
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
        connection.execute(text("SELECT setseed(0.42)"))
        indexes = connection.execute(text(SECONDARY_INDEXES), {"tables": list(BULK_TABLES)}).all()
        for name, _ in indexes:
            connection.execute(text(f'DROP INDEX "{name}"'))
        for name, script in steps.items():
            started = time.perf_counter()
            _run(connection, script, params)
            took[name] = time.perf_counter() - started
        started = time.perf_counter()
        for _, definition in indexes:
            connection.execute(text(definition))
        took["indexes"] = time.perf_counter() - started
        started = time.perf_counter()
        dangling = connection.execute(text(DANGLING)).scalar_one()
        if dangling:
            raise SystemExit(f"the bulk load left {dangling} dangling reference(s)")
        took["reference check"] = time.perf_counter() - started
    started = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))
    took["vacuum analyze"] = time.perf_counter() - started
    return took


def fresh_database(server_url: str, name: str) -> str:
    """Drop `name` on the server if it is there and create it empty; returns its URL."""
    admin = make_engine(server_url, isolation_level="AUTOCOMMIT", pool_size=1)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return admin.url.set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    admin = make_engine(server_url, isolation_level="AUTOCOMMIT", pool_size=1)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


# --- the product document's way: load the rows, sum in Python --------------------------------

PERIODS = ("day", "week", "month")
WIDTHS = {"day": (timedelta(hours=1), 24), "week": (timedelta(days=1), 7),
          "month": (timedelta(days=1), 30)}  # fmt: skip
DAY = timedelta(hours=24)
TOP = 10
MICROSECOND = timedelta(microseconds=1)
CENTS = Decimal("0.01")


@dataclass(frozen=True)
class Span:
    """A report's window, `count` buckets of `width` ending at `end`."""

    period: str
    end: datetime
    width: timedelta
    count: int

    @classmethod
    def ending(cls, period: str, end: datetime) -> Span:
        width, count = WIDTHS[period]
        return cls(period, end, width, count)

    @property
    def start(self) -> datetime:
        return self.end - self.width * self.count

    def index(self, moment: datetime) -> int:
        return (moment - self.start) // self.width

    def edges(self, number: int) -> tuple[datetime, datetime]:
        return self.start + self.width * number, self.start + self.width * (number + 1)


def _money(amount: Decimal) -> str:
    return f"{amount.quantize(CENTS):.2f}"


def usage_from_rows(connection: Connection, user_id: uuid.UUID, span: Span) -> dict[str, Any]:
    """`GET /analytics/usage` computed as the product document does: every session of the
    window loaded, then summed and bucketed here; the live counts with `COUNT(*)` as there."""
    now = span.end
    s = proxy_sessions.c
    rows = connection.execute(
        select(proxy_sessions).where(
            s.user_id == user_id, s.started_at >= span.start, s.started_at < span.end
        )
    ).all()
    series: list[dict[str, Any]] = [
        {"start": a, "end": b, "requests": 0, "bytes_transferred": 0, "sessions": 0}
        for a, b in map(span.edges, range(span.count))
    ]
    lasted = 0
    for row in rows:
        point = series[span.index(row.started_at)]
        point["requests"] += row.request_count
        point["bytes_transferred"] += row.bytes_in + row.bytes_out
        point["sessions"] += 1
        until = now if row.ended_at is None else min(row.ended_at, now)
        lasted += (until - row.started_at) // MICROSECOND
    open_sessions = connection.execute(
        select(func.count()).where(s.user_id == user_id, s.ended_at.is_(None))
    ).scalar_one()
    t = access_tokens.c
    usable = connection.execute(
        select(func.count()).where(
            t.user_id == user_id,
            t.revoked_at.is_(None),
            or_(t.expires_at.is_(None), t.expires_at > now),
        )
    ).scalar_one()
    average = (Decimal(lasted) / len(rows) / 60_000_000 if rows else Decimal(0)).quantize(CENTS)
    return {
        "period": span.period,
        "start_time": span.start,
        "end_time": span.end,
        "bucket": "hour" if span.width == timedelta(hours=1) else "day",
        "total_requests": sum(row.request_count for row in rows),
        "total_bytes_transferred": sum(row.bytes_in + row.bytes_out for row in rows),
        "active_sessions": open_sessions,
        "active_tokens": usable,
        "avg_session_duration_minutes": float(average),
        "series": series,
    }


def global_from_rows(connection: Connection, span: Span) -> dict[str, Any]:
    """`GET /analytics/admin/global-stats` computed the same way: the window's new users,
    ledger entries and sessions loaded row by row and counted, summed and ranked here."""
    zero = Decimal("0.00")
    series: list[dict[str, Any]] = [
        {"start": a, "end": b, "new_users": 0, "token_purchases": 0, "bundle_purchases": 0,
         "revenue_znc": zero, "refunds_znc": zero, "referral_bonuses_paid_znc": zero,
         "proxy_requests": 0, "bytes_transferred": 0, "active_users": set()}
        for a, b in map(span.edges, range(span.count))
    ]  # fmt: skip
    u, x, s = users.c, transactions.c, proxy_sessions.c
    for row in connection.execute(
        select(users).where(u.created_at >= span.start, u.created_at < span.end)
    ):
        series[span.index(row.created_at)]["new_users"] += 1
    for row in connection.execute(
        select(transactions).where(x.created_at >= span.start, x.created_at < span.end)
    ):
        point = series[span.index(row.created_at)]
        if row.transaction_type == "purchase":
            point["revenue_znc"] -= row.amount
            if row.reference_type == "token":
                point["token_purchases"] += 1
            elif row.reference_type == "bundle_purchase":
                point["bundle_purchases"] += 1
        elif row.transaction_type == "refund":
            point["refunds_znc"] += row.amount
        elif row.transaction_type == "referral_bonus":
            point["referral_bonuses_paid_znc"] += row.amount
    by_user: dict[uuid.UUID, list[int]] = {}
    daily: set[uuid.UUID] = set()
    for row in connection.execute(
        select(proxy_sessions).where(s.started_at >= span.start, s.started_at < span.end)
    ):
        point = series[span.index(row.started_at)]
        moved = row.bytes_in + row.bytes_out
        point["proxy_requests"] += row.request_count
        point["bytes_transferred"] += moved
        point["active_users"].add(row.user_id)
        totals = by_user.setdefault(row.user_id, [0, 0])
        totals[0] += row.request_count
        totals[1] += moved
        if row.started_at >= span.end - DAY:
            daily.add(row.user_id)
    ranked = sorted(by_user.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))[:TOP]
    emails = dict(
        connection.execute(
            select(u.id, u.email).where(u.id.in_([user_id for user_id, _ in ranked]))
        ).all()
    )
    for point in series:
        point["active_users"] = len(point["active_users"])
    report = _global_totals(span, series)
    report["active_users"] = len(by_user)
    report["daily_active_users"] = len(daily)
    report["top_users"] = [
        {"user_id": user_id, "email": emails[user_id], "requests": requests,
         "bytes_transferred": moved}
        for user_id, (requests, moved) in ranked
    ]  # fmt: skip
    return report


def _global_totals(span: Span, series: list[dict[str, Any]]) -> dict[str, Any]:
    """The global report's window, totals and series (amounts as the API's strings) from its
    buckets; the active and top users are the caller's to add."""
    report: dict[str, Any] = {
        "period": span.period,
        "start_time": span.start,
        "end_time": span.end,
        "bucket": "hour" if span.width == timedelta(hours=1) else "day",
    }
    for name, total in (("new_users", "new_users"), ("token_purchases", "token_purchases"),
                        ("bundle_purchases", "bundle_purchases"), ("revenue_znc", "revenue_znc"),
                        ("refunds_znc", "refunds_znc"),
                        ("referral_bonuses_paid_znc", "referral_bonuses_paid_znc"),
                        ("proxy_requests", "total_proxy_requests"),
                        ("bytes_transferred", "total_bytes_transferred")):  # fmt: skip
        report[total] = sum((point[name] for point in series), type(series[0][name])())
    for point in series:
        for name in ("revenue_znc", "refunds_znc", "referral_bonuses_paid_znc"):
            point[name] = _money(point[name])
    for name in ("revenue_znc", "refunds_znc", "referral_bonuses_paid_znc"):
        report[name] = _money(report[name])
    report["series"] = series
    return report


# --- one raw SQL statement: what the database alone takes ------------------------------------

# The heavy user's buckets, each its own range of the `(user_id, started_at)` index, with the
# live counts beside them: everything `GET /analytics/usage` reports, in one statement.
RAW_USAGE = """
SELECT e.i - 1, p.requests, p.moved, p.sessions, p.lasted, live.open_sessions, live.usable
FROM unnest(%(lo)s::timestamptz[], %(hi)s::timestamptz[]) WITH ORDINALITY AS e(lo, hi, i)
CROSS JOIN LATERAL (
    SELECT sum(request_count) AS requests, sum(bytes_in + bytes_out) AS moved,
           count(*) AS sessions,
           sum(round(date_part('epoch', least(coalesce(ended_at, %(now)s), %(now)s)
                                        - started_at) * 1000000)::bigint) AS lasted
    FROM proxy_sessions
    WHERE user_id = %(user)s AND started_at >= e.lo AND started_at < e.hi
) AS p
CROSS JOIN (
    SELECT (SELECT count(*) FROM proxy_sessions
            WHERE user_id = %(user)s AND ended_at IS NULL) AS open_sessions,
           (SELECT count(*) FROM access_tokens
            WHERE user_id = %(user)s AND revoked_at IS NULL
              AND (expires_at IS NULL OR expires_at > %(now)s)) AS usable
) AS live
"""

# Every figure of `GET /analytics/admin/global-stats` in one statement: per bucket the new
# users, the ledger (its `(transaction_type, created_at)` index) and the sessions summed per
# user; those per-user sums rolled up into the buckets and, ranked, into the top users, whose
# rows also carry the window's and the last 24 hours' distinct users.
RAW_GLOBAL = """
WITH edges AS MATERIALIZED (
    SELECT i - 1 AS i, lo, hi
    FROM unnest(%(lo)s::timestamptz[], %(hi)s::timestamptz[]) WITH ORDINALITY AS e(lo, hi, i)
), per AS MATERIALIZED (
    SELECT e.i, p.user_id, p.requests, p.moved
    FROM edges AS e
    CROSS JOIN LATERAL (
        SELECT user_id, sum(request_count) AS requests, sum(bytes_in + bytes_out) AS moved
        FROM proxy_sessions WHERE started_at >= e.lo AND started_at < e.hi
        GROUP BY user_id
    ) AS p
), ranked AS (
    SELECT user_id, sum(requests) AS requests, sum(moved) AS moved,
           count(*) OVER () AS active,
           sum(CASE WHEN max(i) >= %(daily_from)s THEN 1 ELSE 0 END) OVER () AS daily
    FROM per GROUP BY user_id
)
SELECT e.i, nu.n, l.tokens, l.bundles, l.revenue, l.refunds, l.bonuses, px.requests,
       px.moved, px.users, NULL::uuid, NULL::text
FROM edges AS e
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM users WHERE created_at >= e.lo AND created_at < e.hi
) AS nu
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE transaction_type = 'purchase'
                            AND reference_type = 'token') AS tokens,
           count(*) FILTER (WHERE transaction_type = 'purchase'
                            AND reference_type = 'bundle_purchase') AS bundles,
           sum(-amount) FILTER (WHERE transaction_type = 'purchase') AS revenue,
           sum(amount) FILTER (WHERE transaction_type = 'refund') AS refunds,
           sum(amount) FILTER (WHERE transaction_type = 'referral_bonus') AS bonuses
    FROM transactions
    WHERE transaction_type IN ('purchase', 'refund', 'referral_bonus')
      AND created_at >= e.lo AND created_at < e.hi
) AS l
LEFT JOIN (
    SELECT i, sum(requests) AS requests, sum(moved) AS moved, count(*) AS users
    FROM per GROUP BY i
) AS px ON px.i = e.i
UNION ALL
SELECT NULL, r.active, r.daily, NULL, NULL, NULL, NULL, r.requests, r.moved, NULL,
       r.user_id, u.email
FROM (SELECT * FROM ranked ORDER BY requests DESC, moved DESC, user_id LIMIT %(top)s) AS r
JOIN users AS u ON u.id = r.user_id
"""


def _edges(span: Span) -> dict[str, list[datetime]]:
    """The span's bucket bounds, computed here as the core computes them, for `unnest`."""
    bounds = [span.edges(number) for number in range(span.count)]
    return {"lo": [lo for lo, _ in bounds], "hi": [hi for _, hi in bounds]}


def _raw(cursor: psycopg.Cursor[Any], sql: str, params: dict[str, Any]) -> list[Any]:
    # Never prepared, so every call is planned for its own window, as the API's are.
    cursor.execute(sql, params, prepare=False)
    return cursor.fetchall()


def usage_by_sql(cursor: psycopg.Cursor[Any], user_id: uuid.UUID, span: Span) -> dict[str, Any]:
    """`GET /analytics/usage` from `RAW_USAGE`, in the API's shape (to compare answers)."""
    rows = _raw(cursor, RAW_USAGE, {**_edges(span), "now": span.end, "user": user_id})
    series: list[dict[str, Any]] = [
        {"start": a, "end": b, "requests": int(requests or 0),
         "bytes_transferred": int(moved or 0), "sessions": int(sessions)}
        for (a, b), (_, requests, moved, sessions, *_) in zip(
            map(span.edges, range(span.count)), rows, strict=True
        )
    ]  # fmt: skip
    started = sum(point["sessions"] for point in series)
    lasted = sum(int(row[4] or 0) for row in rows)
    average = Decimal(lasted) / started / 60_000_000 if started else Decimal(0)
    return {
        "period": span.period,
        "start_time": span.start,
        "end_time": span.end,
        "bucket": "hour" if span.width == timedelta(hours=1) else "day",
        "total_requests": sum(point["requests"] for point in series),
        "total_bytes_transferred": sum(point["bytes_transferred"] for point in series),
        "active_sessions": int(rows[0][5]),
        "active_tokens": int(rows[0][6]),
        "avg_session_duration_minutes": float(average.quantize(CENTS)),
        "series": series,
    }


def global_by_sql(cursor: psycopg.Cursor[Any], span: Span) -> dict[str, Any]:
    """`GET /analytics/admin/global-stats` from `RAW_GLOBAL`, in the API's shape."""
    daily_from = span.index(span.end - DAY) if span.end - DAY > span.start else 0
    rows = _raw(cursor, RAW_GLOBAL, {**_edges(span), "daily_from": daily_from, "top": TOP})
    buckets = sorted((row for row in rows if row[0] is not None), key=lambda row: row[0])
    top = [row for row in rows if row[0] is None]
    zero = Decimal("0.00")
    series: list[dict[str, Any]] = [
        {"start": a, "end": b, "new_users": int(row[1]), "token_purchases": int(row[2]),
         "bundle_purchases": int(row[3]), "revenue_znc": row[4] or zero,
         "refunds_znc": row[5] or zero, "referral_bonuses_paid_znc": row[6] or zero,
         "proxy_requests": int(row[7] or 0), "bytes_transferred": int(row[8] or 0),
         "active_users": int(row[9] or 0)}
        for (a, b), row in zip(map(span.edges, range(span.count)), buckets, strict=True)
    ]  # fmt: skip
    report = _global_totals(span, series)
    report["active_users"] = int(top[0][1]) if top else 0
    report["daily_active_users"] = int(top[0][2]) if top else 0
    report["top_users"] = [
        {"user_id": row[10], "email": row[11], "requests": int(row[7]),
         "bytes_transferred": int(row[8])}
        for row in sorted(top, key=lambda row: (-row[7], -row[8], row[10]))
    ]  # fmt: skip
    return report


# --- the API ---------------------------------------------------------------------------------


def app() -> Litestar:
    """The app `zenzefi serve` runs, without the embedded worker and scheduler beside it (so
    no job changes the data while it is measured): uvicorn's `--factory` calls this in the
    server process, with the settings in its environment."""
    from zenzefi_api.app import create_app
    from zenzefi_core.settings import Settings

    return create_app(Settings())


def _py_spy() -> str:
    """The py-spy beside this interpreter, or on the PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("--py-spy needs py-spy: `uv pip install py-spy` in this environment")
    return found


def _child(pid: int, timeout: float = 30.0) -> int:
    """The first child of a process (the API under py-spy), once it has started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            if children:
                return int(children[0])
        time.sleep(0.05)
    raise SystemExit("py-spy did not start the API")


@contextlib.contextmanager
def api_server(
    database_url: str, scratch: Path, profile: Path | None = None
) -> Iterator[tuple[str, int]]:
    """The API under uvicorn (uvloop and httptools, as `zenzefi serve`) in its own process;
    yields its base URL and process id. With `profile`, py-spy runs it and writes there, when
    it stops, the API's stacks sampled 500 times a second (collapsed, one stack a line with
    its count: `flamegraph.pl` or speedscope read them); the process id is still the API's,
    so that the CPU figures leave py-spy's own out."""
    port = free_port()
    env = {
        **os.environ,
        "ZENZEFI_DATABASE_URL": database_url,
        "ZENZEFI_DATA_DIR": str(scratch),
        "ZENZEFI_SECRET_KEY": secrets.token_urlsafe(48),
        "ZENZEFI_RATE_LIMIT_ENABLED": "false",
        "ZENZEFI_AUTH_TOKEN_MINUTES": "600",
    }
    env.pop("ZENZEFI_REDIS_URL", None)
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "analytics:app",
        "--app-dir", str(Path(__file__).parent), "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--log-level", "warning", "--no-server-header",
    ]  # fmt: skip
    if profile is not None:
        command = [_py_spy(), "record", "--rate", "500", "--format", "raw", "--nonblocking",
                   "--output", str(profile), "--", *command]  # fmt: skip
    log = (scratch / "server.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log)  # noqa: S603 - ours
    log.close()
    api = process if profile is None else None
    api_pid = process.pid if profile is None else _child(process.pid)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the API exited; see {scratch / 'server.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("the API did not become healthy")
            time.sleep(0.2)
        yield base, api_pid
    finally:
        if api is None:
            # py-spy writes its file when the process it runs ends.
            with contextlib.suppress(ProcessLookupError):
                os.kill(api_pid, signal.SIGTERM)
        else:
            process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


#: Where a sampled stack of the API goes in `profile_summary`: the first group one of whose
#: markers is in the stack (so the inner layers come first).
PROFILE_GROUPS = (
    ("pool checkout with pre-ping", ("_ConnectionFairy._checkout", "Pool.connect")),
    ("rollback at the end", ("Connection.rollback ", "Transaction.rollback")),
    ("BEGIN before the first statement", ("BaseConnection._start_query",)),
    ("account read", ("SqlUserRepository.get",)),
    ("the analytics queries", ("SqlAnalyticsQueries",)),
    ("unit of work, other", ("SqlAlchemyUnitOfWork.",)),
    ("the report (core) and its JSON", ("usage_report", "global_report", "Out.of", "encode_json")),
    ("thread hop", ("sync_to_thread", "ThreadPoolExecutor.submit", "_call_set_state", "run_sync")),
    ("token check", ("bearer_user_id", "TokenIssuer.verify", "authenticated_user")),
    ("Litestar: routing, parameters, middleware", ("litestar/",)),
    ("uvicorn and HTTP", ("uvicorn/",)),
)
#: Leaf frames that are waiting, not working: the event loop polling, pool threads waiting for
#: work, psycopg waiting for the database.
PROFILE_IDLE = ("Runner.run", "_worker", "Connection.wait", "Condition.wait", "WorkerThread.run")
#: Frames of the API starting up (imports, also those made lazily by the first requests, the
#: app factory, the lifespan), not serving.
PROFILE_START = ("_find_and_load", "SourceLoader.get_code", "Config.load", "Server.startup",
                 "LifespanOn")  # fmt: skip


def profile_summary(path: Path) -> None:
    """Print where the API's busy samples went, by layer, from py-spy's collapsed stacks
    (its start-up and the waiting frames left out)."""
    groups: dict[str, int] = {}
    busy = 0
    for line in path.read_text().splitlines():
        stack, _, taken = line.rpartition(" ")
        frames = stack.split(";")
        leaf = frames[-1].split(" (")[0]
        if not stack.strip() or leaf in PROFILE_IDLE or any(m in stack for m in PROFILE_START):
            continue
        busy += int(taken)
        name = next(
            (name for name, markers in PROFILE_GROUPS if any(m in stack for m in markers)),
            "other",
        )
        groups[name] = groups.get(name, 0) + int(taken)
    print(f"\nwhere the API's busy samples went ({busy:,} samples, {path}):")
    for group, samples in sorted(groups.items(), key=lambda item: -item[1]):
        print(f"  {samples / max(busy, 1) * 100:5.1f} %  {group}")


# --- measuring and comparing -----------------------------------------------------------------


@dataclass
class Timing:
    seconds: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, math.ceil(len(ordered) * 0.95) - 1)] * 1000


def timed(call: Callable[[], object], warmup: int, repeat: int) -> Timing:
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return Timing(seconds)


def side_by_side(
    first: Callable[[], object],
    second: Callable[[], object],
    warmup: int,
    repeat: int,
    meter: CpuMeter,
) -> tuple[Timing, Timing, dict[str, float], dict[str, float]]:
    """Two calls timed in turns (which goes first alternating), so that whatever else the
    machine is doing weighs on both alike and their ratio holds even when their times do not.
    Also returns, for each, the CPU seconds per call of the meter's processes (read around
    every call, so each call is charged only its own)."""
    for _ in range(warmup):
        first()
        second()
    times: tuple[list[float], list[float]] = ([], [])
    cpu: tuple[dict[str, float], dict[str, float]] = ({}, {})
    for number in range(repeat):
        order = ((0, first), (1, second)) if number % 2 == 0 else ((1, second), (0, first))
        for which, call in order:
            meter.start()
            started = time.perf_counter()
            call()
            times[which].append(time.perf_counter() - started)
            for name, seconds in meter.stop().items():
                cpu[which][name] = cpu[which].get(name, 0.0) + seconds / repeat
    return Timing(times[0]), Timing(times[1]), cpu[0], cpu[1]


TIMES = {"start", "end", "start_time", "end_time"}


def canonical(value: Any) -> Any:
    """JSON from the API with its timestamps as datetimes and ids as UUIDs, to compare."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in TIMES:
                out[key] = datetime.fromisoformat(item)
            elif key == "user_id":
                out[key] = uuid.UUID(item)
            else:
                out[key] = canonical(item)
        return out
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def differences(api: Any, rows: Any, path: str = "") -> list[str]:
    """Where the API's answer and the row-by-row one differ, as readable paths."""
    if isinstance(api, dict) and isinstance(rows, dict):
        found = []
        for key in sorted(api.keys() | rows.keys()):
            if key not in api or key not in rows:
                found.append(f"{path}.{key}: only in {'the API' if key in api else 'rows'}")
            else:
                found += differences(api[key], rows[key], f"{path}.{key}")
        return found
    if isinstance(api, list) and isinstance(rows, list):
        if len(api) != len(rows):
            return [f"{path}: {len(api)} items from the API, {len(rows)} from rows"]
        return [d for i, (a, b) in enumerate(zip(api, rows, strict=True))
                for d in differences(a, b, f"{path}[{i}]")]  # fmt: skip
    return [] if api == rows else [f"{path}: API {api!r}, rows {rows!r}"]


@dataclass
class Figure:
    label: str
    api: Timing
    #: The same figures from one raw SQL statement, timed in turns with the API.
    raw: Timing
    #: CPU seconds per call, by group of processes ("API", "PostgreSQL"), of each way.
    api_cpu: dict[str, float]
    raw_cpu: dict[str, float]
    #: None with `--api-only`.
    rows: Timing | None
    rows_loaded: int
    target_ms: float | None = None
    #: The most the API may take, as a multiple of the raw statement (issue 15).
    max_ratio: float | None = None

    @property
    def speedup(self) -> float:
        return self.rows.median_ms / self.api.median_ms if self.rows else math.nan

    @property
    def ratio(self) -> float:
        return self.api.median_ms / self.raw.median_ms

    @property
    def cpu_ratio(self) -> float:
        """The CPU the API path costs (its process and its database work) over the raw
        statement's: what the wall-time ratio comes to when nothing else competes for the
        cores, as a shared machine's waits do not weigh on it."""
        raw = self.raw_cpu.get("PostgreSQL", 0.0)
        api = self.api_cpu.get("API", 0.0) + self.api_cpu.get("PostgreSQL", 0.0)
        return api / raw if raw else math.nan

    def misses(self) -> list[str]:
        missed = []
        if self.target_ms is not None:
            if self.api.median_ms >= self.target_ms:
                missed.append(
                    f"{self.label}: {self.api.median_ms:.1f} ms, not under {self.target_ms:g}"
                )
            if self.rows and self.speedup < MIN_SPEEDUP:
                missed.append(f"{self.label}: {self.speedup:.1f}x, not {MIN_SPEEDUP}x faster")
        if self.max_ratio is not None and self.ratio > self.max_ratio:
            missed.append(
                f"{self.label}: {self.ratio:.2f}x the raw statement, not within {self.max_ratio:g}x"
            )
        return missed


#: The targets of issue 8, on the median.
HEAVY_MONTH_MS = 50.0
GLOBAL_MONTH_MS = 1000.0
MIN_SPEEDUP = 20
#: The targets of issue 15: the API's median over the raw statement's, measured in turns.
HEAVY_MONTH_RATIO = 2.0
GLOBAL_MONTH_RATIO = 1.5


def count_rows(connection: Connection, table: Table, column: Any, span: Span, *where: Any) -> int:
    return int(
        connection.execute(
            select(func.count())
            .select_from(table)
            .where(column >= span.start, column < span.end, *where)
        ).scalar_one()
    )


def measure(
    http: httpx.Client,
    engine: Engine,
    raw: psycopg.Cursor[Any],
    meter: CpuMeter,
    args: argparse.Namespace,
) -> tuple[list[Figure], list[str]]:
    """Time every figure three ways (the API and the raw statement in turns, then loading the
    rows), then compare the answers; returns the figures and the differences found."""
    heavy = {"Authorization": f"Bearer {login(http, HEAVY_EMAIL, PASSWORD)}"}
    admin = {"Authorization": f"Bearer {login(http, ADMIN_EMAIL, PASSWORD)}"}
    heavy_id = uuid.UUID(f"{USER:08x}-0000-4000-8000-{1:012x}")
    figures: list[Figure] = []
    problems: list[str] = []

    def api_call(path: str, period: str, headers: dict[str, str]) -> dict[str, Any]:
        response = http.get(path, params={"period": period}, headers=headers)
        if response.status_code != 200:
            raise SystemExit(f"GET {path}?period={period}: {response.status_code} {response.text}")
        body: dict[str, Any] = response.json()
        return body

    def every_way(
        label: str,
        path: str,
        period: str,
        headers: dict[str, str],
        by_sql: Callable[[Span], dict[str, Any]],
        by_rows: Callable[[Span], dict[str, Any]],
        loaded: Callable[[Span], int],
        target_ms: float | None,
        max_ratio: float | None,
    ) -> None:
        print(f"measuring {label}...", flush=True)
        api, by_statement, api_cpu, raw_cpu = side_by_side(
            lambda: api_call(path, period, headers),
            # Like the API, the raw statement reports on a window ending now.
            lambda: by_sql(Span.ending(period, datetime.now(UTC))),
            args.warmup,
            args.repeat,
            meter,
        )
        figure = Figure(label, api, by_statement, api_cpu, raw_cpu, None, 0, target_ms, max_ratio)
        # The other ways compute the window the API last answered for, so that the answers
        # can be compared number for number.
        answer = canonical(api_call(path, period, headers))
        span = Span.ending(period, answer["end_time"])
        figure.rows_loaded = loaded(span)
        figures.append(figure)
        problems.extend(f"{label} (raw SQL){d}" for d in differences(answer, by_sql(span)))
        if args.api_only:
            return
        computed: list[dict[str, Any]] = []
        figure.rows = timed(
            lambda: computed.append(by_rows(span)), args.baseline_warmup, args.baseline_repeat
        )
        expected = computed[-1] if computed else by_rows(span)
        problems.extend(f"{label}{d}" for d in differences(answer, expected))

    s = proxy_sessions.c
    with engine.connect() as connection:

        def heavy_rows(span: Span) -> int:
            return count_rows(connection, proxy_sessions, s.started_at, span, s.user_id == heavy_id)

        def global_rows(span: Span) -> int:
            return (
                count_rows(connection, proxy_sessions, s.started_at, span)
                + count_rows(connection, users, users.c.created_at, span)
                + count_rows(connection, transactions, transactions.c.created_at, span)
            )

        for period in args.periods:
            month = period == "month"
            if args.only in (None, "usage"):
                every_way(
                    f"usage, heavy user, {period}",
                    USAGE_PATH,
                    period,
                    heavy,
                    lambda span: usage_by_sql(raw, heavy_id, span),
                    lambda span: usage_from_rows(connection, heavy_id, span),
                    heavy_rows,
                    HEAVY_MONTH_MS if month else None,
                    HEAVY_MONTH_RATIO if month else None,
                )
            if args.only in (None, "global"):
                every_way(
                    f"global-stats, {period}",
                    GLOBAL_PATH,
                    period,
                    admin,
                    lambda span: global_by_sql(raw, span),
                    lambda span: global_from_rows(connection, span),
                    global_rows,
                    GLOBAL_MONTH_MS if month else None,
                    GLOBAL_MONTH_RATIO if month else None,
                )
    return figures, problems


def report(figures: list[Figure], args: argparse.Namespace, started_load: str) -> None:
    print()
    print(
        f"{'':28} {'API median':>10} {'API p95':>8} {'raw SQL median':>14} {'API/raw':>7} "
        f"{'rows median':>11} {'rows loaded':>11} {'speed-up':>8}  targets"
    )
    for f in figures:
        targets = []
        if f.target_ms:
            targets.append(f"< {f.target_ms:g} ms, >= {MIN_SPEEDUP}x")
        if f.max_ratio:
            targets.append(f"API/raw <= {f.max_ratio:g}")
        if f.rows:
            rows = f"{f.rows.median_ms:11.1f} {f.rows_loaded:11,}"
            speedup = f"{f.speedup:7.1f}x"
        else:
            rows, speedup = f"{'-':>11} {f.rows_loaded:11,}", f"{'-':>8}"
        print(
            f"{f.label:28} {f.api.median_ms:10.1f} {f.api.p95_ms:8.1f} "
            f"{f.raw.median_ms:14.1f} {f.ratio:6.2f}x {rows} {speedup}  {'; '.join(targets)}"
        )
    print(
        f"\nCPU ms per call (from /proc, read around each call): {'':6} "
        f"{'API process':>11} {'its PostgreSQL':>14} {'raw statement':>13} {'API/raw':>7}"
    )
    for f in figures:
        print(
            f"{f.label:56} {f.api_cpu['API'] * 1000:11.2f} "
            f"{f.api_cpu['PostgreSQL'] * 1000:14.2f} {f.raw_cpu['PostgreSQL'] * 1000:13.2f} "
            f"{f.cpu_ratio:6.2f}x"
        )
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"\n(milliseconds; API and raw SQL: {args.repeat} calls each, in turns, after "
        f"{args.warmup}; rows: "
        f"{args.baseline_repeat} after {args.baseline_warmup}; {os.cpu_count()} CPUs; "
        f"load average at the start {started_load}, at the end {load})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=2_000_000, help="proxy sessions")
    parser.add_argument("--users", type=int, default=2000, help="users (at least 2)")
    parser.add_argument("--repeat", type=int, default=20, help="measured API calls per figure")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured API calls first")
    parser.add_argument("--baseline-repeat", type=int, default=3, help="measured row loads")
    parser.add_argument("--baseline-warmup", type=int, default=0, help="unmeasured row loads")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "ZENZEFI_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="the PostgreSQL server to make the database on",
    )
    parser.add_argument("--database", default="zenzefi_bench_analytics", help="its name")
    parser.add_argument("--keep-database", action="store_true", help="do not drop it at the end")
    parser.add_argument(
        "--reuse-database",
        action="store_true",
        help="measure a database kept by an earlier run instead of making a new one",
    )
    parser.add_argument(
        "--seed-only", action="store_true", help="fill the database, keep it and stop"
    )
    parser.add_argument(
        "--api-only",
        action="store_true",
        help="time the API and the raw statement only, no rows loaded (to compare two versions)",
    )
    parser.add_argument(
        "--no-targets", action="store_true", help="report missed targets without failing"
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="FILE",
        help="run the API under py-spy and write its sampled stacks to FILE (collapsed)",
    )
    parser.add_argument(
        "--only",
        choices=("usage", "global"),
        help="measure one of the two reports only (to profile it alone)",
    )
    parser.add_argument(
        "--periods",
        nargs="+",
        choices=PERIODS,
        default=list(PERIODS),
        help="the periods to measure (default: all three)",
    )
    args = parser.parse_args(argv)
    if args.users < 2 or args.sessions < HEAVY_SHARE:
        parser.error(f"need at least 2 users and {HEAVY_SHARE} sessions")
    if min(args.repeat, args.baseline_repeat) < 1 or min(args.warmup, args.baseline_warmup) < 0:
        parser.error("need at least one measured call each way")

    shape = Shape(args.users, args.sessions)
    if args.reuse_database:
        url = make_url(args.postgres).set(database=args.database).render_as_string(False)
    else:
        url = fresh_database(args.postgres, args.database)
    engine = make_engine(url, pool_size=2)
    try:
        if not args.reuse_database:
            started = time.perf_counter()
            upgrade(engine)
            print(f"migrated {args.database} in {time.perf_counter() - started:.1f} s", flush=True)
            took = seed(engine, shape, datetime.now(UTC))
            steps = ", ".join(f"{name} {seconds:.1f}" for name, seconds in took.items())
            print(
                f"filled it in {sum(took.values()):.1f} s ({steps}): {args.users:,} users, "
                f"{args.sessions:,} sessions ({shape.heavy_sessions:,} of the heavy user), "
                f"{shape.tokens + shape.unused_tokens:,} single tokens, "
                f"{shape.bundle_purchases:,} bundle purchases",
                flush=True,
            )
        with engine.connect() as connection:
            entries = connection.execute(
                select(func.count()).select_from(transactions)
            ).scalar_one()
        print(f"{entries:,} ledger entries", flush=True)
        if args.seed_only:
            return 0
        started_load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        with (
            tempfile.TemporaryDirectory(prefix="zenzefi-bench-") as scratch,
            api_server(url, Path(scratch), args.py_spy) as (base, api_pid),
            httpx.Client(base_url=base, timeout=120) as http,
            psycopg.connect(
                make_url(url).set(drivername="postgresql").render_as_string(False),
                autocommit=True,
            ) as raw,
            raw.cursor() as cursor,
        ):
            meter = CpuMeter(
                {"API": lambda: [api_pid], "PostgreSQL": lambda: postgres_pids(args.database)}
            )
            figures, problems = measure(http, engine, cursor, meter, args)
        report(figures, args, started_load)
        if args.py_spy is not None:
            profile_summary(args.py_spy)
    finally:
        engine.dispose()
        if not (args.keep_database or args.reuse_database or args.seed_only):
            drop_database(args.postgres, args.database)
    if problems:
        print(f"\nthe answers disagree ({len(problems)} differences):")
        for problem in problems[:40]:
            print(f"  {problem}")
        return 1
    if args.api_only:
        print("\nthe API and the raw statement agree on every number of every response")
    else:
        print("\nall three ways agree on every number of every response")
    missed = [miss for figure in figures for miss in figure.misses()]
    for miss in missed:
        print(f"target missed: {miss}")
    if missed and not args.no_targets:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
