"""Webhooks in the production shape: the process that commits a purchase and a separate worker
share a real Redis (broker and per-endpoint slots), on SQLite and PostgreSQL, and a loopback
receiver gets one correctly signed `token.purchased` message."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import dramatiq
import pytest

from tests.notifications import eventually
from tests.worker.conftest import account
from tests.worker.test_webhook_delivery import FAST, Receiver, log, subscribe
from zenzefi_core.bootstrap import Core
from zenzefi_core.domain.webhooks import DeliveryState
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.tokens import PurchaseToken, TokenOrder
from zenzefi_core.settings import Settings
from zenzefi_core.webhooks import verify_webhook
from zenzefi_worker.app import WorkerApp
from zenzefi_worker.broker import build_broker
from zenzefi_worker.webhooks import RedisSlotCache

pytestmark = pytest.mark.redis


@pytest.fixture
def apps(redis_settings: Callable[..., Settings]) -> Iterator[tuple[WorkerApp, WorkerApp]]:
    settings = redis_settings().model_copy(update={"webhook_allow_private": True, "webhooks": FAST})
    made = [
        WorkerApp(
            Core.from_settings(settings, hasher=fast_password_hasher()), build_broker(settings)
        )
        for _ in range(2)
    ]
    yield made[0], made[1]
    for app in made:
        app.close()
        app.core.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def test_a_purchase_reaches_the_receiver_through_redis(
    apps: tuple[WorkerApp, WorkerApp], receiver: Receiver
) -> None:
    api, worker_side = apps
    worker = dramatiq.Worker(worker_side.broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        alice = account(api.core, "alice", balance="50.00")
        hook = subscribe(api.core, alice.id, receiver.url, ["token.purchased"])
        receiver.statuses = [502]
        PurchaseToken(api.core.uow, api.core.clock, api.core.policy)(
            TokenOrder(user_id=alice.id, duration_hours=24)
        )

        def delivered() -> bool:
            records = log(api.core, alice.id, hook.endpoint.id)
            return bool(records) and records[0].delivery.state is DeliveryState.SUCCEEDED

        eventually(delivered, timeout=20, what="the delivery to succeed")
    finally:
        worker.stop(timeout=5_000)
    assert len(receiver.received) == 2
    for headers, body in receiver.received:
        verify_webhook(hook.secret, headers, body)
        assert json.loads(body)["type"] == "token.purchased"
    assert len({h["webhook-id"] for h, _ in receiver.received}) == 1


def test_the_slots_are_shared_through_redis(apps: tuple[WorkerApp, WorkerApp]) -> None:
    first, second = apps
    namespace = first.core.settings.redis.namespace
    one = RedisSlotCache(first.broker.client, namespace)  # type: ignore[attr-defined]
    two = RedisSlotCache(second.broker.client, namespace)  # type: ignore[attr-defined]
    assert one.add("slot", "1", 30)
    assert not two.add("slot", "1", 30)
    assert two.get("slot") == "1"
    one.delete("slot")
    assert two.add("slot", "1", 30)
