"""The unit of work when the database connection dies at the very end of a block, after its
work was done: a read keeps its answer and a commit stays committed, instead of the final
rollback's error turning a finished request into a 500 (found by tests/fault, where PostgreSQL
is stopped while requests run)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.conftest import UserMaker, uow_factory_for
from zenzefi_core.adapters.sqlalchemy import SqlAlchemyUnitOfWork
from zenzefi_core.errors import StorageUnavailable


def _connection_lost(engine: Engine) -> Any:
    """A rollback failing as it does when the server has just gone away."""
    driver_error = engine.dialect.loaded_dbapi.OperationalError

    def rollback(_connection: Any) -> None:
        raise driver_error("server closed the connection unexpectedly")

    return rollback


def test_a_read_keeps_its_answer_when_the_connection_dies_at_the_end(
    engine: Engine, make_user: UserMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = make_user(uow_factory_for(engine), balance=Decimal("12.00"))
    monkeypatch.setattr(engine.dialect, "do_rollback", _connection_lost(engine))
    with SqlAlchemyUnitOfWork(engine) as uow:
        stored = uow.users.get(user.id)
    assert stored is not None
    assert stored.balance == Decimal("12.00")


def test_a_commit_stays_committed_when_the_connection_dies_at_the_end(
    engine: Engine, make_user: UserMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(engine.dialect, "do_rollback", _connection_lost(engine))
        user = make_user(uow_factory_for(engine), "bob")
    with SqlAlchemyUnitOfWork(engine) as uow:
        assert uow.users.get(user.id) is not None


def test_a_failure_inside_the_block_is_still_unavailable(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver_error = engine.dialect.loaded_dbapi.OperationalError
    monkeypatch.setattr(engine.dialect, "do_rollback", _connection_lost(engine))

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise driver_error("server closed the connection unexpectedly")

    monkeypatch.setattr(engine.dialect, "do_execute", broken)
    with pytest.raises(StorageUnavailable), SqlAlchemyUnitOfWork(engine) as uow:
        uow.users.get_by_email("nobody@example.com")
