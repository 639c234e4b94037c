"""Webhook delivery end to end: the in-process broker with a worker thread, a real database
(SQLite and PostgreSQL) and a real HTTP receiver on loopback that checks every signature with
`verify_webhook`. Retries use shortened delays; nothing here asserts on timing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID

import pytest
from dramatiq.brokers.stub import StubBroker

from tests.notifications import eventually
from tests.worker.conftest import Running, account
from zenzefi_core.adapters.mail import MemoryMailer, SmtpMailer
from zenzefi_core.adapters.resolver import SocketResolver
from zenzefi_core.bootstrap import Core
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import OutboxEvent
from zenzefi_core.domain.webhooks import DeliveryState
from zenzefi_core.errors import InvalidWebhookUrl
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.tokens import PurchaseToken, TokenOrder
from zenzefi_core.services.webhooks import (
    CreatedWebhook,
    CreateWebhook,
    DeliveryRecord,
    ListDeliveries,
    ListWebhooks,
    Redeliver,
    SendTestWebhook,
    WebhookPolicy,
)
from zenzefi_core.settings import Settings, WebhookSettings
from zenzefi_core.webhooks import SecretCipher, verify_webhook
from zenzefi_worker.app import WorkerApp
from zenzefi_worker.webhooks import HttpxWebhookSender

FAST = WebhookSettings(retry_delays_seconds=[0.1, 0.1, 0.1], timeout_seconds=1.0)


class Receiver:
    """An HTTP server on loopback answering with the queued statuses (then 200); a status of
    0 means "hang until released"."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers.items()), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 0:
                    receiver.release.wait(10)
                    return
                payload = b"x" * 100_000 if status == 299 else b"thanks"
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", receiver.url)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def start(settings: Settings) -> tuple[Core, Running]:
    core = Core.from_settings(settings, hasher=fast_password_hasher())
    app = WorkerApp(core, StubBroker(), mailer=SmtpMailer(settings.smtp))
    running = Running(app)
    running.worker.start()
    return core, running


@pytest.fixture
def hooks(settings: Settings) -> Iterator[tuple[Core, Running]]:
    core, running = start(
        settings.model_copy(update={"webhook_allow_private": True, "webhooks": FAST})
    )
    yield core, running
    running.worker.stop(timeout=5_000)
    running.app.close()
    core.close()


def subscribe(core: Core, user_id: UUID, url: str, events: list[str]) -> CreatedWebhook:
    policy = WebhookPolicy.from_settings(core.settings)
    cipher = SecretCipher(core.settings.resolved_secret_key())
    return CreateWebhook(core.uow, core.clock, cipher, SocketResolver(), policy)(
        user_id, url, events
    )


def log(core: Core, user_id: UUID, endpoint_id: UUID) -> list[DeliveryRecord]:
    return ListDeliveries(core.uow)(user_id, endpoint_id)


def test_a_purchase_reaches_the_receiver_signed(
    hooks: tuple[Core, Running], receiver: Receiver
) -> None:
    core, running = hooks
    alice = account(core, "alice", balance="100.00")
    bob = account(core, "bob", balance="100.00")
    hook = subscribe(core, alice.id, receiver.url, ["token.purchased"])
    subscribe(core, bob.id, receiver.url, ["token.revoked"])
    bought = PurchaseToken(core.uow, core.clock, core.policy)(
        TokenOrder(user_id=alice.id, duration_hours=24)
    )
    running.settle()

    [(headers, body)] = receiver.received
    verify_webhook(hook.secret, headers, body)
    message = json.loads(body)
    assert message["type"] == message["event"] == "token.purchased"
    assert message["data"]["token_id"] == str(bought.token.id)
    assert set(message) == {"type", "event", "timestamp", "data"}
    [record] = log(core, alice.id, hook.endpoint.id)
    assert headers["webhook-id"] == str(record.delivery.id)
    assert record.delivery.state is DeliveryState.SUCCEEDED
    [attempt] = record.attempts
    assert attempt.status_code == 200
    assert attempt.response_body == "thanks"

    # The same event handled again delivers nothing more.
    running.app.handle_event.send(str(record.delivery.event_id))
    running.settle()
    assert len(receiver.received) == 1
    assert len(log(core, alice.id, hook.endpoint.id)) == 1


