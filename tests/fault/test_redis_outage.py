"""Redis stops under the production shape: `zenzefi serve`, `zenzefi worker` and `zenzefi
scheduler` on PostgreSQL and Redis, a webhook receiver and an upstream on loopback.

While Redis is down the proxy keeps serving tokens, both one it had cached and one activated
during the outage (the database answers what the cache cannot), purchases still succeed, and
their events wait in the outbox. Once Redis is back (empty: it kept nothing), the relay hands
the waiting events over and the receiver gets each of them once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fault.conftest import (
    SECRET_KEY,
    FaultDatabase,
    PrivateRedis,
    Process,
    Receiver,
    Upstream,
    open_shop,
    start_api,
    zenzefi,
)
from tests.fault.conftest import environment as zenzefi_environment
from tests.notifications import eventually

pytestmark = pytest.mark.fault


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def purchased_tokens(receiver: Receiver) -> list[str]:
    return [
        str(body["data"]["token_id"])  # type: ignore[index]
        for _, body in receiver.messages()
        if body["type"] == "token.purchased"
    ]


def test_redis_down_proxy_serves_from_the_database_and_events_wait(
    tmp_path: Path,
    fault_database: FaultDatabase,
    redis_up: PrivateRedis,
    upstream: Upstream,
    receiver: Receiver,
    processes: Callable[..., Process],
) -> None:
    env = zenzefi_environment(
        data_dir=str(tmp_path / "data"),
        secret_key=SECRET_KEY,
        database_url=fault_database.url,
        redis_url=redis_up.url,
        redis_namespace="fault-redis",
        upstream_url=upstream.url,
        webhook_allow_private="true",
        usage_flush_seconds="0.2",
        scheduler_outbox_relay_seconds="0.5",
        scheduler_lock_ttl_seconds="2",
    )
    worker = processes(env, tmp_path / "worker.log", "worker", "--processes", "1")
    scheduler = processes(env, tmp_path / "scheduler.log", "scheduler")
    base, server = start_api(processes, env, tmp_path)
    with httpx.Client(base_url=base, timeout=8) as client:
        shop = open_shop(client)
        subscribed = client.post(
            "/api/v1/webhooks",
            json={"url": receiver.url, "events": ["token.purchased"]},
            headers=shop.customer,
        )
        assert subscribed.status_code == 201, subscribed.text

        def buy() -> tuple[str, str]:
            bought = client.post(
                "/api/v1/tokens/purchase", json={"duration_hours": 24}, headers=shop.customer
            )
            assert bought.status_code == 201, bought.text
            return bought.json()["id"], bought.json()["token"]

        def forward(token: str, device: str) -> httpx.Response:
            return client.get(
                "/api/v1/proxy/hello",
                headers={"X-Access-Token": token, "X-Device-ID": device},
            )

        first_id, first = buy()
        assert forward(first, "device-one-1").status_code == 200  # activated and cached
        eventually(
            lambda: first_id in purchased_tokens(receiver),
            timeout=20,
            what="the first purchase's webhook",
        )

        # Hung rather than stopped: every cache call would wait; the proxy gives up on Redis
        # quickly and asks the database instead.
        redis_up.pause()
        try:
            for _ in range(3):
                answer = forward(first, "device-one-1")
                assert answer.status_code == 200, answer.text
            hung = client.get("/health")
            assert hung.status_code == 200
            assert hung.json()["status"] == "degraded"
        finally:
            redis_up.resume()

        redis_up.stop()
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        for _ in range(5):
            answer = forward(first, "device-one-1")
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"path": "/hello"}
        second_id, second = buy()
        for _ in range(3):  # activated during the outage, from the database alone
            answer = forward(second, "device-two-2")
            assert answer.status_code == 200, answer.text
        # The device binding still holds without the cache.
        assert forward(second, "device-other").status_code == 409
        waiting = fault_database.scalar(
            "SELECT count(*) FROM outbox_events WHERE dispatched_at IS NULL"
            " AND event_type = 'token.purchased'"
        )
        assert waiting == 1
        assert second_id not in purchased_tokens(receiver)
        assert worker.alive(), worker.output()
        assert scheduler.alive(), scheduler.output()

        redis_up.start()
        eventually(
            lambda: second_id in purchased_tokens(receiver),
            timeout=30,
            what="the webhook of the purchase made while Redis was down",
        )
        eventually(
            lambda: (
                fault_database.scalar(
                    "SELECT count(*) FROM outbox_events WHERE dispatched_at IS NULL"
                )
                == 0
            ),
            timeout=15,
            what="the outbox to empty",
        )
        assert forward(first, "device-one-1").status_code == 200
        assert forward(second, "device-two-2").status_code == 200
        eventually(
            lambda: client.get("/health").json()["status"] == "healthy",
            timeout=10,
            what="/health to be healthy again",
        )

        # Usage of every forwarded request reached the database, outage or not.
        eventually(
            lambda: (
                fault_database.scalar("SELECT coalesce(sum(request_count), 0) FROM proxy_sessions")
                == 14
            ),
            timeout=10,
            what="the usage flush",
        )
    assert sorted(purchased_tokens(receiver)) == sorted([first_id, second_id])
    delivery_ids = [delivery_id for delivery_id, _ in receiver.messages()]
    assert len(delivery_ids) == len(set(delivery_ids)) == 2
    checked = zenzefi(env, "check-ledger")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    log = server.output()
    assert "unhandled error" not in log, log
