"""Accounts over HTTP: registration (with referral codes), login, bearer checks, the profile and
the referral summary."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from tests.api.conftest import PASSWORD, SECRET_KEY, Accounts, ApiClient
from zenzefi_api.auth import TokenIssuer
from zenzefi_core.clock import FixedClock, SystemClock
from zenzefi_core.domain import TransactionType

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
ME = "/api/v1/users/me"
REFERRALS = "/api/v1/users/me/referrals"


def test_register_returns_the_new_user(client: ApiClient) -> None:
    response = client.post(
        REGISTER,
        json={
            "email": "  Alice@Example.COM ",
            "username": "Alice",
            "password": PASSWORD,
            "full_name": "Alice Liddell",
        },
    )
    assert response.status_code == 201
    user = response.json()
    assert set(user) == {
        "id",
        "email",
        "username",
        "full_name",
        "referral_code",
        "is_active",
        "is_superuser",
        "created_at",
    }
    assert user["email"] == "alice@example.com"
    assert user["username"] == "Alice"
    assert user["full_name"] == "Alice Liddell"
    assert re.fullmatch(r"[A-Z0-9]{12}", user["referral_code"])
    assert user["is_active"] is True
    assert user["is_superuser"] is False
    assert uuid.UUID(user["id"])
    assert datetime.fromisoformat(user["created_at"]).utcoffset() == timedelta(0)
    assert "password" not in response.text


def test_register_with_a_referral_code_links_the_referrer(
    client: ApiClient, accounts: Accounts
) -> None:
    alice = accounts.register("alice")
    code = client.get(ME, headers=alice.headers).json()["referral_code"]
    accounts.register("bob", ref=code)
    accounts.register("carol", ref=code.lower())
    accounts.register("dave")

    summary = client.get(REFERRALS, headers=alice.headers).json()
    assert summary["total_referrals"] == 2
    assert [r["username"] for r in summary["referrals"]] == ["bob", "carol"]
    admin = accounts.admin()
    listed = client.get("/api/v1/admin/users", params={"q": "bob"}, headers=admin.headers)
    assert listed.json()["items"][0]["referred_by_id"] == str(alice.id)


@pytest.mark.parametrize("code", ["NOSUCHCODE12", "abc", "x" * 64, "ÜNÏCÖDË"])
def test_an_unknown_referral_code_is_400(client: ApiClient, accounts: Accounts, code) -> None:
    accounts.register("alice")
    response = client.post(
        REGISTER,
        params={"ref": code},
        json={"email": "bob@example.com", "username": "bob", "password": PASSWORD},
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "Invalid referral code"
    assert (
        client.post(LOGIN, json={"email": "bob@example.com", "password": PASSWORD}).status_code
        == 401
    )


def test_an_inactive_referrers_code_is_400(client: ApiClient, accounts: Accounts) -> None:
    alice = accounts.register("alice")
    code = client.get(ME, headers=alice.headers).json()["referral_code"]
    admin = accounts.admin()
    client.post(f"/api/v1/admin/users/{alice.id}/deactivate", headers=admin.headers)
    response = client.post(
        REGISTER,
        params={"ref": code},
        json={"email": "bob@example.com", "username": "bob", "password": PASSWORD},
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "Invalid referral code"


def test_duplicates_are_400_whatever_the_case(client: ApiClient, accounts: Accounts) -> None:
    accounts.register("alice")
    taken_email = client.post(
        REGISTER, json={"email": "ALICE@example.com", "username": "alice2", "password": PASSWORD}
    )
    assert taken_email.status_code == 400
    assert taken_email.json()["detail"] == "A user with this email already exists"
    taken_name = client.post(
        REGISTER, json={"email": "other@example.com", "username": "ALICE", "password": PASSWORD}
    )
    assert taken_name.status_code == 400
    assert taken_name.json()["detail"] == "A user with this username already exists"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"email": "not-an-email"}, None),
        ({"username": "ab"}, "username"),
        ({"username": "a" * 51}, "username"),
        ({"username": "bad name!"}, None),
        ({"password": "short"}, None),
        ({"password": "x" * 73}, "password"),
        ({"password": "é" * 40}, None),
        ({"full_name": "x" * 201}, "full_name"),
        ({"email": 5}, "email"),
        ({"nickname": "extra"}, "nickname"),
    ],
)
def test_invalid_registrations_are_422(client: ApiClient, change, field) -> None:
    body = {"email": "alice@example.com", "username": "alice", "password": PASSWORD, **change}
    response = client.post(REGISTER, json=body)
    assert response.status_code == 422, response.text
    if field is not None:
        assert [e["field"] for e in response.json()["errors"]] == [field]
    assert (
        client.post(LOGIN, json={"email": "alice@example.com", "password": PASSWORD}).status_code
        == 401
    )


def test_missing_fields_are_422(client: ApiClient) -> None:
    response = client.post(REGISTER, json={"email": "alice@example.com"})
    assert response.status_code == 422
    assert response.json()["errors"]


def test_login_returns_a_bearer_token_for_an_hour(client: ApiClient, accounts: Accounts) -> None:
    alice = accounts.register("alice")
    response = client.post(LOGIN, json={"email": "ALICE@example.com", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    me = client.get(ME, headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json()["id"] == str(alice.id)
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3600


@pytest.mark.parametrize(
    "credentials",
    [
        {"email": "alice@example.com", "password": "wrong password"},
        {"email": "nobody@example.com", "password": PASSWORD},
        {"email": "not an email", "password": PASSWORD},
    ],
)
def test_wrong_credentials_are_401(client: ApiClient, accounts: Accounts, credentials) -> None:
    accounts.register("alice")
    response = client.post(LOGIN, json=credentials)
    assert response.status_code == 401
    assert response.json()["detail"] == "Incorrect email or password"
    assert response.headers["www-authenticate"] == "Bearer"


def test_an_inactive_user_cannot_log_in_and_is_cut_off_at_once(
    client: ApiClient, accounts: Accounts
) -> None:
    alice = accounts.register("alice")
    admin = accounts.admin()
    assert client.get(ME, headers=alice.headers).status_code == 200
    client.post(f"/api/v1/admin/users/{alice.id}/deactivate", headers=admin.headers)

    # The login she already holds ends immediately (401), not when its token expires.
    for method, path in [("GET", ME), ("GET", "/api/v1/currency/balance"), ("PATCH", ME)]:
        response = client.request(method, path, headers=alice.headers, json={})
        assert response.status_code == 401
        assert response.json()["detail"] == "Could not validate credentials"
    login = client.post(LOGIN, json={"email": alice.email, "password": PASSWORD})
    assert login.status_code == 401
    assert login.json()["detail"] == "Incorrect email or password"

    # Reactivated, she logs in again: the login from before the deactivation stays ended.
    client.post(f"/api/v1/admin/users/{alice.id}/activate", headers=admin.headers)
    assert client.get(ME, headers=alice.headers).status_code == 401
    again = {"Authorization": f"Bearer {accounts.login(alice.email)}"}
    assert client.get(ME, headers=again).status_code == 200


def _forged(user_id: uuid.UUID, **claims: object) -> str:
    """A token signed with the app's real key, with some claims replaced."""
    key = hmac.new(SECRET_KEY.encode(), b"zenzefi-login-tokens", hashlib.sha256).digest()
    now = int(time.time())
    payload = {"sub": str(user_id), "aud": "zenzefi-api", "iat": now, "exp": now + 3600}
    payload.update(claims)
    return jwt.encode(payload, key, algorithm="HS256")


