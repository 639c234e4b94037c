"""Bundles over HTTP: the seeded catalogue, buying every bundle, refunding a bundle token for its
share, Idempotency-Key retries, and the operators' create / update / withdraw with derived
prices."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import uuid4

import pytest

from tests.api.conftest import Account, Accounts, ApiClient

BUNDLES = "/api/v1/bundles"
BALANCE = "/api/v1/currency/balance"
BUNDLE_FIELDS = {
    "id",
    "name",
    "description",
    "token_count",
    "duration_hours",
    "scope",
    "discount_percent",
    "base_price",
    "total_price",
    "savings",
    "price_per_token",
    "is_active",
    "created_at",
}
#: name -> (token_count, duration_hours, discount, base, total, savings, per token)
DEFAULTS = {
    "Starter Pack": (5, 24, "10.00", "90.00", "81.00", "9.00", "16.20"),
    "Pro Bundle": (10, 24, "15.00", "180.00", "153.00", "27.00", "15.30"),
    "Ultimate Package": (20, 168, "20.00", "2000.00", "1600.00", "400.00", "80.00"),
}


def catalogue(client: ApiClient, headers: dict[str, str] | None = None, **params: str) -> list:
    response = client.get(BUNDLES, params=params, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items"}
    return list(body["items"])


def bundle_named(client: ApiClient, name: str) -> dict:
    return next(b for b in catalogue(client) if b["name"] == name)


def balance(client: ApiClient, account: Account) -> str:
    return str(client.get(BALANCE, headers=account.headers).json()["balance"])


@pytest.fixture
def alice(accounts: Accounts) -> Account:
    account = accounts.register("alice")
    accounts.post(account, "2000.00")
    return account


@pytest.fixture
def admin(accounts: Accounts) -> Account:
    return accounts.admin()


def test_a_new_database_sells_the_default_bundles_cheapest_first(client: ApiClient) -> None:
    bundles = catalogue(client)
    assert [b["name"] for b in bundles] == list(DEFAULTS)
    for bundle in bundles:
        assert set(bundle) == BUNDLE_FIELDS
        count, hours, discount, base, total, savings, each = DEFAULTS[bundle["name"]]
        assert (
            bundle["token_count"],
            bundle["duration_hours"],
            bundle["discount_percent"],
            bundle["base_price"],
            bundle["total_price"],
            bundle["savings"],
            bundle["price_per_token"],
        ) == (count, hours, discount, base, total, savings, each)
        assert (bundle["scope"], bundle["is_active"]) == ("full", True)
        assert datetime.fromisoformat(bundle["created_at"]).utcoffset() == timedelta(0)
        assert client.get(f"{BUNDLES}/{bundle['id']}").json() == bundle


def test_every_bundle_can_be_bought(client: ApiClient, accounts: Accounts) -> None:
    buyer = accounts.register("buyer")
    accounts.post(buyer, "1834.00")
    for name, (count, hours, _, _, total, _, each) in DEFAULTS.items():
        before = balance(client, buyer)
        bundle = bundle_named(client, name)
        response = client.post(f"{BUNDLES}/{bundle['id']}/purchase", headers=buyer.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"bundle_name", "tokens_generated", "cost_znc", "new_balance", "tokens"}
        assert (body["bundle_name"], body["tokens_generated"], body["cost_znc"]) == (
            name,
            count,
            total,
        )
        assert f"{float(before) - float(total):.2f}" == body["new_balance"]
        tokens = body["tokens"]
        assert len(tokens) == count
        assert len({t["token"] for t in tokens}) == count
        for token in tokens:
            assert token["token"]
            assert (token["duration_hours"], token["scope"], token["cost_znc"]) == (
                hours,
                "full",
                each,
            )
            assert (token["activated_at"], token["expires_at"], token["is_active"]) == (
                None,
                None,
                True,
            )
    assert balance(client, buyer) == "0.00"
    listed = client.get(
        "/api/v1/tokens/my-tokens", headers=buyer.headers, params={"limit": 100}
    ).json()
    assert listed["total"] == 35
    assert all(t["bundle_purchase_id"] for t in listed["items"])
    ledger = client.get("/api/v1/currency/transactions", headers=buyer.headers).json()
    # One ledger entry per bundle, not per token.
    assert [e["amount"] for e in ledger["items"] if e["transaction_type"] == "purchase"] == [
        "-1600.00",
        "-153.00",
        "-81.00",
    ]


def test_a_starter_pack_token_refunds_its_share(client: ApiClient, alice: Account) -> None:
    starter = bundle_named(client, "Starter Pack")
    bought = client.post(f"{BUNDLES}/{starter['id']}/purchase", headers=alice.headers).json()
    assert bought["new_balance"] == "1919.00"
    token_id = bought["tokens"][3]["id"]
    response = client.delete(f"/api/v1/tokens/{token_id}", headers=alice.headers)
    assert response.status_code == 200
    assert response.json() == {"revoked": True, "refund_amount": "16.20", "new_balance": "1935.20"}


def test_the_first_bundle_token_carries_the_leftover_cents(
    client: ApiClient, alice: Account, admin: Account
) -> None:
    # 3 x 1.00 at 0.5 % off = 2.985 -> 2.98 (half-even): 1.00, 0.99, 0.99.
    odd = client.post(
        BUNDLES,
        json={"name": "Odd", "token_count": 3, "duration_hours": 1, "discount_percent": "0.50"},
        headers=admin.headers,
    ).json()
    assert odd["total_price"] == "2.98"
    bought = client.post(f"{BUNDLES}/{odd['id']}/purchase", headers=alice.headers).json()
    assert [t["cost_znc"] for t in bought["tokens"]] == ["1.00", "0.99", "0.99"]
    refunds = [
        client.delete(f"/api/v1/tokens/{t['id']}", headers=alice.headers).json()["refund_amount"]
        for t in bought["tokens"]
    ]
    assert refunds == ["1.00", "0.99", "0.99"]
    assert balance(client, alice) == "2000.00"


def test_a_short_balance_is_402_and_buys_nothing(client: ApiClient, accounts: Accounts) -> None:
    bob = accounts.register("bob")
    accounts.post(bob, "80.99")
    starter = bundle_named(client, "Starter Pack")
    response = client.post(f"{BUNDLES}/{starter['id']}/purchase", headers=bob.headers)
    assert response.status_code == 402
    assert response.json()["detail"] == (
        "Insufficient balance. Required: 81.00 ZNC, Available: 80.99 ZNC"
    )
    assert balance(client, bob) == "80.99"
    assert client.get("/api/v1/tokens/my-tokens", headers=bob.headers).json()["total"] == 0


def test_an_unknown_bundle_is_404(client: ApiClient, alice: Account) -> None:
    missing = uuid4()
    assert client.get(f"{BUNDLES}/{missing}").status_code == 404
    response = client.post(f"{BUNDLES}/{missing}/purchase", headers=alice.headers)
    assert response.status_code == 404
    assert response.json()["detail"] == "Bundle not found"


def test_a_withdrawn_bundle_is_hidden_and_cannot_be_bought(
    client: ApiClient, alice: Account, admin: Account
) -> None:
    pro = bundle_named(client, "Pro Bundle")
    response = client.delete(f"{BUNDLES}/{pro['id']}", headers=admin.headers)
    assert response.status_code == 200
    assert response.json() == {**pro, "is_active": False}

    assert [b["name"] for b in catalogue(client)] == ["Starter Pack", "Ultimate Package"]
    assert client.get(f"{BUNDLES}/{pro['id']}").status_code == 404
    bought = client.post(f"{BUNDLES}/{pro['id']}/purchase", headers=alice.headers)
    assert bought.status_code == 404
    assert balance(client, alice) == "2000.00"

    # Operators still see it, and can put it back on sale.
    everything = client.get(BUNDLES, params={"active_only": "false"}, headers=admin.headers)
    assert [b["name"] for b in everything.json()["items"]] == list(DEFAULTS)
    back = client.patch(f"{BUNDLES}/{pro['id']}", json={"is_active": True}, headers=admin.headers)
    assert back.json()["is_active"] is True
    assert client.post(f"{BUNDLES}/{pro['id']}/purchase", headers=alice.headers).is_success


def test_withdrawn_bundles_are_listed_for_operators_only(client: ApiClient, alice: Account) -> None:
    assert client.get(BUNDLES, params={"active_only": "false"}).status_code == 401
    bad = client.get(
        BUNDLES, params={"active_only": "false"}, headers={"Authorization": "Bearer nope"}
    )
    assert bad.status_code == 401
    denied = client.get(BUNDLES, params={"active_only": "false"}, headers=alice.headers)
    assert denied.status_code == 403
    # The public list ignores whoever asks.
    assert len(catalogue(client, active_only="true")) == 3


def test_a_retried_bundle_purchase_with_its_key_charges_once(
    client: ApiClient, alice: Account
) -> None:
    starter = bundle_named(client, "Starter Pack")
    headers = {**alice.headers, "Idempotency-Key": "bundle-1"}
    first = client.post(f"{BUNDLES}/{starter['id']}/purchase", headers=headers)
    retry = client.post(f"{BUNDLES}/{starter['id']}/purchase", headers=headers)
    assert (first.status_code, retry.status_code) == (200, 200)
    assert "Idempotent-Replayed" not in first.headers
    assert retry.headers["Idempotent-Replayed"] == "true"
    # The whole first response, every token's secret included.
    assert retry.json() == first.json()
    assert all(t["token"] for t in retry.json()["tokens"])
    assert balance(client, alice) == "1919.00"

    pro = bundle_named(client, "Pro Bundle")
    clash = client.post(f"{BUNDLES}/{pro['id']}/purchase", headers=headers)
    assert clash.status_code == 409
    assert balance(client, alice) == "1919.00"


def test_buying_needs_a_login(client: ApiClient) -> None:
    starter = bundle_named(client, "Starter Pack")
    assert client.post(f"{BUNDLES}/{starter['id']}/purchase").status_code == 401


def test_operators_create_bundles_with_derived_prices(
    client: ApiClient, admin: Account, alice: Account
) -> None:
    response = client.post(
        BUNDLES,
        json={
            "name": "Weekly Trio",
            "description": "3 tokens of 7 days",
            "token_count": 3,
            "duration_hours": 168,
            "discount_percent": "12.50",
            "scope": "certificates_only",
        },
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == BUNDLE_FIELDS
    assert {k: created[k] for k in BUNDLE_FIELDS - {"id", "created_at"}} == {
        "name": "Weekly Trio",
        "description": "3 tokens of 7 days",
        "token_count": 3,
        "duration_hours": 168,
        "scope": "certificates_only",
        "discount_percent": "12.50",
        "base_price": "300.00",
        "total_price": "262.50",
        "savings": "37.50",
        "price_per_token": "87.50",
        "is_active": True,
    }
    # A whole-number discount is fine too; it is shown with two decimals.
    plain = client.post(
        BUNDLES,
        json={"name": "Plain", "token_count": 2, "duration_hours": 1, "discount_percent": 0},
        headers=admin.headers,
    ).json()
    assert (plain["discount_percent"], plain["total_price"], plain["description"]) == (
        "0.00",
        "2.00",
        None,
    )
    names = [b["name"] for b in catalogue(client)]
    assert names == ["Plain", "Starter Pack", "Pro Bundle", "Weekly Trio", "Ultimate Package"]
    bought = client.post(f"{BUNDLES}/{created['id']}/purchase", headers=alice.headers).json()
    assert bought["cost_znc"] == "262.50"
    assert [t["scope"] for t in bought["tokens"]] == ["certificates_only"] * 3


def test_operators_update_bundles_and_prices_follow(client: ApiClient, admin: Account) -> None:
    starter = bundle_named(client, "Starter Pack")
    path = f"{BUNDLES}/{starter['id']}"
    response = client.patch(
        path, json={"token_count": 6, "discount_percent": "20.00"}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert (
        changed["token_count"],
        changed["base_price"],
        changed["total_price"],
        changed["savings"],
        changed["price_per_token"],
    ) == (6, "108.00", "86.40", "21.60", "14.40")
    assert changed["name"] == "Starter Pack"
    renamed = client.patch(
        path, json={"name": "Starter", "description": None}, headers=admin.headers
    ).json()
    assert (renamed["name"], renamed["description"], renamed["total_price"]) == (
        "Starter",
        None,
        "86.40",
    )
    longer = client.patch(path, json={"duration_hours": 168}, headers=admin.headers).json()
    assert (longer["base_price"], longer["total_price"]) == ("600.00", "480.00")
    assert client.get(path).json() == longer
    assert client.patch(path, json={}, headers=admin.headers).json() == longer


@pytest.mark.parametrize(
    "extra",
    [
        {"total_price": "1.00"},
        {"base_price": "1.00"},
        {"savings": "0.00"},
        {"price_per_token": "0.01"},
        {"id": "x"},
    ],
)
def test_prices_are_never_taken_from_input(client: ApiClient, admin: Account, extra: dict) -> None:
    body = {"name": "Cheap", "token_count": 5, "duration_hours": 24, **extra}
    created = client.post(BUNDLES, json=body, headers=admin.headers)
    assert created.status_code == 422
    assert created.json()["errors"][0]["field"] == next(iter(extra))
    starter = bundle_named(client, "Starter Pack")
    changed = client.patch(f"{BUNDLES}/{starter['id']}", json=extra, headers=admin.headers)
    assert changed.status_code == 422
    assert bundle_named(client, "Starter Pack") == starter
    assert len(catalogue(client)) == 3


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": "X", "token_count": 5, "duration_hours": 5}, 400),
        ({"name": "X", "token_count": 5, "duration_hours": 24, "scope": "root"}, 400),
        ({"name": "X", "token_count": 0, "duration_hours": 24}, 422),
        ({"name": "X", "token_count": 101, "duration_hours": 24}, 422),
        ({"name": " ", "token_count": 5, "duration_hours": 24}, 422),
        ({"name": "X", "token_count": 5, "duration_hours": 24, "discount_percent": "100"}, 422),
        ({"name": "X", "token_count": 5, "duration_hours": 24, "discount_percent": "-1"}, 422),
        ({"name": "X", "token_count": 5, "duration_hours": 24, "discount_percent": "9.999"}, 422),
        ({"name": "X", "token_count": 5, "duration_hours": 24, "discount_percent": 9.5}, 422),
        ({"name": "X", "token_count": 5, "duration_hours": 1, "discount_percent": "99.99"}, 422),
        ({"token_count": 5, "duration_hours": 24}, 422),
    ],
)
def test_bad_bundles_are_refused(
    client: ApiClient, admin: Account, body: dict, status: int
) -> None:
    response = client.post(BUNDLES, json=body, headers=admin.headers)
    assert response.status_code == status, response.text
    assert len(catalogue(client, admin.headers, active_only="false")) == 3


def test_bundle_administration_needs_a_superuser(
    client: ApiClient, alice: Account, admin: Account
) -> None:
    starter = bundle_named(client, "Starter Pack")
    path = f"{BUNDLES}/{starter['id']}"
    body = {"name": "Mine", "token_count": 1, "duration_hours": 1}
    for headers, status in (({}, 401), (alice.headers, 403)):
        assert client.post(BUNDLES, json=body, headers=headers).status_code == status
        assert client.patch(path, json={"name": "Mine"}, headers=headers).status_code == status
        assert client.delete(path, headers=headers).status_code == status
    assert bundle_named(client, "Starter Pack") == starter
    assert len(catalogue(client)) == 3
    missing = f"{BUNDLES}/{uuid4()}"
    assert client.patch(missing, json={"name": "Y"}, headers=admin.headers).status_code == 404
    assert client.delete(missing, headers=admin.headers).status_code == 404
