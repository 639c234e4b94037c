"""The worker's metrics: outcomes counted in process (the embedded worker's, which the API
serves), and `zenzefi worker`'s own endpoint adding up its processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest

from tests.metrics import Samples, moved, parse, value
from tests.notifications import SmtpServer, eventually, free_port
from tests.worker.conftest import Running, account, debit
from tests.worker.test_cli import environment, mailbox, start, stop
from tests.worker.test_webhook_delivery import FAST, Receiver, subscribe
from tests.worker.test_webhook_delivery import start as start_hooks
from zenzefi_core.bootstrap import Core
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.webhooks import SendTestWebhook
from zenzefi_core.settings import DatabaseSettings, RedisSettings, Settings
from zenzefi_worker.app import WorkerApp
from zenzefi_worker.broker import build_broker

EMAILS = "zenzefi_emails_total"
DELIVERIES = "zenzefi_webhook_deliveries_total"
MESSAGES = "zenzefi_worker_messages_total"
FAILURES = "zenzefi_worker_message_failures_total"
DURATION = "zenzefi_worker_message_duration_seconds_count"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def hooks(settings: Settings) -> Iterator[tuple[Core, Running]]:
    core, running = start_hooks(
        settings.model_copy(update={"webhook_allow_private": True, "webhooks": FAST})
    )
    yield core, running
    running.worker.stop(timeout=5_000)
    running.app.close()
    core.close()


def here() -> Samples:
    """This process's metrics, as the API's `/metrics` shows them on the embedded default."""
    return parse(generate_latest(REGISTRY).decode())


def test_emails_and_actor_runs_are_counted_by_outcome(
    running: Running, core: Core, smtp: SmtpServer
) -> None:
    before = here()
    alice = account(core, "alice", balance="15.00")
    debit(core, alice, "8.00")
    running.settle()
    smtp.refused.add("bob@example.com")
    bob = account(core, "bob", balance="15.00")
    debit(core, bob, "8.00")
    running.settle()

    after = here()
    assert moved(before, after, EMAILS, {"outcome": "sent"}) == 1
    assert moved(before, after, EMAILS, {"outcome": "failed"}) == 1
    assert moved(before, after, EMAILS, {"outcome": "retrying"}) == 0
    handled = {"queue": "events", "actor": "handle_event"}
    sent = {"queue": "emails", "actor": "send_notification"}
    assert moved(before, after, MESSAGES, handled) == 2
    assert moved(before, after, MESSAGES, sent) == 2
    assert moved(before, after, DURATION, sent) == 2
    assert moved(before, after, FAILURES, sent) == 0


def test_webhook_deliveries_are_counted_by_outcome_and_retries_are_no_failures(
    hooks: tuple[Core, Running], receiver: Receiver
) -> None:
    core, running = hooks
    alice = account(core, "alice")
    hook = subscribe(core, alice.id, receiver.url, ["webhook.test"])
    before = here()
    receiver.statuses = [500, 503]
    SendTestWebhook(core.uow, core.clock)(alice.id, hook.endpoint.id)
    running.settle()
    receiver.statuses = [500] * 4
    SendTestWebhook(core.uow, core.clock)(alice.id, hook.endpoint.id)
    running.settle()

    after = here()
    # First: two failed attempts, then success. Second: three failed, the fourth the last.
    assert moved(before, after, DELIVERIES, {"outcome": "succeeded"}) == 1
    assert moved(before, after, DELIVERIES, {"outcome": "retrying"}) == 5
    assert moved(before, after, DELIVERIES, {"outcome": "failed"}) == 1
    deliver = {"queue": "webhooks", "actor": "deliver_webhook"}
    assert moved(before, after, MESSAGES, deliver) == 7
    assert moved(before, after, FAILURES, deliver) == 0


def test_the_worker_command_serves_the_sum_of_its_processes(
    tmp_path: Path, redis_url: str, redis_namespace: str
) -> None:
    port = free_port()
    database = f"sqlite:///{tmp_path / 'zenzefi.db'}"
    env = environment(
        data_dir=str(tmp_path / "data"),
        secret_key="worker-metrics-secret-" + "w" * 40,
        database_url=database,
        redis_url=redis_url,
        redis_namespace=redis_namespace,
        metrics_worker_port=str(port),
        metrics_token="scrape-the-workers",
    )
    settings = Settings(
        data_dir=tmp_path / "data",
        database=DatabaseSettings(url=database),
        redis=RedisSettings(url=redis_url, namespace=redis_namespace),
    )
    core = Core.from_settings(settings, hasher=fast_password_hasher())
    core.migrate()
    app = WorkerApp(core, build_broker(settings))
    workers = start(env, "worker", "--processes", "2", "--threads", "1")
    url = f"http://127.0.0.1:{port}/metrics"
    auth = {"Authorization": "Bearer scrape-the-workers"}

    def scrape() -> Samples | None:
        try:
            response = httpx.get(url, headers=auth, timeout=5)
        except httpx.TransportError:
            return None
        return parse(response.text) if response.status_code == 200 else None

    try:
        eventually(scrape, timeout=60, what="the worker metrics endpoint")
        refused = httpx.get(url, timeout=5)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"

        # An email (the enqueue right after the commit) and six job messages, spread over
        # both processes by the broker.
        alice = account(core, "alice", balance="15.00")
        debit(core, alice, "8.00")
        for _ in range(6):
            app.job_actors["session-cleanup"].send()
        jobs = {"queue": "jobs", "actor": "session_cleanup"}

        def done() -> bool:
            samples = scrape()
            return (
                samples is not None
                and value(samples, MESSAGES, **jobs) == 6
                and value(samples, EMAILS, outcome="sent") == 1
            )

        eventually(done, timeout=60, what="the jobs and the email counted")
    finally:
        output = stop(workers)
        app.close()
        core.close()
    assert [m["Subject"] for m in mailbox(tmp_path / "data")] == ["Low balance alert"], output
    assert workers.returncode in {0, -15}, output
