"""The embedded default end to end: `zenzefi serve` (API, worker and scheduler in one process,
SQLite, no Redis) takes a webhook subscription and a purchase over HTTP, and a loopback receiver
gets the signed `token.purchased` message; without WEBHOOK_ALLOW_PRIVATE the loopback URL is 400."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.notifications import eventually, free_port
from tests.worker.test_cli import environment, login, start, stop, zenzefi
from tests.worker.test_webhook_delivery import Receiver
from zenzefi_core import verify_webhook


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def serve_and(tmp_path: Path, allow_private: str, receiver: Receiver) -> httpx.Response:
    """Buy a token through a served API with a webhook on `receiver`; the subscription's
    response (the purchase happens only when it was accepted)."""
    env = environment(data_dir=str(tmp_path / "data"), webhook_allow_private=allow_private)
    operator_account = ["--email", "op@example.com", "--username", "operator"]
    created = zenzefi(env, "admin", "create", *operator_account, "--password", "operator pw 1")
    assert created.returncode == 0, created.stderr
    port = free_port()
    server = start(env, "serve", "--port", str(port))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

            def healthy() -> bool:
                assert server.poll() is None, "the server exited during startup"
                try:
                    return client.get("/health").status_code == 200
                except httpx.HTTPError:
                    return False

            eventually(healthy, timeout=30, what="the server to answer /health")
            operator = login(client, "op@example.com", "operator pw 1")
            body = {"email": "alice@example.com", "username": "alice", "password": "alice pw 12"}
            alice_id = client.post("/api/v1/auth/register", json=body).json()["id"]
            alice = login(client, "alice@example.com", "alice pw 12")
            credited = client.post(
                f"/api/v1/admin/users/{alice_id}/credit",
                json={"amount": "50.00", "reason": "test"},
                headers=operator,
            )
            assert credited.status_code in (200, 201), credited.text
            subscribed = client.post(
                "/api/v1/webhooks",
                json={"url": receiver.url, "events": ["token.purchased"]},
                headers=alice,
            )
            if subscribed.status_code == 201:
                bought = client.post(
                    "/api/v1/tokens/purchase", json={"duration_hours": 24}, headers=alice
                )
                assert bought.status_code == 201, bought.text
                eventually(lambda: receiver.received, timeout=20, what="the webhook")
            return subscribed
    finally:
        output = stop(server)
        assert server.returncode in {0, -signal.SIGTERM}, output


def test_a_purchase_on_the_embedded_default_reaches_the_receiver(
    tmp_path: Path, receiver: Receiver
) -> None:
    subscribed = serve_and(tmp_path, "true", receiver)
    [(headers, body)] = receiver.received
    verify_webhook(subscribed.json()["secret"], headers, body)
    assert json.loads(body)["type"] == "token.purchased"


def test_the_embedded_default_refuses_a_loopback_url(tmp_path: Path, receiver: Receiver) -> None:
    subscribed = serve_and(tmp_path, "false", receiver)
    assert subscribed.status_code == 400, subscribed.text
    assert receiver.received == []
