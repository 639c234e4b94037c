"""The referral programme end to end over HTTP: a referee's purchases credit the referrer
(`referral_bonus`, `bonus_earned`), refunds take it back (`referral_clawback`), never below zero,
and the buyer is never shown the referrer's affairs."""

from __future__ import annotations

import pytest

from tests.api.conftest import Account, Accounts, ApiClient

REFERRALS = "/api/v1/users/me/referrals"
TRANSACTIONS = "/api/v1/currency/transactions"
BALANCE = "/api/v1/currency/balance"


def balance(client: ApiClient, account: Account) -> str:
    return str(client.get(BALANCE, headers=account.headers).json()["balance"])


def bonus_earned(client: ApiClient, account: Account) -> str:
    return str(client.get(REFERRALS, headers=account.headers).json()["bonus_earned"])


def entries(client: ApiClient, account: Account) -> list[tuple[str, str]]:
    """(type, amount) of the account's ledger, newest first."""
    page = client.get(TRANSACTIONS, headers=account.headers, params={"limit": 100}).json()
    return [(e["transaction_type"], e["amount"]) for e in page["items"]]


def refund(client: ApiClient, account: Account, token_id: str) -> dict:
    response = client.delete(f"/api/v1/tokens/{token_id}", headers=account.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture
def rita(accounts: Accounts) -> Account:
    """The referrer."""
    return accounts.register("rita")


@pytest.fixture
def rick(client: ApiClient, accounts: Accounts, rita: Account) -> Account:
    """Rita's referee, funded by an operator's credit through the admin API."""
    code = client.get("/api/v1/users/me", headers=rita.headers).json()["referral_code"]
    account = accounts.register("rick", ref=code)
    admin = accounts.admin()
    credited = client.post(
        f"/api/v1/admin/users/{account.id}/credit",
        json={"amount": "500.00", "reason": "Welcome credit"},
        headers=admin.headers,
    )
    assert credited.status_code == 201, credited.text
    return account


def test_a_token_purchase_credits_the_referrer_and_its_refund_takes_it_back(
    client: ApiClient, rita: Account, rick: Account
) -> None:
    assert bonus_earned(client, rita) == "0.00"
    bought = client.post(
        "/api/v1/tokens/purchase", json={"duration_hours": 24}, headers=rick.headers
    ).json()

    summary = client.get(REFERRALS, headers=rita.headers).json()
    assert summary["bonus_earned"] == "1.80"
    assert summary["total_referrals"] == 1
    assert [r["username"] for r in summary["referrals"]] == ["rick"]
    assert "rick@example.com" not in str(summary)
    assert balance(client, rita) == "1.80"
    assert entries(client, rita) == [("referral_bonus", "1.80")]

    refunded = refund(client, rick, bought["id"])
    # The buyer sees the refund only, nothing of the clawback.
    assert refunded == {"revoked": True, "refund_amount": "18.00", "new_balance": "500.00"}
    assert bonus_earned(client, rita) == "0.00"
    assert balance(client, rita) == "0.00"
    assert entries(client, rita) == [("referral_clawback", "-1.80"), ("referral_bonus", "1.80")]
    assert [kind for kind, _ in entries(client, rick)] == ["refund", "purchase", "adjustment"]


def test_a_bundle_purchase_credits_ten_percent_and_each_refund_its_share(
    client: ApiClient, rita: Account, rick: Account
) -> None:
    starter = next(
        b for b in client.get("/api/v1/bundles").json()["items"] if b["name"] == "Starter Pack"
    )
    bought = client.post(f"/api/v1/bundles/{starter['id']}/purchase", headers=rick.headers).json()
    assert bonus_earned(client, rita) == "8.10"
    assert balance(client, rita) == "8.10"

    assert refund(client, rick, bought["tokens"][1]["id"])["refund_amount"] == "16.20"
    assert bonus_earned(client, rita) == "6.48"
    assert entries(client, rita) == [("referral_clawback", "-1.62"), ("referral_bonus", "8.10")]

    for token in bought["tokens"][2:] + bought["tokens"][:1]:
        refund(client, rick, token["id"])
    assert bonus_earned(client, rita) == "0.00"
    assert balance(client, rita) == "0.00"
    assert balance(client, rick) == "500.00"


def test_a_clawback_never_takes_the_referrer_below_zero(
    client: ApiClient, rita: Account, rick: Account
) -> None:
    bought = client.post(
        "/api/v1/tokens/purchase", json={"duration_hours": 168}, headers=rick.headers
    ).json()
    assert balance(client, rita) == "10.00"
    # Rita spends most of her bonus before the refund.
    spent = client.post(
        "/api/v1/tokens/purchase", json={"duration_hours": 12}, headers=rita.headers
    )
    assert spent.status_code == 201
    assert balance(client, rita) == "0.00"

    refund(client, rick, bought["id"])
    # Nothing left to take: the shortfall is recorded on the bonus, not as a debt.
    assert balance(client, rita) == "0.00"
    assert entries(client, rita) == [("purchase", "-10.00"), ("referral_bonus", "10.00")]
    assert bonus_earned(client, rita) == "10.00"
    assert balance(client, rick) == "500.00"
