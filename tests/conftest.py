"""Fixtures shared by every test layer: engines, units of work and the services they need.

PostgreSQL and Redis tests run against the real servers. When a server is unreachable they are
skipped with the reason, unless ZENZEFI_REQUIRE_SERVICES=1 (as in CI), where they fail instead.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import pytest
from sqlalchemy import Engine, make_url, text

from zenzefi_core.adapters.memory import MemoryStore
from zenzefi_core.adapters.sqlalchemy import SqlAlchemyUnitOfWork, make_engine, upgrade
from zenzefi_core.adapters.sqlalchemy.tables import metadata
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType, User
from zenzefi_core.money import ZERO
from zenzefi_core.ports import UnitOfWorkFactory
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.accounts import add_user
from zenzefi_core.services.wallet import post_entry

POSTGRES_ADMIN_URL = os.environ.get(
    "ZENZEFI_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("ZENZEFI_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
BACKENDS = ["memory", *ENGINES]


def services_required() -> bool:
    return os.environ.get("ZENZEFI_REQUIRE_SERVICES", "") == "1"


def service_unavailable(what: str, error: Exception) -> None:
    """Fail when CI promised the service, otherwise skip with a reason a person can act on."""
    message = f"{what} is not reachable ({type(error).__name__}: {error})"
    if services_required():
        pytest.fail(f"{message}; ZENZEFI_REQUIRE_SERVICES=1 demands it", pytrace=False)
    pytest.skip(f"{message}; start it or set ZENZEFI_TEST_POSTGRES_URL/ZENZEFI_TEST_REDIS_URL")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of its own for this test process, created at start and dropped at the end."""
    admin = make_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_size=1)
    name = f"zenzefi_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:  # any connection failure means "not reachable"
        admin.dispose()
        service_unavailable(f"PostgreSQL at {POSTGRES_ADMIN_URL}", error)
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _truncate(engine: Engine) -> None:
    names = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {names} CASCADE"))


def _sqlite_engine(directory: Path) -> Engine:
    engine = make_engine(f"sqlite:///{directory / 'zenzefi.db'}")
    upgrade(engine)
    return engine


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database on each real engine."""
    if request.param == "sqlite":
        sqlite = _sqlite_engine(tmp_path)
        yield sqlite
        sqlite.dispose()
        return
    postgres: Engine = request.getfixturevalue("postgres_engine")
    _truncate(postgres)
    yield postgres
    _truncate(postgres)


def uow_factory_for(engine: Engine | None) -> UnitOfWorkFactory:
    if engine is None:
        return MemoryStore().unit_of_work
    return lambda: SqlAlchemyUnitOfWork(engine)


@pytest.fixture(params=BACKENDS)
def uow_factory(request: pytest.FixtureRequest) -> Iterator[UnitOfWorkFactory]:
    """A fresh, empty store behind each adapter: memory, SQLite and PostgreSQL."""
    if request.param == "memory":
        yield uow_factory_for(None)
    elif request.param == "sqlite":
        sqlite = _sqlite_engine(request.getfixturevalue("tmp_path"))
        yield uow_factory_for(sqlite)
        sqlite.dispose()
    else:
        postgres: Engine = request.getfixturevalue("postgres_engine")
        _truncate(postgres)
        yield uow_factory_for(postgres)
        _truncate(postgres)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 26, 10, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis the worker and cache tests use; skipped or failed as above when unreachable."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as error:
        service_unavailable(f"Redis at {REDIS_URL}", error)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own, removed afterwards, so parallel tests never meet."""
    import redis

    namespace = f"zenzefi-test-{os.getpid()}-{secrets.token_hex(4)}"
    yield namespace
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


StoreMaker = Callable[[], UnitOfWorkFactory]


class UserMaker(Protocol):
    def __call__(
        self,
        uow_factory: UnitOfWorkFactory,
        username: str = ...,
        *,
        balance: Decimal = ...,
    ) -> User: ...


@pytest.fixture
def make_user(clock: FixedClock) -> UserMaker:
    """Create and commit a user, funded by a deposit so the ledger explains the balance."""
    hasher = fast_password_hasher()

    def make(
        uow_factory: UnitOfWorkFactory,
        username: str = "alice",
        *,
        balance: Decimal = ZERO,
    ) -> User:
        with uow_factory() as uow:
            user = add_user(
                uow,
                clock,
                hasher,
                email=f"{username}@example.com",
                username=username,
                password="correct horse",
            )
            if balance:
                post_entry(
                    uow,
                    clock,
                    user_id=user.id,
                    amount=balance,
                    transaction_type=TransactionType.DEPOSIT,
                    description="Opening deposit",
                    reference_type="test",
                    reference_id=str(user.id),
                )
            uow.commit()
            stored = uow.users.get(user.id)
        assert stored is not None
        return stored

    return make


@pytest.fixture(params=BACKENDS)
def store_maker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreMaker]:
    """Makes a fresh, empty store on each call, for tests (Hypothesis) that need one per example.

    Memory: a new MemoryStore. SQLite: a new migrated file. PostgreSQL: the session database,
    truncated.
    """
    if request.param == "memory":
        yield lambda: uow_factory_for(None)
    elif request.param == "sqlite":
        engines: list[Engine] = []

        def make_sqlite() -> UnitOfWorkFactory:
            for old in engines:
                old.dispose()
            engines.append(_sqlite_engine(tmp_path / f"store-{len(engines)}"))
            return uow_factory_for(engines[-1])

        yield make_sqlite
        for old in engines:
            old.dispose()
    else:
        postgres: Engine = request.getfixturevalue("postgres_engine")

        def make_postgres() -> UnitOfWorkFactory:
            _truncate(postgres)
            return uow_factory_for(postgres)

        yield make_postgres
        _truncate(postgres)


@pytest.fixture(params=ENGINES)
def blank_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty, unmigrated database of its own, on each real engine.

    For tests that migrate or drop the schema themselves. On PostgreSQL it is a throwaway
    database on the test server, so the shared migrated one is left alone.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    server = make_url(request.getfixturevalue("postgres_url"))
    admin = make_engine(
        server.set(database="postgres").render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
        pool_size=1,
    )
    name = f"{server.database}_blank_{secrets.token_hex(4)}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield server.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
