"""Access tokens over HTTP: buying every duration, listing, revoking for the price paid, the
Idempotency-Key (sequential and racing retries), and the errors of each route."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from litestar import Litestar

from tests.api.conftest import Account, Accounts, ApiClient
from zenzefi_api.context import api_context
from zenzefi_core.bootstrap import Core
from zenzefi_core.pricing import DEFAULT_PRICES
from zenzefi_core.security import hash_access_token

PURCHASE = "/api/v1/tokens/purchase"
MY_TOKENS = "/api/v1/tokens/my-tokens"
BALANCE = "/api/v1/currency/balance"
TRANSACTIONS = "/api/v1/currency/transactions"
ISSUED_FIELDS = {
    "id",
    "token",
    "duration_hours",
    "scope",
    "cost_znc",
    "created_at",
    "activated_at",
    "expires_at",
    "is_active",
}


def balance(client: ApiClient, account: Account) -> str:
    return str(client.get(BALANCE, headers=account.headers).json()["balance"])


def buy(client: ApiClient, account: Account, hours: int = 24, **headers: str) -> dict:
    response = client.post(
        PURCHASE, json={"duration_hours": hours}, headers={**account.headers, **headers}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def activate(core: Core, token_id: str) -> None:
    """What the proxy does on a token's first request."""
    with core.uow() as uow:
        assert uow.tokens.activate(UUID(token_id), core.clock.now()) is not None
        uow.commit()


@pytest.fixture
def alice(accounts: Accounts) -> Account:
    account = accounts.register("alice")
    accounts.post(account, "1000.00")
    return account


def test_every_duration_can_be_bought_at_its_price(
    client: ApiClient, core: Core, alice: Account
) -> None:
    spent = Decimal("0.00")
    for hours, price in DEFAULT_PRICES.items():
        bought = buy(client, alice, hours)
        spent += price
        assert set(bought) == ISSUED_FIELDS
        assert bought["duration_hours"] == hours
        assert bought["cost_znc"] == f"{price:.2f}"
        assert bought["scope"] == "full"
        assert (bought["activated_at"], bought["expires_at"], bought["is_active"]) == (
            None,
            None,
            True,
        )
        assert datetime.fromisoformat(bought["created_at"]).utcoffset() == timedelta(0)
        # Only the hash is stored; the secret in the answer is the one it was made from.
        with core.uow() as uow:
            stored = uow.tokens.get_by_hash(hash_access_token(bought["token"]))
        assert stored is not None
        assert str(stored.id) == bought["id"]
        assert balance(client, alice) == f"{Decimal('1000.00') - spent:.2f}"

    entries = client.get(TRANSACTIONS, headers=alice.headers, params={"limit": 10}).json()
    purchases = [e["amount"] for e in entries["items"] if e["transaction_type"] == "purchase"]
    assert purchases == [f"-{price:.2f}" for price in list(DEFAULT_PRICES.values())[::-1]]


def test_a_certificates_only_token(client: ApiClient, alice: Account) -> None:
    response = client.post(
        PURCHASE,
        json={"duration_hours": 1, "scope": "certificates_only"},
        headers=alice.headers,
    )
    assert response.status_code == 201
    assert response.json()["scope"] == "certificates_only"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"duration_hours": 5}, "Invalid duration: 5 hours. Available durations: 1, 12, 24, 168"),
        ({"duration_hours": 0}, "Invalid duration"),
        ({"duration_hours": -24}, "Invalid duration"),
        ({"duration_hours": 24, "scope": "admin"}, "Invalid scope"),
    ],
)
def test_what_is_not_for_sale_is_400(
    client: ApiClient, alice: Account, body: dict, detail: str
) -> None:
    response = client.post(PURCHASE, json=body, headers=alice.headers)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(detail)
    assert balance(client, alice) == "1000.00"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"duration_hours": "twenty-four"},
        {"duration_hours": 24.5},
        {"duration_hours": True},
        {"duration_hours": 24, "cost_znc": "0.01"},
        {"duration_hours": 24, "scope": None},
        [24],
    ],
)
def test_malformed_purchases_are_422(client: ApiClient, alice: Account, body: object) -> None:
    assert client.post(PURCHASE, json=body, headers=alice.headers).status_code == 422
    assert balance(client, alice) == "1000.00"


def test_a_short_balance_is_402_and_charges_nothing(client: ApiClient, accounts: Accounts) -> None:
    bob = accounts.register("bob")
    accounts.post(bob, "17.99")
    response = client.post(PURCHASE, json={"duration_hours": 24}, headers=bob.headers)
    assert response.status_code == 402
    assert response.json()["detail"] == (
        "Insufficient balance. Required: 18.00 ZNC, Available: 17.99 ZNC"
    )
    assert balance(client, bob) == "17.99"
    assert client.get(MY_TOKENS, headers=bob.headers).json()["total"] == 0


