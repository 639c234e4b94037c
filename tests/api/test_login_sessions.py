"""Logins end when they should: a password change or a deactivation refuses every login token
issued before it, on every route (the purchases, which check the account in their own
transaction, included), and a reactivated user logs in again."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid

import jwt
import pytest

from tests.api.conftest import SECRET_KEY, Account, Accounts, ApiClient

ME = "/api/v1/users/me"
PURCHASE = "/api/v1/tokens/purchase"
BALANCE = "/api/v1/currency/balance"
NEW_PASSWORD = "a brand new password"


@pytest.fixture
def alice(accounts: Accounts) -> Account:
    account = accounts.register("alice")
    accounts.post(account, "100.00")
    return account


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed(user_id: uuid.UUID, **claims: object) -> str:
    """A token signed with the app's real key, with the claims given."""
    key = hmac.new(SECRET_KEY.encode(), b"zenzefi-login-tokens", hashlib.sha256).digest()
    now = int(time.time())
    payload: dict[str, object] = {
        "sub": str(user_id),
        "aud": "zenzefi-api",
        "iat": now,
        "exp": now + 3600,
    }
    payload.update(claims)
    return jwt.encode(payload, key, algorithm="HS256")


def refused_everywhere(client: ApiClient, headers: dict[str, str]) -> None:
    starter = client.get("/api/v1/bundles").json()["items"][0]
    reads = [
        ME,
        BALANCE,
        "/api/v1/users/me/referrals",
        "/api/v1/users/me/notifications",
        "/api/v1/currency/transactions",
        "/api/v1/tokens/my-tokens",
        "/api/v1/webhooks",
        # Checks the account in its own transaction, as the purchases do.
        "/api/v1/analytics/usage?period=month",
    ]
    answers = [
        *(client.get(path, headers=headers) for path in reads),
        client.patch(ME, json={"full_name": "Mallory"}, headers=headers),
        client.post(PURCHASE, json={"duration_hours": 1}, headers=headers),
        client.post(
            PURCHASE,
            json={"duration_hours": 1},
            headers={**headers, "Idempotency-Key": "after-the-end"},
        ),
        client.post(f"/api/v1/bundles/{starter['id']}/purchase", headers=headers),
    ]
    assert [a.status_code for a in answers] == [401] * len(answers)
    assert {a.json()["detail"] for a in answers} == {"Could not validate credentials"}


def test_a_password_change_ends_every_earlier_login(
    client: ApiClient, accounts: Accounts, alice: Account
) -> None:
    other_device = bearer(accounts.login(alice.email))
    changed = client.patch(
        ME,
        json={"password": NEW_PASSWORD, "current_password": alice.password},
        headers=alice.headers,
    )
    assert changed.status_code == 200

    refused_everywhere(client, alice.headers)
    refused_everywhere(client, other_device)
    fresh = bearer(accounts.login(alice.email, NEW_PASSWORD))
    assert client.get(ME, headers=fresh).status_code == 200
    assert client.get(BALANCE, headers=fresh).json()["balance"] == "100.00"


def test_a_name_change_or_a_wrong_current_password_ends_nothing(
    client: ApiClient, alice: Account
) -> None:
    renamed = client.patch(ME, json={"full_name": "Alice Liddell"}, headers=alice.headers)
    assert renamed.status_code == 200
    wrong = client.patch(
        ME,
        json={"password": NEW_PASSWORD, "current_password": "not it at all"},
        headers=alice.headers,
    )
    assert wrong.status_code == 400
    me = client.get(ME, headers=alice.headers)
    assert me.status_code == 200
    assert me.json()["full_name"] == "Alice Liddell"


def test_a_deactivation_ends_logins_and_a_reactivated_user_logs_in_again(
    client: ApiClient, accounts: Accounts, alice: Account
) -> None:
    admin = accounts.admin()
    assert (
        client.post(f"/api/v1/admin/users/{alice.id}/deactivate", headers=admin.headers).status_code
        == 200
    )
    refused_everywhere(client, alice.headers)
    assert (
        client.post(f"/api/v1/admin/users/{alice.id}/activate", headers=admin.headers).status_code
        == 200
    )
    refused_everywhere(client, alice.headers)
    fresh = bearer(accounts.login(alice.email))
    bought = client.post(PURCHASE, json={"duration_hours": 1}, headers=fresh)
    assert bought.status_code == 201


def test_a_token_from_before_versions_works_until_the_first_password_change(
    client: ApiClient, alice: Account
) -> None:
    legacy = bearer(signed(alice.id))  # no `sv` claim: version 0, every account's first
    assert client.get(ME, headers=legacy).status_code == 200
    assert client.post(PURCHASE, json={"duration_hours": 1}, headers=legacy).status_code == 201
    client.patch(
        ME,
        json={"password": NEW_PASSWORD, "current_password": alice.password},
        headers=alice.headers,
    )
    assert client.get(ME, headers=legacy).status_code == 401


@pytest.mark.parametrize("version", ["0", 0.0, True, None, [0], 1, -1, 2**70])
def test_a_version_that_is_not_the_accounts_is_refused(
    client: ApiClient, alice: Account, version: object
) -> None:
    headers = bearer(signed(alice.id, sv=version))
    assert client.get(ME, headers=headers).status_code == 401
    assert client.post(PURCHASE, json={"duration_hours": 1}, headers=headers).status_code == 401
    assert client.get(BALANCE, headers=alice.headers).json()["balance"] == "100.00"
