"""One database: its engine, units of work on it, migrations and a liveness check."""

from __future__ import annotations

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from zenzefi_core.adapters.sqlalchemy.engine import make_engine
from zenzefi_core.adapters.sqlalchemy.migrate import upgrade
from zenzefi_core.adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from zenzefi_core.ports import AfterCommit, LedgerObserver


class Database:
    def __init__(self, url: str) -> None:
        self.engine: Engine = make_engine(url)

    @property
    def display_url(self) -> str:
        """The URL without its password, for logs and messages."""
        return self.engine.url.render_as_string(hide_password=True)

    def unit_of_work(
        self,
        after_commit: AfterCommit | None = None,
        on_ledger: LedgerObserver | None = None,
        worker_events: frozenset[str] | None = None,
    ) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(self.engine, after_commit, on_ledger, worker_events)

    def reader(self) -> SqlAlchemyUnitOfWork:
        """A unit of work for a use case that reads with one statement (see
        `SqlAlchemyUnitOfWork`): no transaction around it, nothing to commit."""
        return SqlAlchemyUnitOfWork(self.engine, read_only=True)

    def migrate(self) -> None:
        upgrade(self.engine)

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    def dispose(self) -> None:
        self.engine.dispose()
