"""JSON bodies are read strictly: a boolean sent as 0/1 or "true", or a number sent as a string,
is a 422 naming the field, and changes nothing. Without the strict check Litestar's lax
conversion would accept all of these. Correct bodies still work, and money stays a string."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Account, Accounts, ApiClient
from zenzefi_core.bootstrap import Core
from zenzefi_core.domain.bundles import TokenBundle

BALANCE = "/api/v1/currency/balance"
NOTIFICATIONS = "/api/v1/users/me/notifications"
PURCHASE = "/api/v1/tokens/purchase"


@pytest.fixture
def admin(accounts: Accounts) -> Account:
    return accounts.admin()


@pytest.fixture
def alice(accounts: Accounts) -> Account:
    account = accounts.register("alice")
    accounts.post(account, "1000.00")
    return account


@pytest.fixture
def starter(core: Core) -> TokenBundle:
    with core.uow() as uow:
        return next(b for b in uow.bundles.catalogue(active_only=True) if b.name == "Starter Pack")


def assert_refused_field(response: Any, field: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["detail"] == "Validation failed"
    assert [(e["field"], e["source"]) for e in body["errors"]] == [(field, "body")]


@pytest.mark.parametrize("sent", [0, 1, "false", "true", "1", "null"])
def test_a_bundle_flag_must_be_a_json_boolean(
    client: ApiClient, admin: Account, starter: TokenBundle, sent: Any
) -> None:
    path = f"/api/v1/bundles/{starter.id}"
    before = client.get(path).json()
    response = client.patch(path, json={"is_active": sent}, headers=admin.headers)
    assert_refused_field(response, "is_active")
    assert "Expected `bool`" in response.json()["errors"][0]["message"]
    assert client.get(path).json() == before

    response = client.patch(path, json={"is_active": False}, headers=admin.headers)
    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False


@pytest.mark.parametrize("sent", [0, 1, "false"])
def test_notification_preferences_must_be_json_booleans(
    client: ApiClient, alice: Account, sent: Any
) -> None:
    before = client.get(NOTIFICATIONS, headers=alice.headers).json()
    assert before["balance_low"] is True  # every kind is on until turned off
    response = client.put(NOTIFICATIONS, json={"balance_low": sent}, headers=alice.headers)
    assert_refused_field(response, "balance_low")
    assert client.get(NOTIFICATIONS, headers=alice.headers).json() == before

    response = client.put(NOTIFICATIONS, json={"balance_low": False}, headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {**before, "balance_low": False}


@pytest.mark.parametrize("sent", ["24", "24.0", " 24", 24.0])
def test_a_token_duration_must_be_a_json_integer(
    client: ApiClient, alice: Account, sent: Any
) -> None:
    response = client.post(PURCHASE, json={"duration_hours": sent}, headers=alice.headers)
    assert_refused_field(response, "duration_hours")
    assert "Expected `int`" in response.json()["errors"][0]["message"]
    assert client.get(BALANCE, headers=alice.headers).json()["balance"] == "1000.00"

    response = client.post(PURCHASE, json={"duration_hours": 24}, headers=alice.headers)
    assert response.status_code == 201, response.text


def test_a_new_bundles_count_must_be_a_json_integer(client: ApiClient, admin: Account) -> None:
    body = {"name": "Strict Pack", "token_count": "5", "duration_hours": 24}
    response = client.post("/api/v1/bundles", json=body, headers=admin.headers)
    assert_refused_field(response, "token_count")
    assert "Strict Pack" not in {b["name"] for b in client.get("/api/v1/bundles").json()["items"]}

    response = client.post(
        "/api/v1/bundles", json={**body, "token_count": 5}, headers=admin.headers
    )
    assert response.status_code == 201, response.text


def test_money_is_still_a_string(client: ApiClient, admin: Account, alice: Account) -> None:
    path = f"/api/v1/admin/users/{alice.id}/credit"
    response = client.post(path, json={"amount": 5, "reason": "Goodwill"}, headers=admin.headers)
    assert_refused_field(response, "amount")
    response = client.post(
        path, json={"amount": "5.00", "reason": "Goodwill"}, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["new_balance"] == "1005.00"