def test_my_tokens_lists_newest_first_without_secrets(
    client: ApiClient, core: Core, alice: Account
) -> None:
    bought = [buy(client, alice, hours) for hours in (1, 12, 24)]
    newest = buy(client, alice, 1)

    page = client.get(MY_TOKENS, headers=alice.headers).json()
    assert (page["total"], page["limit"], page["offset"]) == (4, 20, 0)
    listed = page["items"]
    assert [t["id"] for t in listed] == [newest["id"]] + [t["id"] for t in reversed(bought)]
    first = listed[-1]
    assert "token" not in first
    assert first["token_prefix"] == bought[0]["token"][:8]
    assert first == {
        "id": bought[0]["id"],
        "token_prefix": bought[0]["token"][:8],
        "duration_hours": 1,
        "scope": "full",
        "cost_znc": "1.00",
        "bundle_purchase_id": None,
        "created_at": bought[0]["created_at"],
        "activated_at": None,
        "expires_at": None,
        "revoked_at": None,
        "is_active": True,
        "status": "ready",
        "time_remaining_seconds": 3600,
    }
    paged = client.get(MY_TOKENS, headers=alice.headers, params={"limit": 2, "offset": 1}).json()
    assert [t["id"] for t in paged["items"]] == [bought[2]["id"], bought[1]["id"]]

    # A used token shows its clock; a revoked one leaves the active list.
    activate(core, bought[1]["id"])
    assert client.delete(f"/api/v1/tokens/{bought[2]['id']}", headers=alice.headers).is_success
    by_id = {t["id"]: t for t in client.get(MY_TOKENS, headers=alice.headers).json()["items"]}
    used = by_id[bought[1]["id"]]
    assert used["status"] == "active"
    assert used["is_active"] is True
    assert 0 < used["time_remaining_seconds"] <= 12 * 3600
    assert datetime.fromisoformat(used["expires_at"]) - datetime.fromisoformat(
        used["activated_at"]
    ) == timedelta(hours=12)
    gone = by_id[bought[2]["id"]]
    assert (gone["status"], gone["is_active"], gone["time_remaining_seconds"]) == (
        "revoked",
        False,
        0,
    )
    assert gone["revoked_at"] is not None
    active = client.get(MY_TOKENS, headers=alice.headers, params={"active_only": "true"}).json()
    assert active["total"] == 3
    assert bought[2]["id"] not in {t["id"] for t in active["items"]}


def test_a_user_sees_only_their_own_tokens(
    client: ApiClient, alice: Account, accounts: Accounts
) -> None:
    buy(client, alice)
    bob = accounts.register("bob")
    assert client.get(MY_TOKENS, headers=bob.headers).json()["items"] == []


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"offset": -1}])
def test_bad_paging_is_422(client: ApiClient, alice: Account, params: dict) -> None:
    assert client.get(MY_TOKENS, headers=alice.headers, params=params).status_code == 422


def test_revoking_an_unused_token_refunds_its_price(client: ApiClient, alice: Account) -> None:
    token = buy(client, alice, 168)
    assert balance(client, alice) == "900.00"
    response = client.delete(f"/api/v1/tokens/{token['id']}", headers=alice.headers)
    assert response.status_code == 200
    assert response.json() == {
        "revoked": True,
        "refund_amount": "100.00",
        "new_balance": "1000.00",
    }
    refund = client.get(TRANSACTIONS, headers=alice.headers).json()["items"][0]
    assert (refund["transaction_type"], refund["amount"]) == ("refund", "100.00")

    again = client.delete(f"/api/v1/tokens/{token['id']}", headers=alice.headers)
    assert again.status_code == 400
    assert again.json()["detail"] == "Token has already been revoked"
    assert balance(client, alice) == "1000.00"


def test_a_used_token_cannot_be_refunded(client: ApiClient, core: Core, alice: Account) -> None:
    token = buy(client, alice)
    activate(core, token["id"])
    response = client.delete(f"/api/v1/tokens/{token['id']}", headers=alice.headers)
    assert response.status_code == 400
    assert response.json()["detail"] == "Token has already been activated and cannot be refunded"
    assert balance(client, alice) == "982.00"


def test_someone_elses_or_an_unknown_token_is_404(
    client: ApiClient, alice: Account, accounts: Accounts
) -> None:
    token = buy(client, alice)
    bob = accounts.register("bob")
    for token_id in (token["id"], str(uuid4())):
        response = client.delete(f"/api/v1/tokens/{token_id}", headers=bob.headers)
        assert response.status_code == 404
        assert response.json()["detail"] == "Token not found"
    assert client.delete("/api/v1/tokens/not-a-uuid", headers=bob.headers).status_code == 404
    assert balance(client, alice) == "982.00"


