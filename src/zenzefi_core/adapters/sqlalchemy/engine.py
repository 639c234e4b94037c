"""Engines for SQLite and PostgreSQL, set up so that the unit of work behaves the same on both."""

from __future__ import annotations

import select
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, TextClause, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.sql.selectable import SelectBase


def normalize_url(url: str) -> str:
    """Accept the URLs operators write (`postgresql://`, `postgres://`) and pick psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+pysqlite")
    return parsed.render_as_string(hide_password=False)


#: The execution option of a connection that runs each statement on its own (a read-only unit
#: of work): on SQLite no `BEGIN IMMEDIATE`, which would queue a mere read behind the writer.
READ_ONLY = "zenzefi_read_only"

#: How long connecting to PostgreSQL may take, in whole seconds (libpq's `connect_timeout`).
#: Without it a database host that does not answer holds each request for the operating
#: system's TCP timeout, minutes; with it the request gets its 503 after this long. A
#: `connect_timeout` in the URL wins.
CONNECT_TIMEOUT_SECONDS = 5
#: A pooled PostgreSQL connection is replaced after this long, so a connection that a firewall or
#: proxy dropped without a word is not kept for ever.
POOL_RECYCLE_SECONDS = 1800


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database, **kwargs)
    if "connect_timeout" not in parsed.query:
        kwargs["connect_args"] = {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            **kwargs.get("connect_args", {}),
        }
    # No pre-ping (a `SELECT 1` round trip on every checkout): `_drop_if_closed` finds the
    # connections the server closed without asking it anything, and `pool_recycle` retires
    # the rest in time.
    kwargs.setdefault("pool_recycle", POOL_RECYCLE_SECONDS)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    engine = create_engine(url, **kwargs)
    event.listen(engine, "checkout", _drop_if_closed)
    return engine


def _drop_if_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """On checkout, retry with another connection if the server has closed this one.

    A healthy idle connection has nothing to read; one the server closed (a restart, an idle
    timeout, `pg_terminate_backend`) has its goodbye or the end of the stream waiting. Looking
    costs a system call, not a round trip. `DisconnectionError` makes the pool discard the
    connection and hand out another (connecting anew if need be), so the request never sees it.
    """
    try:
        descriptor = dbapi_connection.fileno()
    except (psycopg.Error, OSError, ValueError):
        raise DisconnectionError("the connection is closed") from None
    poller = select.poll()
    poller.register(descriptor, select.POLLIN | select.POLLERR | select.POLLHUP)
    if poller.poll(0):
        raise DisconnectionError("the server closed the connection")


def _sqlite_engine(url: str, database: str | None, **kwargs: Any) -> Engine:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("timeout", 30)
    connect_args.setdefault("check_same_thread", False)
    engine = create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA busy_timeout = 30000")
        if database and database != ":memory:":
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # SQLite's own BEGIN waits for the transaction's first statement (_before_cursor_execute).
        connection.info[_WRITING] = False

    @event.listens_for(engine, "before_cursor_execute")
    def _before_cursor_execute(
        connection: Connection,
        cursor: Any,
        statement: str,
        _parameters: Any,
        context: Any,
        _executemany: bool,
    ) -> None:
        # Raised from here, a "database is locked" is wrapped like the statement's own errors.
        if connection.info.get(_WRITING):
            return
        if connection.get_execution_options().get(READ_ONLY):
            # A read-only unit of work begins nothing: the driver is in autocommit mode, each
            # statement its own snapshot, and a write is refused by the unit of work.
            return
        if _needs_write_lock(context.compiled, statement):
            _begin_writing(connection, cursor)
        elif not cursor.connection.in_transaction:
            # A deferred transaction: its reads share one snapshot and take no lock, so a
            # purchase never waits behind a request that only reads (in WAL mode readers and
            # the writer do not block each other).
            cursor.execute("BEGIN")

    return engine


#: Set in a SQLite connection's `info` once its transaction holds the write lock.
_WRITING = "zenzefi_sqlite_writing"


def _driver(connection: Connection) -> sqlite3.Connection:
    driver = connection.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return driver


def _needs_write_lock(compiled: Any, statement: str) -> bool:
    """Everything but a plain SELECT writes, or (FOR UPDATE, a table lock) asks to be alone."""
    if compiled is None or isinstance(compiled.statement, TextClause):
        return not statement.lstrip().upper().startswith("SELECT")
    element = compiled.statement
    if isinstance(element, SelectBase):
        return getattr(element, "_for_update_arg", None) is not None
    return True


def _begin_writing(connection: Connection, cursor: Any) -> None:
    """Take SQLite's write lock for the rest of the transaction, waiting for it; a transaction
    that has read so far trades its snapshot for it.

    Upgrading the deferred transaction in place would fail at once with SQLITE_BUSY (no
    waiting: its snapshot is stale) whenever another writer committed since it began. So the
    read-only part ends (it wrote nothing) and an immediate transaction begins, which waits
    for the lock within the busy timeout, like PostgreSQL's READ COMMITTED: what was read
    before is not protected, which is why debits are conditional updates and contested rows
    are read FOR UPDATE (which lands here first).
    """
    if cursor.connection.in_transaction:
        cursor.execute("COMMIT")
    cursor.execute("BEGIN IMMEDIATE")
    connection.info[_WRITING] = True


def take_write_lock(connection: Connection) -> None:
    """Hold SQLite's write lock from now until the transaction ends; elsewhere nothing.

    For work that must be alone from its first read on, such as applying migrations or
    seeding an empty table (PostgreSQL locks what it needs itself).
    """
    if connection.dialect.name != "sqlite":
        return
    if not connection.in_transaction():
        connection.begin()
    if connection.info.get(_WRITING):
        return
    try:
        _begin_writing(connection, _driver(connection).cursor())
    except sqlite3.OperationalError as error:
        raise OperationalError("BEGIN IMMEDIATE", None, error) from error
