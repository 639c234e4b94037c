"""Top-ups over HTTP: a pending intent, the provider's signed callback, replays and dev mode."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.api.conftest import Account, Accounts, ApiClient, make_settings, running
from zenzefi_api.app import create_app
from zenzefi_core.adapters.payments import HmacPaymentProvider
from zenzefi_core.bootstrap import Core
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.settings import PaymentSettings

PURCHASE = "/api/v1/currency/purchase"
PAYMENTS = "/api/v1/currency/payments"
WEBHOOK = "/api/v1/payments/webhook"
BALANCE = "/api/v1/currency/balance"
TRANSACTIONS = "/api/v1/currency/transactions"


def _signed(core: Core, payload: dict[str, Any], **sign: Any) -> tuple[bytes, dict[str, str]]:
    provider = core.payment_provider
    assert isinstance(provider, HmacPaymentProvider)
    body = json.dumps(payload).encode()
    return body, {**provider.sign(body, **sign), "Content-Type": "application/json"}


def _callback(
    client: ApiClient, core: Core, payment_id: str, status: str = "succeeded", event: str = "e1"
) -> Any:
    body, headers = _signed(core, {"event_id": event, "payment_id": payment_id, "status": status})
    return client.post(WEBHOOK, content=body, headers=headers)


def _top_up(client: ApiClient, account: Account, amount: str = "50.00") -> dict[str, Any]:
    response = client.post(PURCHASE, json={"amount_znc": amount}, headers=account.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _balance(client: ApiClient, account: Account) -> str:
    return str(client.get(BALANCE, headers=account.headers).json()["balance"])


def test_a_top_up_credits_only_when_the_provider_confirms(
    client: ApiClient, accounts: Accounts, core: Core
) -> None:
    alice = accounts.register("alice")
    intent = _top_up(client, alice, "81.5")
    assert intent["status"] == "pending"
    assert intent["amount_znc"] == "81.50"
    assert intent["amount_rub"] == "815.00"
    assert intent["payment_url"].endswith(f"/pay/{intent['payment_id']}")
    assert intent["completed_at"] is None
    assert _balance(client, alice) == "0.00"

    response = _callback(client, core, intent["payment_id"])
    assert response.status_code == 200, response.text
    assert response.json() == {
        "result": "processed",
        "payment_id": intent["payment_id"],
        "status": "succeeded",
        "credited": True,
    }
    assert _balance(client, alice) == "81.50"
    ledger = client.get(TRANSACTIONS, headers=alice.headers).json()["items"]
    assert [(t["amount"], t["transaction_type"]) for t in ledger] == [("81.50", "deposit")]

    shown = client.get(f"{PAYMENTS}/{intent['payment_id']}", headers=alice.headers).json()
    assert shown["status"] == "succeeded"
    assert shown["completed_at"] is not None
    listed = client.get(PAYMENTS, headers=alice.headers).json()
    assert listed["total"] == 1
    assert listed["items"][0]["payment_id"] == intent["payment_id"]


def test_a_replayed_callback_credits_nothing(
    client: ApiClient, accounts: Accounts, core: Core
) -> None:
    alice = accounts.register("alice")
    intent = _top_up(client, alice, "10.00")
    body, headers = _signed(
        core, {"event_id": "evt", "payment_id": intent["payment_id"], "status": "succeeded"}
    )
    first = client.post(WEBHOOK, content=body, headers=headers)
    again = client.post(WEBHOOK, content=body, headers=headers)
    other_event = _callback(client, core, intent["payment_id"], event="evt-2")
    assert first.json()["result"] == "processed"
    assert again.status_code == 200
    assert again.json()["result"] == "duplicate"
    assert again.json()["credited"] is False
    assert other_event.json()["credited"] is False
    assert _balance(client, alice) == "10.00"


def test_concurrent_callbacks_credit_once(
    client: ApiClient, accounts: Accounts, core: Core
) -> None:
    alice = accounts.register("alice")
    intent = _top_up(client, alice, "25.00")
    results: list[int] = []
    barrier = threading.Barrier(6)

    def deliver(n: int) -> None:
        barrier.wait()
        results.append(_callback(client, core, intent["payment_id"], event=f"e{n % 2}").status_code)

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 6
    assert _balance(client, alice) == "25.00"


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_failed_and_cancelled_payments_never_credit(
    client: ApiClient, accounts: Accounts, core: Core, status: str
) -> None:
    alice = accounts.register("alice")
    intent = _top_up(client, alice)
    assert _callback(client, core, intent["payment_id"], status).json()["credited"] is False
    late = _callback(client, core, intent["payment_id"], "succeeded", event="late")
    assert late.json() == {
        "result": "processed",
        "payment_id": intent["payment_id"],
        "status": status,
        "credited": False,
    }
    assert _balance(client, alice) == "0.00"


def test_forged_stale_and_unsigned_callbacks_are_401_and_change_nothing(
    client: ApiClient, accounts: Accounts, core: Core
) -> None:
    alice = accounts.register("alice")
    intent = _top_up(client, alice)
    payload = {"event_id": "x", "payment_id": intent["payment_id"], "status": "succeeded"}
    body, headers = _signed(core, payload)

    forger = HmacPaymentProvider(secret="guess", checkout_url="https://x", clock=core.clock)
    forged = client.post(WEBHOOK, content=body, headers=forger.sign(body))
    unsigned = client.post(WEBHOOK, content=body)
    tampered = client.post(WEBHOOK, content=body.replace(b"x", b"y"), headers=headers)
    stale_at = int(core.clock.now().timestamp()) - 3600
    stale_body, stale_headers = _signed(core, payload, timestamp=stale_at)
    stale = client.post(WEBHOOK, content=stale_body, headers=stale_headers)
    for response in (forged, unsigned, tampered, stale):
        assert response.status_code == 401, response.text
        assert "signature" in response.json()["detail"].lower() or "window" in response.text
    assert _balance(client, alice) == "0.00"
    shown = client.get(f"{PAYMENTS}/{intent['payment_id']}", headers=alice.headers).json()
    assert shown["status"] == "pending"


def test_bad_callback_bodies_are_4xx(client: ApiClient, accounts: Accounts, core: Core) -> None:
    alice = accounts.register("alice")
    intent = _top_up(client, alice)
    cases: list[tuple[dict[str, Any] | list[Any], int]] = [
        ({"event_id": "a", "payment_id": intent["payment_id"], "status": "pending"}, 400),
        ({"event_id": "a", "payment_id": "not-a-uuid", "status": "succeeded"}, 400),
        ({"payment_id": intent["payment_id"], "status": "succeeded"}, 400),
        ([1, 2, 3], 400),
        (
            {
                "event_id": "a",
                "payment_id": intent["payment_id"],
                "status": "succeeded",
                "amount_rub": "1.00",
            },
            400,
        ),
        (
            {
                "event_id": "a",
                "payment_id": "01a21658-84f9-7000-8b32-4e30172c88fd",
                "status": "succeeded",
            },
            404,
        ),
    ]
    for payload, expected in cases:
        body, headers = _signed(core, payload)  # type: ignore[arg-type]
        response = client.post(WEBHOOK, content=body, headers=headers)
        assert response.status_code == expected, (payload, response.text)
    assert _balance(client, alice) == "0.00"


@pytest.mark.parametrize(
    "body",
    [
        {"amount_znc": "0"},
        {"amount_znc": "-5.00"},
        {"amount_znc": "1.234"},
        {"amount_znc": 10.5},
        {"amount_znc": "1e3"},
        {"amount_znc": "99999999.00"},
        {"amount_znc": "10.00", "amount_rub": "1.00"},
        {},
    ],
)
def test_bad_top_up_requests_are_422_and_create_nothing(
    client: ApiClient, accounts: Accounts, body: dict[str, Any]
) -> None:
    alice = accounts.register("alice")
    response = client.post(PURCHASE, json=body, headers=alice.headers)
    assert response.status_code == 422, response.text
    assert client.get(PAYMENTS, headers=alice.headers).json()["total"] == 0


def test_payments_need_a_login_and_are_private(
    client: ApiClient, accounts: Accounts, core: Core
) -> None:
    alice = accounts.register("alice")
    bob = accounts.register("bob")
    intent = _top_up(client, alice)
    assert client.post(PURCHASE, json={"amount_znc": "5.00"}).status_code == 401
    assert client.get(PAYMENTS).status_code == 401
    assert client.get(f"{PAYMENTS}/{intent['payment_id']}", headers=bob.headers).status_code == 404
    assert client.get(PAYMENTS, headers=bob.headers).json()["total"] == 0


def test_manual_settlement_is_off_unless_dev_mode(
    client: ApiClient, accounts: Accounts, core: Core
) -> None:
    alice = accounts.register("alice")
    admin = accounts.admin()
    intent = _top_up(client, alice)
    url = f"/api/v1/admin/payments/{intent['payment_id']}/settle"
    assert client.post(url, json={}, headers=admin.headers).status_code == 404
    assert client.post(url, json={}, headers=alice.headers).status_code == 403
    assert _balance(client, alice) == "0.00"


@pytest.fixture
def dev_client(tmp_path: Path, engine: Engine) -> Iterator[tuple[ApiClient, Core]]:
    settings = make_settings(tmp_path, engine, payments=PaymentSettings(dev_mode=True))
    core = Core.from_settings(settings, hasher=fast_password_hasher())
    try:
        with running(create_app(settings, core)) as client:
            yield client, core
    finally:
        core.close()


def test_dev_mode_lets_an_operator_settle_once_and_audits_it(
    dev_client: tuple[ApiClient, Core],
) -> None:
    client, core = dev_client
    accounts = Accounts(client, core)
    alice = accounts.register("alice")
    admin = accounts.admin()
    intent = _top_up(client, alice, "12.00")
    url = f"/api/v1/admin/payments/{intent['payment_id']}/settle"

    assert client.post(url, json={}, headers=alice.headers).status_code == 403
    assert client.post(url, json={"status": "pending"}, headers=admin.headers).status_code == 422
    first = client.post(url, json={"status": "succeeded"}, headers=admin.headers)
    assert first.status_code == 200, first.text
    assert first.json()["credited"] is True
    again = client.post(url, json={}, headers=admin.headers)
    assert again.json()["result"] == "duplicate"
    assert _balance(client, alice) == "12.00"

    audit = client.get("/api/v1/admin/audit-log", headers=admin.headers).json()["items"]
    settled = [e for e in audit if e["action"] == "payment.settled_manually"]
    assert len(settled) == 1
    assert settled[0]["target_type"] == "payment"
    assert settled[0]["target_id"] == intent["payment_id"]