def test_a_retried_purchase_with_its_key_charges_once(client: ApiClient, alice: Account) -> None:
    first = client.post(
        PURCHASE, json={"duration_hours": 24}, headers={**alice.headers, "Idempotency-Key": "k-1"}
    )
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    retry = client.post(
        PURCHASE, json={"duration_hours": 24}, headers={**alice.headers, "Idempotency-Key": "k-1"}
    )
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json() == first.json()
    assert retry.json()["token"] is not None
    assert balance(client, alice) == "982.00"
    assert client.get(MY_TOKENS, headers=alice.headers).json()["total"] == 1

    # Another key is another purchase; the same key for another request is a conflict.
    buy(client, alice, 24, **{"Idempotency-Key": "k-2"})
    clash = client.post(
        PURCHASE, json={"duration_hours": 12}, headers={**alice.headers, "Idempotency-Key": "k-1"}
    )
    assert clash.status_code == 409
    assert "Idempotency-Key" in clash.json()["detail"]
    assert balance(client, alice) == "964.00"


def test_keys_belong_to_their_user(client: ApiClient, alice: Account, accounts: Accounts) -> None:
    bob = accounts.register("bob")
    accounts.post(bob, "50.00")
    buy(client, alice, 24, **{"Idempotency-Key": "shared"})
    bobs = buy(client, bob, 1, **{"Idempotency-Key": "shared"})
    assert bobs["token"] is not None
    assert (balance(client, alice), balance(client, bob)) == ("982.00", "49.00")


@pytest.mark.parametrize("key", ["", "x" * 256])
def test_an_unusable_key_is_422(client: ApiClient, alice: Account, key: str) -> None:
    response = client.post(
        PURCHASE, json={"duration_hours": 1}, headers={**alice.headers, "Idempotency-Key": key}
    )
    assert response.status_code == 422
    assert balance(client, alice) == "1000.00"


def test_racing_duplicates_charge_once(client: ApiClient, alice: Account) -> None:
    racers = 6
    start = threading.Barrier(racers)
    answers: list[tuple[int, dict, str | None]] = []

    def purchase() -> None:
        start.wait()
        response = client.post(
            PURCHASE,
            json={"duration_hours": 24},
            headers={**alice.headers, "Idempotency-Key": "one-click"},
        )
        answers.append(
            (response.status_code, response.json(), response.headers.get("Idempotent-Replayed"))
        )

    threads = [threading.Thread(target=purchase) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [status for status, _, _ in answers] == [201] * racers
    assert len({body["id"] for _, body, _ in answers}) == 1
    assert len({body["token"] for _, body, _ in answers}) == 1
    assert answers[0][1]["token"] is not None
    assert sum(replayed == "true" for _, _, replayed in answers) == racers - 1
    assert balance(client, alice) == "982.00"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", PURCHASE),
        ("GET", MY_TOKENS),
        ("DELETE", "/api/v1/tokens/01a21683-7edd-7000-a07b-c30d14bf44f2"),
    ],
)
def test_token_routes_need_a_login(client: ApiClient, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}):
        response = client.request(method, path, json={"duration_hours": 1}, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_login_naming_no_account_is_401(client: ApiClient, app: Litestar) -> None:
    """The purchase routes leave the account check to the use case; the answer is the same."""
    stray = {"Authorization": f"Bearer {api_context(app).tokens.issue(uuid4(), 0)}"}
    bought = client.post(PURCHASE, json={"duration_hours": 1}, headers=stray)
    assert bought.status_code == 401
    assert bought.json()["detail"] == "Could not validate credentials"
    starter = client.get("/api/v1/bundles").json()["items"][0]
    bundle = client.post(f"/api/v1/bundles/{starter['id']}/purchase", headers=stray)
    assert bundle.status_code == 401


def test_a_disabled_account_cannot_buy(
    client: ApiClient, alice: Account, accounts: Accounts
) -> None:
    token = buy(client, alice)
    admin = accounts.admin()
    client.post(f"/api/v1/admin/users/{alice.id}/deactivate", headers=admin.headers)
    # The deactivation ended her login: every route refuses it, the purchases included.
    assert client.post(PURCHASE, json={"duration_hours": 1}, headers=alice.headers).status_code == (
        401
    )
    response = client.delete(f"/api/v1/tokens/{token['id']}", headers=alice.headers)
    assert response.status_code == 401
    starter = client.get("/api/v1/bundles").json()["items"][0]
    bundle = client.post(f"/api/v1/bundles/{starter['id']}/purchase", headers=alice.headers)
    assert bundle.status_code == 401
    assert bundle.json()["detail"] == "Could not validate credentials"
    assert client.get(MY_TOKENS, headers=alice.headers).status_code == 401
