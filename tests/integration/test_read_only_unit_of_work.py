"""Reads at one round trip: a read-only unit of work runs its statement without a transaction
around it, and a pooled PostgreSQL connection is checked out without a pre-ping yet never
handed out after the server closed it."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from tests.conftest import UserMaker, uow_factory_for
from zenzefi_core.adapters.sqlalchemy import SqlAlchemyUnitOfWork
from zenzefi_core.adapters.sqlalchemy.engine import make_engine
from zenzefi_core.adapters.sqlalchemy.migrate import upgrade


def _statements(engine: Engine) -> list[str]:
    """Every statement SQLAlchemy sends from now on, BEGIN included (SQLite's is ours)."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement.split()[0].upper())

    event.listen(engine, "before_cursor_execute", record)
    return sent


def test_a_read_only_unit_of_work_sends_its_query_alone(
    engine: Engine, make_user: UserMaker
) -> None:
    user = make_user(uow_factory_for(engine), balance=Decimal("7.50"))
    sent = _statements(engine)
    with SqlAlchemyUnitOfWork(engine, read_only=True) as uow:
        stored = uow.users.get(user.id)
        driver: Any = uow.users._c.connection.dbapi_connection
        if engine.dialect.name == "postgresql":
            # Autocommit: psycopg sends no BEGIN before the query, nor ROLLBACK after it.
            assert driver.autocommit is True
        else:
            assert driver.in_transaction is False
    assert stored is not None
    assert stored.balance == Decimal("7.50")
    assert sent == ["SELECT"]
    with (
        pytest.raises(RuntimeError, match="nothing to commit"),
        SqlAlchemyUnitOfWork(engine, read_only=True) as uow,
    ):
        uow.commit()
    # The connection goes back to the pool as it came: the next unit of work is a transaction.
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.users.get(user.id)
        driver = uow.users._c.connection.dbapi_connection
        if engine.dialect.name == "postgresql":
            assert driver.autocommit is False
        else:
            assert driver.in_transaction is True


def test_sqlite_reads_beside_a_writer_holding_the_lock(tmp_path: Any, make_user: UserMaker) -> None:
    """A read-only unit of work takes no `BEGIN IMMEDIATE`, so it does not queue behind a
    write transaction (WAL lets it read the last committed state)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'zenzefi.db'}", connect_args={"timeout": 2})
    upgrade(engine)
    try:
        user = make_user(uow_factory_for(engine), balance=Decimal("3.00"))
        holding, release = threading.Event(), threading.Event()

        def writer() -> None:
            with SqlAlchemyUnitOfWork(engine) as uow:
                uow.users._c.execute(text("UPDATE users SET balance = 4.00"))
                holding.set()
                release.wait(10)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            assert holding.wait(10)
            with SqlAlchemyUnitOfWork(engine, read_only=True) as uow:
                stored = uow.users.get(user.id)
            assert stored is not None
            assert stored.balance == Decimal("3.00")
        finally:
            release.set()
            thread.join()
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_connection_the_server_closed_is_replaced_at_checkout(
    postgres_url: str, make_user: UserMaker
) -> None:
    engine = make_engine(postgres_url, pool_size=1, max_overflow=0)
    upgrade(engine)
    sent = _statements(engine)
    try:
        user = make_user(uow_factory_for(engine), "carol")
        with SqlAlchemyUnitOfWork(engine, read_only=True) as uow:
            before = uow.users._c.execute(text("SELECT pg_backend_pid()")).scalar_one()
        admin = make_engine(postgres_url)
        with admin.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": before})
            other.commit()
        admin.dispose()
        sent.clear()
        with SqlAlchemyUnitOfWork(engine, read_only=True) as uow:
            stored = uow.users.get(user.id)
            after = uow.users._c.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert stored is not None
        assert after != before
        # No `SELECT 1` ping went out first.
        assert sent == ["SELECT", "SELECT"]
    finally:
        engine.dispose()
