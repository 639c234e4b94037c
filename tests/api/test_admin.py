"""Operator routes over HTTP: balance adjustments, user management and the audit log."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.api.conftest import Accounts, ApiClient

USERS = "/api/v1/admin/users"
AUDIT = "/api/v1/admin/audit-log"


def credit(client: ApiClient, admin, user_id, amount, reason="Goodwill"):
    return client.post(
        f"{USERS}/{user_id}/credit",
        headers=admin.headers,
        json={"amount": amount, "reason": reason},
    )


def snapshot(client: ApiClient, admin, user) -> tuple:
    """What a refused request must leave alone: the user, their ledger and the audit log."""
    return (
        client.get(f"{USERS}/{user.id}", headers=admin.headers).json(),
        client.get("/api/v1/currency/transactions", headers=user.headers).json(),
        client.get(AUDIT, headers=admin.headers).json()["total"],
    )


def test_a_credit_writes_an_adjustment_and_its_audit_entry(
    client: ApiClient, accounts: Accounts
) -> None:
    admin = accounts.admin()
    alice = accounts.register("alice")
    response = credit(client, admin, alice.id, "50.00", "  Welcome bonus ")
    assert response.status_code == 201
    body = response.json()
    assert body["new_balance"] == "50.00"
    assert body["transaction"]["amount"] == "50.00"
    assert body["transaction"]["transaction_type"] == "adjustment"
    assert body["transaction"]["description"] == "Welcome bonus"

    assert client.get("/api/v1/currency/balance", headers=alice.headers).json() == {
        "balance": "50.00",
        "currency": "ZNC",
    }
    history = client.get("/api/v1/currency/transactions", headers=alice.headers).json()
    assert history["items"][0]["id"] == body["transaction"]["id"]

    entry = client.get(AUDIT, headers=admin.headers).json()["items"][0]
    assert entry["id"] == body["audit_entry_id"]
    assert entry["action"] == "balance.adjusted"
    assert entry["actor_id"] == str(admin.id)
    assert (entry["target_type"], entry["target_id"]) == ("user", str(alice.id))
    assert entry["client_address"] == "testclient"
    assert entry["details"] == {
        "amount": "50.00",
        "reason": "Welcome bonus",
        "transaction_id": body["transaction"]["id"],
        "balance_after": "50.00",
    }
    assert entry["created_at"].endswith("+00:00")


def test_a_debit_works_down_to_zero_but_never_below(client: ApiClient, accounts: Accounts) -> None:
    admin = accounts.admin()
    alice = accounts.register("alice")
    credit(client, admin, alice.id, "20.00")
    before = snapshot(client, admin, alice)
    refused = credit(client, admin, alice.id, "-20.01", "Too much")
    assert refused.status_code == 402
    assert refused.json()["detail"] == (
        "Insufficient balance. Required: 20.01 ZNC, Available: 20.00 ZNC"
    )
    assert snapshot(client, admin, alice) == before

    debited = credit(client, admin, alice.id, "-20", "Correction")
    assert debited.status_code == 201
    assert debited.json()["new_balance"] == "0.00"
    assert debited.json()["transaction"]["amount"] == "-20.00"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": "0", "reason": "r"}, "amount"),
        ({"amount": "0.00", "reason": "r"}, "amount"),
        ({"amount": "1.001", "reason": "r"}, "amount"),
        ({"amount": "-0.005", "reason": "r"}, "amount"),
        ({"amount": "abc", "reason": "r"}, "amount"),
        ({"amount": "1e3", "reason": "r"}, "amount"),
        ({"amount": "NaN", "reason": "r"}, "amount"),
        ({"amount": "1000000.01", "reason": "r"}, "amount"),
        ({"amount": 5, "reason": "r"}, "amount"),
        ({"amount": 5.5, "reason": "r"}, "amount"),
        ({"amount": "9" * 40, "reason": "r"}, "amount"),
        ({"amount": "5.00"}, "reason"),
        ({"amount": "5.00", "reason": "x" * 501}, "reason"),
        ({"amount": "5.00", "reason": "r", "currency": "ZNC"}, "currency"),
    ],
)
def test_bad_credits_are_422_and_change_nothing(
    client: ApiClient, accounts: Accounts, body, field
) -> None:
    admin = accounts.admin()
    alice = accounts.register("alice")
    before = snapshot(client, admin, alice)
    response = client.post(f"{USERS}/{alice.id}/credit", headers=admin.headers, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field
    assert snapshot(client, admin, alice) == before


@pytest.mark.parametrize("reason", ["", "   ", "two\nlines"])
def test_a_credit_needs_a_one_line_reason(client: ApiClient, accounts: Accounts, reason) -> None:
    admin = accounts.admin()
    alice = accounts.register("alice")
    response = credit(client, admin, alice.id, "1.00", reason)
    assert response.status_code == 422
    assert "reason" in response.json()["detail"]


def test_crediting_an_unknown_user_is_404(client: ApiClient, accounts: Accounts) -> None:
    admin = accounts.admin()
    response = credit(client, admin, uuid.uuid4(), "1.00")
    assert response.status_code == 404
    assert response.json()["detail"] == "User not found"
    assert client.post(f"{USERS}/not-a-uuid/credit", headers=admin.headers).status_code == 404


def _admin_routes(user_id) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", USERS, None),
        ("GET", f"{USERS}/{user_id}", None),
        ("POST", f"{USERS}/{user_id}/credit", {"amount": "1.00", "reason": "r"}),
        ("POST", f"{USERS}/{user_id}/activate", None),
        ("POST", f"{USERS}/{user_id}/deactivate", None),
        ("POST", f"{USERS}/{user_id}/grant-superuser", None),
        ("POST", f"{USERS}/{user_id}/revoke-superuser", None),
        ("GET", AUDIT, None),
    ]


def test_admin_routes_are_403_for_users_and_401_for_strangers(
    client: ApiClient, accounts: Accounts
) -> None:
    alice = accounts.register("alice")
    for method, path, body in _admin_routes(alice.id):
        as_user = client.request(method, path, headers=alice.headers, json=body)
        assert as_user.status_code == 403, path
        assert as_user.json()["detail"] == "Superuser privileges required"
        assert client.request(method, path, json=body).status_code == 401, path
    assert client.get("/api/v1/currency/balance", headers=alice.headers).json()["balance"] == (
        "0.00"
    )


def test_list_and_search_users(client: ApiClient, accounts: Accounts) -> None:
    admin = accounts.admin()
    for name in ["alice", "alina", "bob"]:
        accounts.register(name)
    everyone = client.get(USERS, headers=admin.headers).json()
    assert [u["username"] for u in everyone["items"]] == ["bob", "alina", "alice", "admin"]
    assert everyone["total"] == 4
    user = everyone["items"][0]
    assert set(user) == {
        "id",
        "email",
        "username",
        "full_name",
        "referral_code",
        "referred_by_id",
        "is_active",
        "is_superuser",
        "balance",
        "created_at",
    }
    assert user["balance"] == "0.00"

    def names(**params) -> list[str]:
        page = client.get(USERS, headers=admin.headers, params=params).json()
        return [u["username"] for u in page["items"]]

    assert names(q="ALI") == ["alina", "alice"]
    assert names(q="bob@EXAMPLE") == ["bob"]
    assert names(q="%") == []
    assert names(is_superuser="true") == ["admin"]
    assert names(limit=1, offset=1) == ["alina"]
    bad: list[dict[str, Any]] = [{"limit": 0}, {"is_active": "maybe"}, {"q": "x" * 255}]
    for params in bad:
        assert client.get(USERS, headers=admin.headers, params=params).status_code == 422


def test_get_one_user(client: ApiClient, accounts: Accounts) -> None:
    admin = accounts.admin()
    alice = accounts.register("alice")
    response = client.get(f"{USERS}/{alice.id}", headers=admin.headers)
    assert response.status_code == 200
    assert response.json()["email"] == "alice@example.com"
    assert client.get(f"{USERS}/{uuid.uuid4()}", headers=admin.headers).status_code == 404


def test_deactivate_and_activate_are_audited(client: ApiClient, accounts: Accounts) -> None:
    admin = accounts.admin()
    alice = accounts.register("alice")
    off = client.post(f"{USERS}/{alice.id}/deactivate", headers=admin.headers)
    assert off.status_code == 200
    assert off.json()["is_active"] is False
    assert client.get("/api/v1/users/me", headers=alice.headers).status_code == 401
    on = client.post(f"{USERS}/{alice.id}/activate", headers=admin.headers)
    assert on.json()["is_active"] is True

    log = client.get(AUDIT, headers=admin.headers).json()
    assert [e["action"] for e in log["items"]] == ["user.activated", "user.deactivated"]
    assert log["items"][1]["details"] == {"field": "is_active", "before": True, "after": False}
    assert {e["target_id"] for e in log["items"]} == {str(alice.id)}


def test_grant_and_revoke_superuser(client: ApiClient, accounts: Accounts) -> None:
    admin = accounts.admin()
    alice = accounts.register("alice")
    granted = client.post(f"{USERS}/{alice.id}/grant-superuser", headers=admin.headers)
    assert granted.json()["is_superuser"] is True
    # The role works at once, with the token she already has.
    assert client.get(USERS, headers=alice.headers).status_code == 200
    revoked = client.post(f"{USERS}/{alice.id}/revoke-superuser", headers=alice.headers)
    assert revoked.status_code == 400
    assert revoked.json()["detail"] == "You cannot revoke your own superuser role"
    by_admin = client.post(f"{USERS}/{alice.id}/revoke-superuser", headers=admin.headers)
    assert by_admin.json()["is_superuser"] is False
    assert client.get(USERS, headers=alice.headers).status_code == 403

    actions = [e["action"] for e in client.get(AUDIT, headers=admin.headers).json()["items"]]
    assert actions == ["user.superuser_revoked", "user.superuser_granted"]


def test_operators_cannot_lock_themselves_out(client: ApiClient, accounts: Accounts) -> None:
    admin = accounts.admin()
    response = client.post(f"{USERS}/{admin.id}/deactivate", headers=admin.headers)
    assert response.status_code == 400
    assert response.json()["detail"] == "You cannot deactivate your own account"
    assert client.get(AUDIT, headers=admin.headers).json()["total"] == 0
    assert client.get(USERS, headers=admin.headers).status_code == 200


def test_account_changes_on_unknown_users_are_404(client: ApiClient, accounts: Accounts) -> None:
    admin = accounts.admin()
    for action in ["activate", "deactivate", "grant-superuser", "revoke-superuser"]:
        response = client.post(f"{USERS}/{uuid.uuid4()}/{action}", headers=admin.headers)
        assert response.status_code == 404, action


def test_the_audit_log_pages_and_filters(client: ApiClient, accounts: Accounts) -> None:
    admin = accounts.admin()
    alice = accounts.register("alice")
    bob = accounts.register("bob")
    credit(client, admin, alice.id, "1.00")
    credit(client, admin, bob.id, "2.00")
    client.post(f"{USERS}/{bob.id}/deactivate", headers=admin.headers)

    def entries(**params: Any) -> dict[str, Any]:
        body: dict[str, Any] = client.get(AUDIT, headers=admin.headers, params=params).json()
        return body

    everything = entries()
    assert everything["total"] == 3
    assert [e["action"] for e in everything["items"]] == [
        "user.deactivated",
        "balance.adjusted",
        "balance.adjusted",
    ]
    assert entries(action="balance.adjusted")["total"] == 2
    assert [e["details"]["amount"] for e in entries(target_id=str(alice.id))["items"]] == ["1.00"]
    page = entries(limit=1, offset=1)
    assert (len(page["items"]), page["total"], page["limit"], page["offset"]) == (1, 3, 1, 1)
    refused: list[dict[str, Any]] = [
        {"action": "user.deleted"},
        {"limit": 500},
        {"target_id": "x" * 65},
    ]
    for params in refused:
        assert client.get(AUDIT, headers=admin.headers, params=params).status_code == 422
