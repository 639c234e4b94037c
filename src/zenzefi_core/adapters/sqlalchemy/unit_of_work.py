"""The SQLAlchemy unit of work: one connection, one transaction, explicit commit."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from zenzefi_core.adapters.sqlalchemy.analytics_queries import SqlAnalyticsQueries
from zenzefi_core.adapters.sqlalchemy.bundle_repository import SqlBundleRepository
from zenzefi_core.adapters.sqlalchemy.engine import READ_ONLY
from zenzefi_core.adapters.sqlalchemy.notification_repository import (
    SqlNotificationLogRepository,
    SqlNotificationPreferenceRepository,
    SqlTokenNoticeRepository,
)
from zenzefi_core.adapters.sqlalchemy.payment_repository import SqlPaymentRepository
from zenzefi_core.adapters.sqlalchemy.referral_repository import SqlReferralRepository
from zenzefi_core.adapters.sqlalchemy.repositories import (
    SqlAuditLogRepository,
    SqlIdempotencyRepository,
    SqlLedgerRepository,
    SqlOutboxRepository,
    SqlUserRepository,
)
from zenzefi_core.adapters.sqlalchemy.session_repository import (
    SqlProxySessionRepository,
    SqlTokenExpiryRepository,
)
from zenzefi_core.adapters.sqlalchemy.token_repository import SqlTokenRepository
from zenzefi_core.adapters.sqlalchemy.webhook_repository import SqlWebhookRepository
from zenzefi_core.domain import LedgerEntry, OutboxEvent
from zenzefi_core.errors import StorageUnavailable
from zenzefi_core.ports import AfterCommit, LedgerObserver


def _unavailable(error: BaseException | None) -> bool:
    """A transient database failure (unreachable, connection lost, lock or serialisation
    timeout), as opposed to a bug: the request may simply be retried."""
    if isinstance(error, OperationalError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def read_only_options(engine: Engine) -> dict[str, object]:
    """Execution options of a connection that runs each statement on its own: autocommit on
    PostgreSQL; on SQLite (whose driver already runs in autocommit mode, see `engine`) only
    the mark that tells the engine not to take the write lock with `BEGIN IMMEDIATE`."""
    if engine.dialect.name == "sqlite":
        return {READ_ONLY: True}
    return {READ_ONLY: True, "isolation_level": "AUTOCOMMIT"}


class SqlAlchemyUnitOfWork:
    """Opens a connection on enter; leaving without `commit()` rolls back.

    The connection begins its transaction on the first statement (SQLAlchemy's autobegin) and
    again after each commit, so a use case may commit more than once if it needs to. A transient
    database failure leaves as the core's `StorageUnavailable`, so callers never see SQLAlchemy.
    When the block ends, `after_commit` (if given) gets the outbox events it committed, and
    `on_ledger` (if given) the ledger entries. `worker_events`: see `SqlOutboxRepository`.

    A `read_only` unit of work opens no transaction: each statement stands alone (autocommit),
    so a use case that reads one row costs one round trip instead of BEGIN, the query and
    ROLLBACK, and on SQLite it reads beside the writer instead of queueing for its lock.
    Only for use cases that read with a single statement; `commit()` refuses.
    """

    users: SqlUserRepository
    ledger: SqlLedgerRepository
    outbox: SqlOutboxRepository
    idempotency: SqlIdempotencyRepository
    payments: SqlPaymentRepository
    audit: SqlAuditLogRepository
    tokens: SqlTokenRepository
    bundles: SqlBundleRepository
    referrals: SqlReferralRepository
    notification_preferences: SqlNotificationPreferenceRepository
    notifications: SqlNotificationLogRepository
    token_notices: SqlTokenNoticeRepository
    proxy_sessions: SqlProxySessionRepository
    token_expiries: SqlTokenExpiryRepository
    webhooks: SqlWebhookRepository
    analytics: SqlAnalyticsQueries

    def __init__(
        self,
        engine: Engine,
        after_commit: AfterCommit | None = None,
        on_ledger: LedgerObserver | None = None,
        worker_events: frozenset[str] | None = None,
        *,
        read_only: bool = False,
    ) -> None:
        self._engine = engine
        self._worker_events = worker_events
        self._read_only = read_only
        self._connection: Connection | None = None
        self._after_commit = after_commit
        self._on_ledger = on_ledger
        self._committed_events: list[OutboxEvent] = []
        self._committed_entries: list[LedgerEntry] = []

    def __enter__(self) -> Self:
        try:
            self._connection = self._engine.connect()
        except DBAPIError as error:
            raise StorageUnavailable() from error
        if self._read_only:
            self._connection.execution_options(**read_only_options(self._engine))
        self.users = SqlUserRepository(self._connection)
        self.ledger = SqlLedgerRepository(self._connection)
        self.outbox = SqlOutboxRepository(self._connection, self._worker_events)
        self.idempotency = SqlIdempotencyRepository(self._connection)
        self.payments = SqlPaymentRepository(self._connection)
        self.audit = SqlAuditLogRepository(self._connection)
        self.tokens = SqlTokenRepository(self._connection)
        self.bundles = SqlBundleRepository(self._connection)
        self.referrals = SqlReferralRepository(self._connection)
        self.notification_preferences = SqlNotificationPreferenceRepository(self._connection)
        self.notifications = SqlNotificationLogRepository(self._connection)
        self.token_notices = SqlTokenNoticeRepository(self._connection)
        self.proxy_sessions = SqlProxySessionRepository(self._connection)
        self.token_expiries = SqlTokenExpiryRepository(self._connection)
        self.webhooks = SqlWebhookRepository(self._connection)
        self.analytics = SqlAnalyticsQueries(self._connection)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.rollback()
        except DBAPIError as error:
            # The connection died at the very end (the database stopped just then): what the
            # block committed is committed and the server drops the rest, so the block's
            # outcome stands. Only a failure of another kind is news.
            if not (_unavailable(exc) or _unavailable(error)):
                raise
        finally:
            connection.close()
            self._hand_over()
        if _unavailable(exc):
            raise StorageUnavailable() from exc

    def _active(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("the unit of work is used outside its `with` block")
        return self._connection

    def commit(self) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work has nothing to commit")
        self._active().commit()
        self._committed_events.extend(self.outbox.added)
        self.outbox.added.clear()
        self._committed_entries.extend(self.ledger.added)
        self.ledger.added.clear()

    def rollback(self) -> None:
        self._active().rollback()
        self.outbox.added.clear()
        self.ledger.added.clear()

    def _hand_over(self) -> None:
        # After the connection is back in the pool, so the hook's own transaction never waits
        # on this one.
        entries, self._committed_entries = self._committed_entries, []
        if entries and self._on_ledger is not None:
            self._on_ledger(entries)
        events, self._committed_events = self._committed_events, []
        if events and self._after_commit is not None:
            self._after_commit(events)
