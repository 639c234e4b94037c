"""The referral programme end to end over HTTP: a referee's purchase holds the referrer's bonus
as pending (`bonus_pending`), the token's first use pays it (`referral_bonus`, `bonus_earned`),
a refund cancels it; the buyer is never shown the referrer's affairs; and the farming loop of
issue 13 creates nothing, with tokens and with bundles."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from tests.api.conftest import Account, Accounts, ApiClient
from zenzefi_core.adapters.payments import HmacPaymentProvider
from zenzefi_core.bootstrap import Core

REFERRALS = "/api/v1/users/me/referrals"
TRANSACTIONS = "/api/v1/currency/transactions"
BALANCE = "/api/v1/currency/balance"
TOKENS = "/api/v1/tokens/purchase"


def balance(client: ApiClient, account: Account) -> str:
    return str(client.get(BALANCE, headers=account.headers).json()["balance"])


def referrals(client: ApiClient, account: Account) -> dict[str, Any]:
    response = client.get(REFERRALS, headers=account.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def bonuses(client: ApiClient, account: Account) -> tuple[str, str]:
    """(bonus_earned, bonus_pending)."""
    summary = referrals(client, account)
    return summary["bonus_earned"], summary["bonus_pending"]


def entries(client: ApiClient, account: Account) -> list[tuple[str, str]]:
    """(type, amount) of the account's ledger, newest first."""
    page = client.get(TRANSACTIONS, headers=account.headers, params={"limit": 100}).json()
    return [(e["transaction_type"], e["amount"]) for e in page["items"]]


