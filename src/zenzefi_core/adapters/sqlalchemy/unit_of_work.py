"""The SQLAlchemy unit of work: one connection, one transaction, explicit commit."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from zenzefi_core.adapters.sqlalchemy.bundle_repository import SqlBundleRepository
from zenzefi_core.adapters.sqlalchemy.payment_repository import SqlPaymentRepository
from zenzefi_core.adapters.sqlalchemy.referral_repository import SqlReferralRepository
from zenzefi_core.adapters.sqlalchemy.repositories import (
    SqlAuditLogRepository,
    SqlIdempotencyRepository,
    SqlLedgerRepository,
    SqlOutboxRepository,
    SqlUserRepository,
)
from zenzefi_core.adapters.sqlalchemy.token_repository import SqlTokenRepository
from zenzefi_core.errors import StorageUnavailable


def _unavailable(error: BaseException | None) -> bool:
    """A transient database failure (unreachable, connection lost, lock or serialisation
    timeout), as opposed to a bug: the request may simply be retried."""
    if isinstance(error, OperationalError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


class SqlAlchemyUnitOfWork:
    """Opens a connection on enter; leaving without `commit()` rolls back.

    The connection begins its transaction on the first statement (SQLAlchemy's autobegin) and
    again after each commit, so a use case may commit more than once if it needs to. A transient
    database failure leaves as the core's `StorageUnavailable`, so callers never see SQLAlchemy.
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

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None

    def __enter__(self) -> Self:
        try:
            self._connection = self._engine.connect()
        except DBAPIError as error:
            raise StorageUnavailable() from error
        self.users = SqlUserRepository(self._connection)
        self.ledger = SqlLedgerRepository(self._connection)
        self.outbox = SqlOutboxRepository(self._connection)
        self.idempotency = SqlIdempotencyRepository(self._connection)
        self.payments = SqlPaymentRepository(self._connection)
        self.audit = SqlAuditLogRepository(self._connection)
        self.tokens = SqlTokenRepository(self._connection)
        self.bundles = SqlBundleRepository(self._connection)
        self.referrals = SqlReferralRepository(self._connection)
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
        except DBAPIError:
            if not _unavailable(exc):
                raise
        finally:
            connection.close()
        if _unavailable(exc):
            raise StorageUnavailable() from exc

    def _active(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("the unit of work is used outside its `with` block")
        return self._connection

    def commit(self) -> None:
        self._active().commit()

    def rollback(self) -> None:
        self._active().rollback()
