"""The wallet over HTTP: balance and the ledger, newest first, paged and filtered."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.api.conftest import Accounts, ApiClient
from zenzefi_core.domain import TransactionType

BALANCE = "/api/v1/currency/balance"
TRANSACTIONS = "/api/v1/currency/transactions"


def test_a_new_wallet_is_empty(client: ApiClient, accounts: Accounts) -> None:
    alice = accounts.register("alice")
    assert client.get(BALANCE, headers=alice.headers).json() == {
        "balance": "0.00",
        "currency": "ZNC",
    }
    assert client.get(TRANSACTIONS, headers=alice.headers).json() == {
        "items": [],
        "total": 0,
        "limit": 20,
        "offset": 0,
    }


def test_the_ledger_lists_newest_first_with_signed_amounts(
    client: ApiClient, accounts: Accounts
) -> None:
    alice = accounts.register("alice")
    bob = accounts.register("bob")
    accounts.post(alice, "100.00", description="Top-up")
    accounts.post(alice, "-18.00", TransactionType.PURCHASE, "24 h token")
    accounts.post(alice, "5.50", TransactionType.REFERRAL_BONUS, "Referral bonus")
    accounts.post(bob, "7.00")

    assert client.get(BALANCE, headers=alice.headers).json()["balance"] == "87.50"
    page = client.get(TRANSACTIONS, headers=alice.headers).json()
    assert page["total"] == 3
    assert [(t["amount"], t["transaction_type"]) for t in page["items"]] == [
        ("5.50", "referral_bonus"),
        ("-18.00", "purchase"),
        ("100.00", "deposit"),
    ]
    first = page["items"][0]
    assert set(first) == {"id", "amount", "transaction_type", "description", "created_at"}
    assert first["description"] == "Referral bonus"
    assert datetime.fromisoformat(first["created_at"]).utcoffset() == timedelta(0)
    stamps = [datetime.fromisoformat(t["created_at"]) for t in page["items"]]
    assert stamps == sorted(stamps, reverse=True)


def test_the_ledger_pages_and_filters(client: ApiClient, accounts: Accounts) -> None:
    alice = accounts.register("alice")
    for amount in ["1.00", "2.00", "3.00", "4.00"]:
        accounts.post(alice, amount)
    accounts.post(alice, "-1.50", TransactionType.PURCHASE, "token")

    page = client.get(TRANSACTIONS, headers=alice.headers, params={"limit": 2, "offset": 1})
    body = page.json()
    assert [t["amount"] for t in body["items"]] == ["4.00", "3.00"]
    assert (body["total"], body["limit"], body["offset"]) == (5, 2, 1)

    deposits = client.get(
        TRANSACTIONS, headers=alice.headers, params={"transaction_type": "deposit"}
    ).json()
    assert deposits["total"] == 4
    assert {t["transaction_type"] for t in deposits["items"]} == {"deposit"}
    beyond = client.get(TRANSACTIONS, headers=alice.headers, params={"offset": 50}).json()
    assert beyond["items"] == []
    assert beyond["total"] == 5


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"offset": -1},
        {"offset": 2**31},
        {"limit": "ten"},
        {"transaction_type": "gift"},
    ],
)
def test_bad_list_parameters_are_422(client: ApiClient, accounts: Accounts, params) -> None:
    alice = accounts.register("alice")
    response = client.get(TRANSACTIONS, headers=alice.headers, params=params)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == next(iter(params))


@pytest.mark.parametrize("path", [BALANCE, TRANSACTIONS])
def test_the_wallet_needs_a_login(client: ApiClient, path: str) -> None:
    assert client.get(path).status_code == 401
