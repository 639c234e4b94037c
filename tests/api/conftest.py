"""The real app, lifespan and all, on SQLite and PostgreSQL (the `engine` fixture's database).

Two checks run around every API test: no response may be a 5xx (the client fails the test the
moment one arrives, unless the test names the status it provokes on purpose), and the ledger
invariants hold afterwards (`CheckLedger`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine

from zenzefi_api.app import create_app
from zenzefi_core.bootstrap import Core
from zenzefi_core.domain import TransactionType
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.accounts import CreateSuperuser
from zenzefi_core.services.ledger_check import CheckLedger
from zenzefi_core.services.wallet import post_entry
from zenzefi_core.settings import DatabaseSettings, RateLimitSettings, Settings

PASSWORD = "correct horse battery"
SECRET_KEY = "test-secret-key-" + "x" * 48


class ApiClient(TestClient[Litestar]):
    """A test client that fails the test on any 5xx it was not told to expect."""

    allowed_server_errors: set[int]


def _refuse_server_errors(client: ApiClient) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        status = response.status_code
        if status >= 500 and status not in client.allowed_server_errors:
            response.read()
            raise AssertionError(
                f"{response.request.method} {response.request.url.path} answered {status}: "
                f"{response.text}"
            )

    return check


@contextmanager
def running(app: Litestar) -> Iterator[ApiClient]:
    """Start the app (lifespan included) and hand out a checked client."""
    with ApiClient(app) as client:
        client.allowed_server_errors = set()
        client.event_hooks = {"request": [], "response": [_refuse_server_errors(client)]}
        yield client


def make_settings(tmp_path: Path, engine: Engine, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "secret_key": SecretStr(SECRET_KEY),
        "database": DatabaseSettings(url=engine.url.render_as_string(hide_password=False)),
        # Generous limits: only the rate-limit tests mean to reach them.
        "rate_limit": RateLimitSettings(login_attempts=10_000, register_attempts=10_000),
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path, engine: Engine) -> Settings:
    return make_settings(tmp_path, engine)


@pytest.fixture
def core(settings: Settings) -> Iterator[Core]:
    core = Core.from_settings(settings, hasher=fast_password_hasher())
    yield core
    core.close()


@pytest.fixture(autouse=True)
def ledger_stays_whole(core: Core) -> Iterator[None]:
    yield
    report = CheckLedger(core.uow)()
    assert report.ok, report.render()


@pytest.fixture
def app(settings: Settings, core: Core) -> Litestar:
    return create_app(settings, core)


@pytest.fixture
def client(app: Litestar) -> Iterator[ApiClient]:
    with running(app) as client:
        yield client


@dataclass(frozen=True)
class Account:
    id: UUID
    email: str
    username: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Accounts:
    """Makes users through the API (or the CLI's use case, for operators) and logs them in."""

    def __init__(self, client: ApiClient, core: Core) -> None:
        self.client = client
        self.core = core

    def login(self, email: str, password: str = PASSWORD) -> str:
        response = self.client.post(
            "/api/v1/auth/login", json={"email": email, "password": password}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def register(
        self, username: str, *, ref: str | None = None, password: str = PASSWORD, **fields: Any
    ) -> Account:
        body = {"email": f"{username}@example.com", "username": username, "password": password}
        body.update(fields)
        response = self.client.post(
            "/api/v1/auth/register", json=body, params={"ref": ref} if ref else None
        )
        assert response.status_code == 201, response.text
        user = response.json()
        token = self.login(user["email"], password)
        return Account(UUID(user["id"]), user["email"], user["username"], password, token)

    def admin(self, username: str = "admin") -> Account:
        result = CreateSuperuser(self.core.uow, self.core.clock, self.core.hasher)(
            email=f"{username}@example.com", username=username, password=PASSWORD
        )
        user = result.user
        return Account(user.id, user.email, user.username, PASSWORD, self.login(user.email))

    def post(
        self,
        account: Account,
        amount: str,
        kind: TransactionType = TransactionType.DEPOSIT,
        description: str = "Test deposit",
    ) -> None:
        """Write a ledger entry straight through the core, as another feature would."""
        with self.core.uow() as uow:
            post_entry(
                uow,
                self.core.clock,
                user_id=account.id,
                amount=Decimal(amount),
                transaction_type=kind,
                description=description,
                reference_type="test",
                reference_id=str(account.id),
            )
            uow.commit()


@pytest.fixture
def accounts(client: ApiClient, core: Core) -> Accounts:
    return Accounts(client, core)
