"""The pure rules behind ended logins and whole replays, over many inputs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zenzefi_core.domain import IdempotencyRecord, User
from zenzefi_core.errors import AccountDisabled, AuthenticationFailed
from zenzefi_core.ids import new_id
from zenzefi_core.security import REPLAY_SECRETS, WEBHOOK_SECRETS, SecretCipher
from zenzefi_core.services.idempotency import IdempotencyKey, ReplaySecrets
from zenzefi_core.services.users import LoginSession, session_user

MOMENT = datetime(2026, 12, 7, tzinfo=UTC)
VAULT = ReplaySecrets(SecretCipher("server key", REPLAY_SECRETS))
versions = st.integers(min_value=0, max_value=2**31 - 1)
keys = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=255
)
secret_lists = st.lists(st.text(min_size=1, max_size=80), min_size=1, max_size=100)


def a_user(version: int, *, active: bool = True) -> User:
    return User(
        id=new_id(),
        email="alice@example.com",
        username="alice",
        password_hash="hash",
        referral_code="ABCDEFGHIJKL",
        created_at=MOMENT,
        is_active=active,
        session_version=version,
    )


@given(stored=versions, presented=versions, active=st.booleans())
def test_a_session_acts_only_at_the_accounts_version_and_while_it_is_active(
    stored: int, presented: int, active: bool
) -> None:
    user = a_user(stored, active=active)
    session = LoginSession(user.id, presented)
    if presented != stored:
        with pytest.raises(AuthenticationFailed):
            session_user(user, session)
    elif not active:
        with pytest.raises(AccountDisabled):
            session_user(user, session)
    else:
        assert session_user(user, session) is user


@given(version=versions)
def test_a_session_of_another_account_or_of_none_is_refused(version: int) -> None:
    user = a_user(version)
    with pytest.raises(AuthenticationFailed):
        session_user(user, LoginSession(new_id(), version))
    with pytest.raises(AuthenticationFailed):
        session_user(None, LoginSession(user.id, version))


def record_for(key: IdempotencyKey, sealed: str | None) -> IdempotencyRecord:
    return IdempotencyRecord(
        user_id=key.user_id,
        key=key.key,
        operation=key.operation,
        request_hash=key.request_hash,
        response={},
        created_at=MOMENT,
        secrets_encrypted=sealed,
    )


def a_key(name: str) -> IdempotencyKey:
    key = IdempotencyKey.for_request(new_id(), name, "token.purchase", {"duration_hours": 1})
    assert key is not None
    return key


@given(name=keys, secrets=secret_lists)
def test_sealed_secrets_open_for_their_record_only(name: str, secrets: list[str]) -> None:
    key = a_key(name)
    sealed = VAULT.seal(key, secrets)
    assert VAULT.open(record_for(key, sealed)) == tuple(secrets)
    # Another user's record with the same key name, or another key of the same user.
    other_user = a_key(name)
    assert VAULT.open(record_for(other_user, sealed)) is None
    other_key = IdempotencyKey(key.user_id, name + "x", key.operation, key.request_hash)
    assert VAULT.open(record_for(other_key, sealed)) is None


@given(name=keys, secrets=secret_lists)
def test_secrets_sealed_under_another_key_or_purpose_do_not_open(
    name: str, secrets: list[str]
) -> None:
    key = a_key(name)
    elsewhere = ReplaySecrets(SecretCipher("another server key", REPLAY_SECRETS))
    as_webhook = ReplaySecrets(SecretCipher("server key", WEBHOOK_SECRETS))
    for sealed in (elsewhere.seal(key, secrets), as_webhook.seal(key, secrets)):
        assert VAULT.open(record_for(key, sealed)) is None
    assert VAULT.open(record_for(key, None)) is None
    assert VAULT.open(record_for(key, "not a fernet token")) is None
