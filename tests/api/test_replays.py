"""Idempotency-Key replays through the HTTP API: the first response comes back whole, token
secrets included, for one token and for a bundle of 100, while the key lives (24 h); the
secrets are kept encrypted, only for the key's owner, and purged with the key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from tests.api.conftest import Account, Accounts, ApiClient
from zenzefi_core.bootstrap import Core
from zenzefi_core.clock import FixedClock
from zenzefi_core.security import fast_password_hasher, hash_access_token
from zenzefi_core.services.idempotency import KEY_LIFETIME, PurgeExpiredKeys
from zenzefi_core.settings import Settings

PURCHASE = "/api/v1/tokens/purchase"
BUNDLES = "/api/v1/bundles"
BALANCE = "/api/v1/currency/balance"
ME = "/api/v1/users/me"


@pytest.fixture
def clock() -> FixedClock:
    # Starts at the real time: login tokens it signs are checked against the real clock.
    return FixedClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def core(settings: Settings, clock: FixedClock) -> Iterator[Core]:
    core = Core.from_settings(settings, clock=clock, hasher=fast_password_hasher())
    yield core
    core.close()


@pytest.fixture
def alice(accounts: Accounts) -> Account:
    account = accounts.register("alice")
    accounts.post(account, "1000.00")
    return account


def balance(client: ApiClient, account: Account) -> str:
    return str(client.get(BALANCE, headers=account.headers).json()["balance"])


def buy_token(client: ApiClient, account: Account, key: str, hours: int = 24) -> dict:
    response = client.post(
        PURCHASE,
        json={"duration_hours": hours},
        headers={**account.headers, "Idempotency-Key": key},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def token_behind(core: Core, secret: str) -> UUID:
    """The id of the stored token whose hash the secret has."""
    with core.uow() as uow:
        token = uow.tokens.get_by_hash(hash_access_token(secret))
    assert token is not None, "the secret is no token's"
    return token.id


def test_a_token_replay_returns_the_working_secret(
    client: ApiClient, core: Core, alice: Account
) -> None:
    first = buy_token(client, alice, "retry-me")
    again = client.post(
        PURCHASE,
        json={"duration_hours": 24},
        headers={**alice.headers, "Idempotency-Key": "retry-me"},
    )
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first
    assert token_behind(core, again.json()["token"]) == UUID(first["id"])
    assert balance(client, alice) == "982.00"


def test_a_bundle_of_100_replays_every_secret(
    client: ApiClient, core: Core, accounts: Accounts, alice: Account
) -> None:
    admin = accounts.admin()
    created = client.post(
        BUNDLES,
        json={"name": "Hundred", "token_count": 100, "duration_hours": 1},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    url = f"{BUNDLES}/{created.json()['id']}/purchase"
    headers = {**alice.headers, "Idempotency-Key": "hundred"}

    first = client.post(url, headers=headers)
    again = client.post(url, headers=headers)

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    tokens = again.json()["tokens"]
    assert len(tokens) == 100
    assert len({t["token"] for t in tokens}) == 100
    for token in tokens:
        assert token_behind(core, token["token"]) == UUID(token["id"])
    assert balance(client, alice) == "900.00"


def test_the_secrets_are_kept_encrypted_and_only_for_the_keys_owner(
    client: ApiClient, core: Core, accounts: Accounts, alice: Account
) -> None:
    bob = accounts.register("bob")
    accounts.post(bob, "50.00")
    alices = buy_token(client, alice, "shared-key")
    # The same key from someone else is their own purchase: they never see alice's token.
    bobs = buy_token(client, bob, "shared-key", hours=1)
    assert bobs["id"] != alices["id"]
    assert bobs["token"] != alices["token"]
    assert buy_token(client, bob, "shared-key", hours=1) == bobs
    assert buy_token(client, alice, "shared-key") == alices
    assert (balance(client, alice), balance(client, bob)) == ("982.00", "49.00")

    with core.uow() as uow:
        record = uow.idempotency.get(alice.id, "shared-key")
    assert record is not None
    assert record.secrets_encrypted is not None
    assert alices["token"] not in record.secrets_encrypted
    assert alices["token"] not in json.dumps(record.response)


def test_a_sealed_secret_moved_to_another_record_opens_for_nobody(
    client: ApiClient, core: Core, accounts: Accounts, alice: Account
) -> None:
    """Someone able to write the database but without the server key cannot hand one user's
    secrets to another by copying the encrypted value."""
    bob = accounts.register("bob")
    accounts.post(bob, "50.00")
    buy_token(client, alice, "alice-key")
    bobs = buy_token(client, bob, "bob-key", hours=1)
    with core.uow() as uow:
        alices_record = uow.idempotency.get(alice.id, "alice-key")
        bobs_record = uow.idempotency.get(bob.id, "bob-key")
        assert alices_record is not None
        assert bobs_record is not None
        uow.idempotency.remove(bob.id, "bob-key")
        uow.idempotency.add(
            type(bobs_record)(
                user_id=bobs_record.user_id,
                key=bobs_record.key,
                operation=bobs_record.operation,
                request_hash=bobs_record.request_hash,
                response=bobs_record.response,
                created_at=bobs_record.created_at,
                secrets_encrypted=alices_record.secrets_encrypted,
            )
        )
        uow.commit()
    replay = buy_token(client, bob, "bob-key", hours=1)
    assert replay["id"] == bobs["id"]
    assert replay["token"] is None


def test_another_body_with_the_key_is_refused_and_shows_nothing(
    client: ApiClient, alice: Account
) -> None:
    buy_token(client, alice, "one-key")
    clash = client.post(
        PURCHASE,
        json={"duration_hours": 12},
        headers={**alice.headers, "Idempotency-Key": "one-key"},
    )
    assert clash.status_code == 409
    assert "token" not in clash.json()
    assert balance(client, alice) == "982.00"


def test_an_ended_login_cannot_replay(
    client: ApiClient, accounts: Accounts, alice: Account
) -> None:
    buy_token(client, alice, "before-the-change")
    changed = client.patch(
        ME,
        json={"password": "a brand new password", "current_password": alice.password},
        headers=alice.headers,
    )
    assert changed.status_code == 200
    stolen = client.post(
        PURCHASE,
        json={"duration_hours": 24},
        headers={**alice.headers, "Idempotency-Key": "before-the-change"},
    )
    assert stolen.status_code == 401
    assert "token" not in stolen.json()
    fresh = {"Authorization": f"Bearer {accounts.login(alice.email, 'a brand new password')}"}
    replay = client.post(
        PURCHASE,
        json={"duration_hours": 24},
        headers={**fresh, "Idempotency-Key": "before-the-change"},
    )
    assert replay.status_code == 201
    assert replay.json()["token"] is not None


def test_a_key_lives_24_hours_and_the_purge_deletes_it_with_its_secrets(
    client: ApiClient, core: Core, clock: FixedClock, alice: Account
) -> None:
    first = buy_token(client, alice, "daily")
    buy_token(client, alice, "later")
    clock.advance(KEY_LIFETIME - timedelta(seconds=1))
    assert buy_token(client, alice, "daily") == first

    clock.advance(timedelta(seconds=1))
    # Past its lifetime the key is forgotten: the same request is a new purchase.
    renewed = buy_token(client, alice, "daily")
    assert renewed["id"] != first["id"]
    assert renewed["token"] != first["token"]
    assert balance(client, alice) == "946.00"

    # The purge deletes what has expired ("later", bought with the first) and nothing newer.
    assert PurgeExpiredKeys(core.uow, core.clock)() == 1
    with core.uow() as uow:
        assert uow.idempotency.get(alice.id, "later") is None
        kept = uow.idempotency.get(alice.id, "daily")
    assert kept is not None
    assert kept.response["token"]["id"] == renewed["id"]
    assert PurgeExpiredKeys(core.uow, core.clock)() == 0