def test_only_events_a_subscribed_endpoint_wants_reach_the_broker(
    hooks: tuple[Core, Running], receiver: Receiver
) -> None:
    core, running = hooks
    alice = account(core, "alice", balance="100.00")
    handed_over: list[str] = []
    broker = running.app.publisher

    class Watching:
        def publish(self, event: OutboxEvent) -> None:
            handed_over.append(event.event_type)
            broker.publish(event)

    core.publisher = Watching()
    buy = PurchaseToken(core.uow, core.clock, core.policy)
    buy(TokenOrder(user_id=alice.id, duration_hours=1))
    running.settle()
    # No endpoint and no email for a purchase: the event never left the database.
    assert handed_over == []
    with core.uow() as uow:
        assert uow.outbox.pending(limit=10) == []

    # An endpoint created a moment before the next purchase gets it.
    hook = subscribe(core, alice.id, receiver.url, ["token.purchased"])
    second = buy(TokenOrder(user_id=alice.id, duration_hours=1))
    running.settle()
    assert handed_over == ["token.purchased"]
    [(headers, body)] = receiver.received
    verify_webhook(hook.secret, headers, body)
    assert json.loads(body)["data"]["token_id"] == str(second.token.id)


def test_failing_twice_then_succeeding_keeps_one_webhook_id(
    hooks: tuple[Core, Running], receiver: Receiver
) -> None:
    core, running = hooks
    alice = account(core, "alice")
    hook = subscribe(core, alice.id, receiver.url, ["webhook.test"])
    receiver.statuses = [500, 503]
    delivery = SendTestWebhook(core.uow, core.clock)(alice.id, hook.endpoint.id)
    running.settle()

    assert len(receiver.received) == 3
    assert {h["webhook-id"] for h, _ in receiver.received} == {str(delivery.id)}
    for headers, body in receiver.received:
        verify_webhook(hook.secret, headers, body)
    [record] = log(core, alice.id, hook.endpoint.id)
    assert record.delivery.state is DeliveryState.SUCCEEDED
    assert [a.status_code for a in record.attempts] == [500, 503, 200]

    Redeliver(core.uow, core.clock)(alice.id, hook.endpoint.id, delivery.id)
    running.settle()
    assert len(receiver.received) == 4
    assert receiver.received[-1][0]["webhook-id"] == str(delivery.id)
    assert len(log(core, alice.id, hook.endpoint.id)[0].attempts) == 4


def test_a_receiver_that_always_fails_ends_failed_and_large_answers_are_cut(
    hooks: tuple[Core, Running], receiver: Receiver
) -> None:
    core, running = hooks
    alice = account(core, "alice")
    hook = subscribe(core, alice.id, receiver.url, ["webhook.test"])
    receiver.statuses = [299]
    first = SendTestWebhook(core.uow, core.clock)(alice.id, hook.endpoint.id)
    running.settle()
    receiver.statuses = [500] * 4
    second = SendTestWebhook(core.uow, core.clock)(alice.id, hook.endpoint.id)
    running.settle()

    records = {r.delivery.id: r for r in log(core, alice.id, hook.endpoint.id)}
    cut = records[first.id].attempts[0].response_body
    assert cut is not None
    assert len(cut) == 1024
    failed = records[second.id]
    assert failed.delivery.state is DeliveryState.FAILED
    assert [a.status_code for a in failed.attempts] == [500] * 4


def test_a_hanging_receiver_is_cut_at_the_timeout(
    hooks: tuple[Core, Running], receiver: Receiver
) -> None:
    core, running = hooks
    alice = account(core, "alice")
    hook = subscribe(core, alice.id, receiver.url, ["webhook.test"])
    receiver.statuses = [0]
    SendTestWebhook(core.uow, core.clock)(alice.id, hook.endpoint.id)
    running.settle()
    [record] = log(core, alice.id, hook.endpoint.id)
    assert record.delivery.state is DeliveryState.SUCCEEDED
    first = record.attempts[0]
    assert first.status_code is None
    assert first.error is not None
    assert "no answer within" in first.error


