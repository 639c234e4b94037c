"""Webhook endpoints over HTTP: the documented shapes, the secret shown once, ownership (others
get 404 everywhere), private URLs refused unless allowed, the test event, rotation, the
delivery log and redelivery."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import Engine

from tests.api.conftest import Account, Accounts, ApiClient, make_settings
from zenzefi_core.adapters.cache import InProcessCache
from zenzefi_core.adapters.resolver import SocketResolver
from zenzefi_core.bootstrap import Core
from zenzefi_core.services.webhooks import CacheSlots, DeliverWebhook, WebhookPolicy
from zenzefi_core.settings import Settings
from zenzefi_core.webhooks import SecretCipher, verify_webhook

HOOKS = "/api/v1/webhooks"
URL = "http://127.0.0.1:9/hook"


@pytest.fixture
def allow_private() -> bool:
    return True


@pytest.fixture
def settings(tmp_path: Path, engine: Engine, allow_private: bool) -> Settings:
    return make_settings(tmp_path, engine, webhook_allow_private=allow_private)


class Receiver:
    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes]] = []

    def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, addresses: Sequence[str]
    ) -> tuple[int, bytes]:
        self.requests.append((dict(headers), body))
        return (self.statuses.pop(0) if self.statuses else 200), b"ok"


def deliver(core: Core, receiver: Receiver, delivery_id: str) -> None:
    """What the worker does with one message (the API tests run no worker)."""
    policy = WebhookPolicy.from_settings(core.settings)
    DeliverWebhook(
        core.uow,
        core.clock,
        SecretCipher(core.settings.resolved_secret_key()),
        receiver,
        SocketResolver(),
        CacheSlots(InProcessCache(), 1, policy.lease),
        policy,
    )(UUID(delivery_id))


def create(client: ApiClient, who: Account, **body: Any) -> dict[str, Any]:
    payload = {"url": URL, "events": ["token.purchased", "balance.low"], **body}
    response = client.post(HOOKS, json=payload, headers=who.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_create_list_read_update_delete(client: ApiClient, accounts: Accounts) -> None:
    alice = accounts.register("alice")
    created = create(client, alice)
    assert set(created) == {"webhook_id", "secret", "url", "events"}
    assert created["secret"].startswith("whsec_")
    assert created["url"] == URL
    assert created["events"] == ["token.purchased", "balance.low"]
    hook = f"{HOOKS}/{created['webhook_id']}"

    listed = client.get(HOOKS, headers=alice.headers).json()
    assert [item["webhook_id"] for item in listed["items"]] == [created["webhook_id"]]
    assert "secret" not in listed["items"][0]
    assert created["secret"] not in client.get(HOOKS, headers=alice.headers).text
    read = client.get(hook, headers=alice.headers).json()
    assert read["is_active"] is True
    assert read["disabled_at"] is None

    changed = client.patch(
        hook, json={"events": ["token.revoked"], "is_active": False}, headers=alice.headers
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["events"] == ["token.revoked"]
    assert changed.json()["is_active"] is False
    assert client.patch(hook, json={"events": ["nope"]}, headers=alice.headers).status_code == 422

    assert client.delete(hook, headers=alice.headers).status_code == 204
    assert client.get(hook, headers=alice.headers).status_code == 404
    assert client.get(HOOKS, headers=alice.headers).json() == {"items": []}


def test_only_the_owner_sees_or_touches_an_endpoint(
    client: ApiClient, accounts: Accounts, core: Core
) -> None:
    alice, mallory = accounts.register("alice"), accounts.register("mallory")
    created = create(client, alice)
    hook = f"{HOOKS}/{created['webhook_id']}"
    sent = client.post(f"{hook}/test", headers=alice.headers)
    assert sent.status_code == 202, sent.text
    delivery = sent.json()["delivery_id"]

    for method, path, body in (
        ("GET", hook, None),
        ("PATCH", hook, {"is_active": False}),
        ("DELETE", hook, None),
        ("POST", f"{hook}/test", None),
        ("POST", f"{hook}/rotate-secret", None),
        ("GET", f"{hook}/deliveries", None),
        ("POST", f"{hook}/deliveries/{delivery}/redeliver", None),
    ):
        response = client.request(method, path, json=body, headers=mallory.headers)
        assert response.status_code == 404, (method, path, response.text)
    assert client.get(HOOKS, headers=mallory.headers).json() == {"items": []}
    assert client.get(hook, headers=alice.headers).json()["is_active"] is True
    assert client.get(HOOKS).status_code == 401


def test_the_delivery_log_and_redelivery(client: ApiClient, accounts: Accounts, core: Core) -> None:
    alice = accounts.register("alice")
    created = create(client, alice)
    hook = f"{HOOKS}/{created['webhook_id']}"
    sent = client.post(f"{hook}/test", headers=alice.headers).json()
    assert sent["event"] == "webhook.test"
    assert sent["state"] == "pending"
    assert sent["attempt_count"] == 0

    receiver = Receiver(500)
    deliver(core, receiver, sent["delivery_id"])
    [entry] = client.get(f"{hook}/deliveries", headers=alice.headers).json()["items"]
    assert entry["delivery_id"] == sent["delivery_id"]
    assert entry["state"] == "pending"
    assert entry["attempt_count"] == 1
    assert entry["last_status_code"] == 500
    assert entry["next_retry_at"] is not None
    [attempt] = entry["attempts"]
    assert attempt["status_code"] == 500
    assert attempt["response_body"] == "ok"
    assert attempt["error"] == "HTTP 500"

    redelivered = client.post(
        f"{hook}/deliveries/{sent['delivery_id']}/redeliver", headers=alice.headers
    )
    assert redelivered.status_code == 202, redelivered.text
    deliver(core, receiver, sent["delivery_id"])
    [entry] = client.get(f"{hook}/deliveries", headers=alice.headers).json()["items"]
    assert entry["state"] == "succeeded"
    assert entry["attempt_count"] == 2
    assert entry["next_retry_at"] is None
    ids = {headers["webhook-id"] for headers, _ in receiver.requests}
    assert ids == {sent["delivery_id"]}
    for headers, body in receiver.requests:
        verify_webhook(created["secret"], headers, body)
    missing = f"{hook}/deliveries/{created['webhook_id']}/redeliver"
    assert client.post(missing, headers=alice.headers).status_code == 404


def test_rotation_shows_the_new_secret_once_and_signs_with_both(
    client: ApiClient, accounts: Accounts, core: Core
) -> None:
    alice = accounts.register("alice")
    created = create(client, alice)
    hook = f"{HOOKS}/{created['webhook_id']}"
    rotated = client.post(f"{hook}/rotate-secret", headers=alice.headers)
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert body["secret"].startswith("whsec_")
    assert body["secret"] != created["secret"]
    assert body["previous_secret_valid_until"] is not None
    sent = client.post(f"{hook}/test", headers=alice.headers).json()
    receiver = Receiver()
    deliver(core, receiver, sent["delivery_id"])
    [(headers, payload)] = receiver.requests
    verify_webhook(created["secret"], headers, payload)
    verify_webhook(body["secret"], headers, payload)


@pytest.mark.parametrize("allow_private", [False])
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://10.0.0.1/",
        "http://169.254.169.254/",
        "http://100.64.0.1/",
        "http://198.18.0.1/",
        "http://0.0.0.0:8000/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::127.0.0.1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:7f00:1::]/",
        "http://[2001::1]/",
        "http://[fd00::2]/",
        "http://[fe80::1%25eth0]/",
        "http://[ff02::1]/",
        "http://2130706433/",
        "http://0x7f.1/",
        "ftp://example.com/",
    ],
)
def test_private_and_non_http_urls_are_400(client: ApiClient, accounts: Accounts, url: str) -> None:
    alice = accounts.register("alice")
    response = client.post(
        HOOKS, json={"url": url, "events": ["token.purchased"]}, headers=alice.headers
    )
    assert response.status_code == 400, response.text
    assert client.get(HOOKS, headers=alice.headers).json() == {"items": []}


def test_unknown_events_are_422(client: ApiClient, accounts: Accounts) -> None:
    alice = accounts.register("alice")
    for events in (["token.bought"], []):
        response = client.post(HOOKS, json={"url": URL, "events": events}, headers=alice.headers)
        assert response.status_code == 422, response.text