def buy_token(client: ApiClient, account: Account, hours: int) -> dict[str, Any]:
    response = client.post(TOKENS, json={"duration_hours": hours}, headers=account.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def buy_bundle(client: ApiClient, account: Account, name: str) -> dict[str, Any]:
    bundle = next(b for b in client.get("/api/v1/bundles").json()["items"] if b["name"] == name)
    response = client.post(f"/api/v1/bundles/{bundle['id']}/purchase", headers=account.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def refund(client: ApiClient, account: Account, token_id: str) -> dict[str, Any]:
    response = client.delete(f"/api/v1/tokens/{token_id}", headers=account.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def use(client: ApiClient, token: dict[str, Any], device: str = "desk-0001") -> None:
    """The desktop client's first proxied request. No upstream is configured in these tests, so
    the proxy answers 502 after it has let the request in (and started the token's clock)."""
    client.allowed_server_errors.add(502)
    response = client.get(
        "/api/v1/proxy/certificates/filter",
        headers={"X-Access-Token": token["token"], "X-Device-ID": device},
    )
    client.allowed_server_errors.discard(502)
    assert response.status_code == 502, response.text


def deposit(client: ApiClient, core: Core, account: Account, amount: str) -> None:
    """A real top-up: a payment intent, then the provider's signed confirmation."""
    response = client.post(
        "/api/v1/currency/purchase", json={"amount_znc": amount}, headers=account.headers
    )
    assert response.status_code == 201, response.text
    provider = core.payment_provider
    assert isinstance(provider, HmacPaymentProvider)
    payment_id = response.json()["payment_id"]
    body = json.dumps(
        {"event_id": f"paid-{payment_id}", "payment_id": payment_id, "status": "succeeded"}
    ).encode()
    headers = {**provider.sign(body), "Content-Type": "application/json"}
    confirmed = client.post("/api/v1/payments/webhook", content=body, headers=headers)
    assert confirmed.status_code == 200, confirmed.text


@pytest.fixture
def rita(accounts: Accounts) -> Account:
    """The referrer."""
    return accounts.register("rita")


def referred_by(client: ApiClient, accounts: Accounts, referrer: Account, name: str) -> Account:
    code = client.get("/api/v1/users/me", headers=referrer.headers).json()["referral_code"]
    return accounts.register(name, ref=code)


@pytest.fixture
def rick(client: ApiClient, accounts: Accounts, rita: Account) -> Account:
    """Rita's referee, funded by an operator's credit through the admin API."""
    account = referred_by(client, accounts, rita, "rick")
    admin = accounts.admin()
    credited = client.post(
        f"/api/v1/admin/users/{account.id}/credit",
        json={"amount": "500.00", "reason": "Welcome credit"},
        headers=admin.headers,
    )
    assert credited.status_code == 201, credited.text
    return account


def test_a_bonus_is_pending_until_the_token_is_first_used(
    client: ApiClient, rita: Account, rick: Account
) -> None:
    summary = referrals(client, rita)
    assert (summary["bonus_earned"], summary["bonus_pending"]) == ("0.00", "0.00")
    bought = buy_token(client, rick, 24)

    summary = referrals(client, rita)
    assert (summary["bonus_earned"], summary["bonus_pending"]) == ("0.00", "1.80")
    assert summary["total_referrals"] == 1
    assert [r["username"] for r in summary["referrals"]] == ["rick"]
    assert "rick@example.com" not in str(summary)
    assert balance(client, rita) == "0.00"
    assert entries(client, rita) == []

    # The status page never activates, so it pays nothing.
    status = client.get("/api/v1/proxy/status", headers={"X-Access-Token": bought["token"]})
    assert status.json()["status"] == "ready"
    assert bonuses(client, rita) == ("0.00", "1.80")

    use(client, bought)
    assert bonuses(client, rita) == ("1.80", "0.00")
    assert balance(client, rita) == "1.80"
    assert entries(client, rita) == [("referral_bonus", "1.80")]
    # Used, the token is final: no refund, so the bonus never needs taking back.
    refused = client.delete(f"/api/v1/tokens/{bought['id']}", headers=rick.headers)
    assert refused.status_code == 400
    use(client, bought)
    assert entries(client, rita) == [("referral_bonus", "1.80")]


def test_a_refund_cancels_the_pending_bonus(
    client: ApiClient, rita: Account, rick: Account
) -> None:
    bought = buy_token(client, rick, 168)
    assert bonuses(client, rita) == ("0.00", "10.00")

    refunded = refund(client, rick, bought["id"])
    # The buyer sees the refund only, nothing of the referrer's bonus.
    assert refunded == {"revoked": True, "refund_amount": "100.00", "new_balance": "500.00"}
    assert bonuses(client, rita) == ("0.00", "0.00")
    assert balance(client, rita) == "0.00"
    assert entries(client, rita) == []
    assert [kind for kind, _ in entries(client, rick)] == ["refund", "purchase", "adjustment"]


def test_a_bundle_pays_each_tokens_share_as_it_is_used(
    client: ApiClient, rita: Account, rick: Account
) -> None:
    bought = buy_bundle(client, rick, "Starter Pack")
    assert bonuses(client, rita) == ("0.00", "8.10")

    use(client, bought["tokens"][1])
    assert bonuses(client, rita) == ("1.62", "6.48")
    assert entries(client, rita) == [("referral_bonus", "1.62")]

    for token in bought["tokens"][2:] + bought["tokens"][:1]:
        assert refund(client, rick, token["id"])["refund_amount"] == "16.20"
    assert bonuses(client, rita) == ("1.62", "0.00")
    assert balance(client, rita) == "1.62"
    assert balance(client, rick) == "483.80"


@pytest.fixture
def farm(client: ApiClient, core: Core, accounts: Accounts) -> tuple[Account, Account]:
    """Issue 13's two accounts: A refers B, and B makes one real deposit of 300 ZNC."""
    a = accounts.register("farmer_a")
    b = referred_by(client, accounts, a, "farmer_b")
    deposit(client, core, b, "300.00")
    return a, b


def total(client: ApiClient, a: Account, b: Account) -> Decimal:
    return Decimal(balance(client, a)) + Decimal(balance(client, b))


def a_spends_everything(client: ApiClient, a: Account) -> list[dict[str, Any]]:
    """A spends its whole balance on 1 h tokens: only what it was paid, which is nothing while
    B's purchase can still be undone."""
    bought = []
    while Decimal(balance(client, a)) >= Decimal("1.00"):
        bought.append(buy_token(client, a, 1))
    refused = client.post(TOKENS, json={"duration_hours": 1}, headers=a.headers)
    assert refused.status_code == 402
    return bought


@pytest.mark.parametrize("cycles", [3])
def test_the_farming_loop_with_a_token_creates_nothing(
    client: ApiClient, farm: tuple[Account, Account], cycles: int
) -> None:
    a, b = farm
    assert total(client, a, b) == Decimal("300.00")
    for _ in range(cycles):
        bought = buy_token(client, b, 720)
        assert bonuses(client, a) == ("0.00", "30.00")
        mine = a_spends_everything(client, a)
        assert mine == []
        refund(client, b, bought["id"])
        for token in mine:
            refund(client, a, token["id"])
        assert balance(client, b) == "300.00"
        assert balance(client, a) == "0.00"
        assert total(client, a, b) == Decimal("300.00")
        assert bonuses(client, a) == ("0.00", "0.00")


@pytest.mark.parametrize("cycles", [3])
def test_the_farming_loop_with_bundles_creates_nothing(
    client: ApiClient, farm: tuple[Account, Account], cycles: int
) -> None:
    a, b = farm
    for _ in range(cycles):
        packs = [buy_bundle(client, b, "Starter Pack") for _ in range(3)]
        assert bonuses(client, a) == ("0.00", "24.30")
        mine = a_spends_everything(client, a)
        for pack in packs:
            for token in pack["tokens"]:
                refund(client, b, token["id"])
        for token in mine:
            refund(client, a, token["id"])
        assert balance(client, b) == "300.00"
        assert total(client, a, b) == Decimal("300.00")
        assert bonuses(client, a) == ("0.00", "0.00")


def test_what_is_used_pays_and_what_is_refunded_does_not(
    client: ApiClient, farm: tuple[Account, Account]
) -> None:
    """The money supply in one line: deposits - what was bought and kept + bonuses on it."""
    a, b = farm
    pack = buy_bundle(client, b, "Starter Pack")
    week = buy_token(client, b, 168)
    use(client, pack["tokens"][0])
    use(client, week, "laptop-0002")
    for token in pack["tokens"][1:]:
        refund(client, b, token["id"])
    kept = Decimal("16.20") + Decimal("100.00")
    assert balance(client, b) == str(Decimal("300.00") - kept)
    assert bonuses(client, a) == ("11.62", "0.00")
    assert total(client, a, b) == Decimal("300.00") - kept + Decimal("11.62")
