"""A `zenzefi worker` killed with SIGKILL while it is sending a webhook and an email.

Both are in flight (the receiver and the mail server have the message and have not answered)
when the worker and its processes die. Nothing is marked done, and each item's lease keeps
other workers off it. Once the lease has run out, the relay hands both to a new worker, which
sends them again under the same identity: the same `webhook-id` and the same `Message-ID`.
A receiver that drops what it has seen (as docs/webhooks.md tells it to) and a mail system
that drops a repeated `Message-ID` see each exactly once, and the log says each was delivered.

Waiting out the real leases (a minute for emails, the webhook timeout plus 30 s for webhooks)
would make the test slow, so it moves them into the past, as time would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.fault.conftest import (
    SECRET_KEY,
    FaultDatabase,
    HoldingSmtp,
    PrivateRedis,
    Process,
    Receiver,
)
from tests.fault.conftest import environment as zenzefi_environment
from tests.notifications import eventually
from tests.shop import open_account
from zenzefi_core.adapters.resolver import SocketResolver
from zenzefi_core.bootstrap import Core
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType
from zenzefi_core.ids import new_id
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.wallet import DebitWallet, WalletChange
from zenzefi_core.services.webhooks import CreateWebhook, WebhookPolicy
from zenzefi_core.settings import DatabaseSettings, Settings
from zenzefi_core.webhooks import SecretCipher

pytestmark = pytest.mark.fault


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(hold_first=True)
    yield server
    server.stop()


@pytest.fixture
def smtp() -> Iterator[HoldingSmtp]:
    server = HoldingSmtp(hold_first=True)
    yield server
    server.stop()


def low_balance_with_a_webhook(tmp_path: Path, database_url: str, hook_url: str) -> None:
    """A customer subscribed to `balance.low` whose balance crosses the line: one event that
    calls for one email and one webhook, waiting in the outbox for the relay."""
    settings = Settings(
        data_dir=tmp_path / "data",
        secret_key=SecretStr(SECRET_KEY),
        database=DatabaseSettings(url=database_url),
        webhook_allow_private=True,
    )
    core = Core.from_settings(settings, hasher=fast_password_hasher())
    try:
        core.migrate()
        bob = open_account(core.uow, FixedClock(core.clock.now()), "bob", balance="15.00")
        CreateWebhook(
            core.uow,
            core.clock,
            SecretCipher(SECRET_KEY),
            SocketResolver(),
            WebhookPolicy.from_settings(settings),
        )(bob.id, hook_url, ["balance.low"])
        DebitWallet(core.uow, core.clock, core.policy.low_balance_threshold)(
            WalletChange(
                user_id=bob.id,
                amount=Decimal("8.00"),
                transaction_type=TransactionType.ADJUSTMENT,
                description="fault test debit",
                reference_type="test",
                reference_id=str(new_id()),
            )
        )
    finally:
        core.close()


def test_a_worker_killed_mid_delivery_leaves_each_delivered_once_in_effect(
    tmp_path: Path,
    fault_database: FaultDatabase,
    redis_up: PrivateRedis,
    receiver: Receiver,
    smtp: HoldingSmtp,
    processes: Callable[..., Process],
) -> None:
    low_balance_with_a_webhook(tmp_path, fault_database.url, receiver.url)
    env = zenzefi_environment(
        data_dir=str(tmp_path / "data"),
        secret_key=SECRET_KEY,
        database_url=fault_database.url,
        redis_url=redis_up.url,
        redis_namespace="fault-kill",
        smtp_host="127.0.0.1",
        smtp_port=str(smtp.port),
        smtp_starttls="false",
        smtp_timeout_seconds="15",
        webhook_allow_private="true",
        webhooks_timeout_seconds="15",
        notifications_retry_base_seconds="0.2",
        scheduler_outbox_relay_seconds="0.5",
        scheduler_lock_ttl_seconds="2",
    )
    scheduler = processes(env, tmp_path / "scheduler.log", "scheduler")
    first_worker = processes(
        env, tmp_path / "worker-1.log", "worker", "--processes", "1", "--threads", "4"
    )

    eventually(
        lambda: receiver.messages() and smtp.received(),
        timeout=30,
        what="the webhook and the email to be in flight",
    )
    first_worker.kill()
    receiver.release.set()
    smtp.release.set()

    def states() -> tuple[object, object]:
        return (
            fault_database.scalar("SELECT state FROM notifications"),
            fault_database.scalar("SELECT state FROM webhook_deliveries"),
        )

    assert states() == ("queued", "pending"), "the kill landed after the deliveries"
    # The leases run out.
    for table in ("notifications", "webhook_deliveries"):
        expired = fault_database.execute(
            f"UPDATE {table} SET locked_until = now() - interval '1 second'"
            " WHERE locked_until > now()"
        )
        assert expired == 1, f"no lease held in {table}"

    second_worker = processes(
        env, tmp_path / "worker-2.log", "worker", "--processes", "1", "--threads", "4"
    )
    eventually(
        lambda: states() == ("sent", "succeeded"),
        timeout=30,
        what=f"a new worker to finish both deliveries: {states()}",
    )

    webhook_ids = [delivery_id for delivery_id, _ in receiver.messages()]
    assert len(webhook_ids) == 2, "the cut-off attempt and the one that finished"
    assert len(set(webhook_ids)) == 1, "a retry keeps the delivery's webhook-id"
    assert {body["type"] for _, body in receiver.messages()} == {"balance.low"}
    message_ids = smtp.received()
    assert len(message_ids) == 2
    assert len(set(message_ids)) == 1, "a retry keeps the email's Message-ID"
    assert fault_database.scalar("SELECT count(*) FROM notifications") == 1
    assert fault_database.scalar("SELECT count(*) FROM webhook_deliveries") == 1

    assert second_worker.alive(), second_worker.output()
    assert scheduler.alive(), scheduler.output()
