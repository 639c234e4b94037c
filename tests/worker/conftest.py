"""The worker under test: a core on a real database, Dramatiq's in-process broker with a worker
thread (or Redis), and a real SMTP server on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from pydantic import SecretStr
from sqlalchemy import Engine

from tests.notifications import PUBLIC_URL, SECRET_KEY, SmtpServer
from tests.shop import open_account
from zenzefi_core.adapters.mail import SmtpMailer
from zenzefi_core.bootstrap import Core
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType, User
from zenzefi_core.ids import new_id
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.wallet import DebitWallet, WalletChange
from zenzefi_core.settings import (
    DatabaseSettings,
    NotificationSettings,
    RedisSettings,
    Settings,
    SmtpSettings,
)
from zenzefi_worker.app import WorkerApp

#: Retry delays short enough for a test to watch an email fail, wait and go through.
FAST_RETRIES = NotificationSettings(
    max_attempts=4, retry_base_seconds=0.1, retry_max_seconds=0.4, daily_limit=2
)


def make_settings(tmp_path: Path, engine: Engine, smtp_port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "secret_key": SecretStr(SECRET_KEY),
        "public_url": PUBLIC_URL,
        "database": DatabaseSettings(url=engine.url.render_as_string(hide_password=False)),
        "smtp": SmtpSettings(
            host="127.0.0.1",
            port=smtp_port,
            starttls=False,
            timeout_seconds=5,
            ZENZEFI_SMTP_FROM="Zenzefi <no-reply@zenzefi.example>",
        ),
        "notifications": FAST_RETRIES,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def settings(tmp_path: Path, engine: Engine, smtp: SmtpServer) -> Settings:
    return make_settings(tmp_path, engine, smtp.port)


@pytest.fixture
def core(settings: Settings) -> Iterator[Core]:
    core = Core.from_settings(settings, hasher=fast_password_hasher())
    yield core
    core.close()


def account(core: Core, username: str, **fields: Any) -> User:
    """A user, funded by a deposit, created at the core's current time."""
    return open_account(core.uow, FixedClock(core.clock.now()), username, **fields)


def debit(core: Core, user: User, amount: str) -> None:
    """Take money as any purchase would, through the core (and so its after-commit hand-over)."""
    DebitWallet(core.uow, core.clock, core.policy.low_balance_threshold)(
        WalletChange(
            user_id=user.id,
            amount=Decimal(amount),
            transaction_type=TransactionType.ADJUSTMENT,
            description="test debit",
            reference_type="test",
            reference_id=str(new_id()),
        )
    )


class Running:
    """A `WorkerApp` on the in-process broker with a Dramatiq worker consuming it."""

    def __init__(self, app: WorkerApp) -> None:
        self.app = app
        self.worker = dramatiq.Worker(app.broker, worker_threads=2, worker_timeout=50)

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until every queue is empty and nothing is in flight, delayed retries included;
        a message that failed for good fails the test with its exception."""
        broker = self.app.broker
        assert isinstance(broker, StubBroker)
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(int((deadline - time.monotonic()) * 1000), 1)
            for queue in list(broker.queues):
                if not queue.endswith(".DQ"):
                    broker.join(queue, timeout=remaining)
            self.worker.join()
            if not any(q.unfinished_tasks for q in broker.queues.values()):
                return


@pytest.fixture
def running(core: Core, settings: Settings) -> Iterator[Running]:
    app = WorkerApp(core, StubBroker(), mailer=SmtpMailer(settings.smtp))
    running = Running(app)
    running.worker.start()
    yield running
    running.worker.stop(timeout=5_000)


@pytest.fixture
def redis_settings(
    settings: Settings, redis_url: str, redis_namespace: str
) -> Callable[..., Settings]:
    """The test settings pointed at a Redis (the real one unless told otherwise)."""

    def make(url: str = redis_url) -> Settings:
        return settings.model_copy(
            update={"redis": RedisSettings(url=url, namespace=redis_namespace)}
        )

    return make