def test_loopback_is_refused_at_creation_and_at_delivery_unless_allowed(
    settings: Settings, receiver: Receiver
) -> None:
    allowed, running_allowed = start(
        settings.model_copy(update={"webhook_allow_private": True, "webhooks": FAST})
    )
    running_allowed.worker.stop(timeout=5_000)
    alice = account(allowed, "alice")
    hook = subscribe(allowed, alice.id, receiver.url, ["webhook.test"])
    running_allowed.app.close()
    allowed.close()

    core, running = start(settings.model_copy(update={"webhooks": FAST}))
    try:
        with pytest.raises(InvalidWebhookUrl):
            subscribe(core, alice.id, receiver.url, ["webhook.test"])
        # Created while allowed; the check at delivery time refuses it now.
        SendTestWebhook(core.uow, core.clock)(alice.id, hook.endpoint.id)
        running.settle()
        assert receiver.received == []
        [record] = log(core, alice.id, hook.endpoint.id)
        assert record.delivery.state is DeliveryState.FAILED
        assert all("private" in (a.error or "") for a in record.attempts)
    finally:
        running.worker.stop(timeout=5_000)
        running.app.close()
        core.close()


def test_a_test_event_the_broker_missed_goes_out_with_the_relay(
    hooks: tuple[Core, Running], receiver: Receiver
) -> None:
    core, running = hooks
    alice = account(core, "alice")
    hook = subscribe(core, alice.id, receiver.url, ["token.revoked"])
    publisher, core.publisher = core.publisher, None  # the broker was down at commit
    SendTestWebhook(core.uow, core.clock)(alice.id, hook.endpoint.id)
    core.publisher = publisher
    running.settle()
    assert receiver.received == []

    def swept() -> bool:
        running.app.run_job("outbox-relay")
        running.settle()
        return len(receiver.received) == 1

    eventually(swept, timeout=timedelta(seconds=20).total_seconds())
    verify_webhook(hook.secret, *receiver.received[0])


def test_an_endpoint_failing_for_five_days_is_disabled_and_its_owner_emailed(
    settings: Settings, receiver: Receiver
) -> None:
    clock = FixedClock(datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
    core = Core.from_settings(
        settings.model_copy(update={"webhook_allow_private": True, "webhooks": FAST}),
        clock=clock,
        hasher=fast_password_hasher(),
    )
    mailer = MemoryMailer()
    running = Running(WorkerApp(core, StubBroker(), mailer=mailer))
    running.worker.start()
    try:
        alice = account(core, "alice")
        hook = subscribe(core, alice.id, receiver.url, ["webhook.test"])
        receiver.statuses = [500] * 100
        for _ in range(6):
            SendTestWebhook(core.uow, core.clock)(alice.id, hook.endpoint.id)
            running.settle()
            clock.advance(timedelta(days=1))
        [endpoint] = ListWebhooks(core.uow)(alice.id)
        assert not endpoint.is_active
        [email] = mailer.sent
        assert email.recipient == alice.email
        assert email.subject == "Webhook endpoint disabled"
        assert receiver.url in email.text
        # Disabled: the next test event is not attempted.
        SendTestWebhook(core.uow, core.clock)(alice.id, hook.endpoint.id)
        running.settle()
        assert len(receiver.received) == 6
    finally:
        running.worker.stop(timeout=5_000)
        running.app.close()
        core.close()


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    sender = HttpxWebhookSender(FAST)
    try:
        receiver.statuses = [302]
        status, _ = sender.post(receiver.url, {"webhook-id": "msg"}, b"{}", addresses=["127.0.0.1"])
    finally:
        sender.close()
    assert status == 302
    assert len(receiver.received) == 1