def test_tokens_from_the_issuer_work_until_they_expire(client: ApiClient, accounts) -> None:
    alice = accounts.register("alice")
    fresh = TokenIssuer(SECRET_KEY, timedelta(hours=1), SystemClock()).issue(alice.id, 0)
    assert client.get(ME, headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    two_hours_ago = FixedClock(datetime.now(UTC) - timedelta(hours=2))
    stale = TokenIssuer(SECRET_KEY, timedelta(hours=1), two_hours_ago).issue(alice.id, 0)
    assert client.get(ME, headers={"Authorization": f"Bearer {stale}"}).status_code == 401


def test_bad_bearer_tokens_are_401(client: ApiClient, accounts: Accounts) -> None:
    alice = accounts.register("alice")
    other_key = jwt.encode(
        {"sub": str(alice.id), "aud": "zenzefi-api", "iat": int(time.time()), "exp": 2**40},
        "another-secret-key-that-is-long-enough-for-hs256",
        algorithm="HS256",
    )
    cases = {
        "missing": {},
        "empty bearer": {"Authorization": "Bearer "},
        "wrong scheme": {"Authorization": f"Basic {alice.token}"},
        "garbage": {"Authorization": "Bearer not.a.jwt"},
        "other key": {"Authorization": f"Bearer {other_key}"},
        "expired": {"Authorization": f"Bearer {_forged(alice.id, exp=int(time.time()) - 10)}"},
        "unknown user": {"Authorization": f"Bearer {_forged(uuid.uuid4())}"},
        "not a uuid": {"Authorization": f"Bearer {_forged(alice.id, sub='alice')}"},
        "wrong audience": {"Authorization": f"Bearer {_forged(alice.id, aud='elsewhere')}"},
        "none algorithm": {
            "Authorization": "Bearer "
            + jwt.encode({"sub": str(alice.id), "aud": "zenzefi-api"}, "", algorithm="none")
        },
    }
    for name, headers in cases.items():
        response = client.get(ME, headers=headers)
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"] == "Bearer", name
        assert response.json()["detail"] in {"Not authenticated", "Could not validate credentials"}


def test_anonymous_requests_are_401_before_the_body_is_read(client: ApiClient) -> None:
    response = client.patch(ME, content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 401


def test_get_me_shows_the_profile(client: ApiClient, accounts: Accounts) -> None:
    alice = accounts.register("alice", full_name="Alice")
    me = client.get(ME, headers=alice.headers).json()
    assert me["username"] == "alice"
    assert me["email"] == "alice@example.com"
    assert me["full_name"] == "Alice"


def test_patch_me_changes_only_what_is_sent(client: ApiClient, accounts: Accounts) -> None:
    alice = accounts.register("alice", full_name="Alice")
    renamed = client.patch(ME, headers=alice.headers, json={"full_name": "  Alice L.  "})
    assert renamed.status_code == 200
    assert renamed.json()["full_name"] == "Alice L."
    unchanged = client.patch(ME, headers=alice.headers, json={})
    assert unchanged.json()["full_name"] == "Alice L."
    cleared = client.patch(ME, headers=alice.headers, json={"full_name": None})
    assert cleared.json()["full_name"] is None


def test_password_change_needs_the_current_password(client: ApiClient, accounts: Accounts) -> None:
    alice = accounts.register("alice")
    missing = client.patch(ME, headers=alice.headers, json={"password": "a new password"})
    assert missing.status_code == 422
    assert "current_password" in missing.json()["detail"]
    wrong = client.patch(
        ME,
        headers=alice.headers,
        json={"password": "a new password", "current_password": "not it", "full_name": "X"},
    )
    assert wrong.status_code == 400
    assert wrong.json()["detail"] == "Current password is incorrect"
    assert client.get(ME, headers=alice.headers).json()["full_name"] is None

    changed = client.patch(
        ME, headers=alice.headers, json={"password": "a new password", "current_password": PASSWORD}
    )
    assert changed.status_code == 200
    assert client.post(LOGIN, json={"email": alice.email, "password": PASSWORD}).status_code == 401
    assert accounts.login(alice.email, "a new password")


@pytest.mark.parametrize(
    "body",
    [
        {"full_name": "x" * 201},
        {"full_name": 5},
        {"password": None, "current_password": PASSWORD},
        {"password": "short", "current_password": PASSWORD},
        {"email": "new@example.com"},
        {"is_superuser": True},
        [],
    ],
)
def test_invalid_profile_changes_are_422(client: ApiClient, accounts: Accounts, body) -> None:
    alice = accounts.register("alice")
    before = client.get(ME, headers=alice.headers).json()
    response = client.patch(ME, headers=alice.headers, json=body)
    assert response.status_code == 422, response.text
    assert client.get(ME, headers=alice.headers).json() == before


def test_referrals_show_usernames_dates_and_net_bonus(
    client: ApiClient, accounts: Accounts
) -> None:
    alice = accounts.register("alice")
    code = client.get(ME, headers=alice.headers).json()["referral_code"]
    bob = accounts.register("bob", ref=code)
    accounts.post(alice, "16.30", TransactionType.REFERRAL_BONUS, "Referral bonus")
    accounts.post(alice, "-1.00", TransactionType.REFERRAL_CLAWBACK, "Referral clawback")
    accounts.post(alice, "50.00")

    response = client.get(REFERRALS, headers=alice.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["referral_code"] == code
    assert body["total_referrals"] == 1
    assert body["bonus_earned"] == "15.30"
    assert body["referrals"][0]["username"] == "bob"
    joined = client.get(ME, headers=bob.headers).json()["created_at"]
    assert body["referrals"][0]["joined_at"] == joined
    assert set(body["referrals"][0]) == {"username", "joined_at"}
    assert "@" not in response.text

    empty = client.get(REFERRALS, headers=bob.headers).json()
    assert empty["total_referrals"] == 0
    assert empty["bonus_earned"] == "0.00"
    assert empty["referrals"] == []


def test_referrals_page_through_referees(client: ApiClient, accounts: Accounts) -> None:
    alice = accounts.register("alice")
    code = client.get(ME, headers=alice.headers).json()["referral_code"]
    for name in ["bob", "carol", "dave"]:
        accounts.register(name, ref=code)
    page = client.get(REFERRALS, headers=alice.headers, params={"limit": 2, "offset": 1}).json()
    assert [r["username"] for r in page["referrals"]] == ["carol", "dave"]
    assert (page["total_referrals"], page["limit"], page["offset"]) == (3, 2, 1)
    bad: list[dict[str, Any]] = [{"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "many"}]
    for params in bad:
        response = client.get(REFERRALS, headers=alice.headers, params=params)
        assert response.status_code == 422
        assert response.json()["errors"][0]["source"] == "query"
