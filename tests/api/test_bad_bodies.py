"""Property: a bad body sent to register, login, PATCH /users/me or the admin credit always gets
a 4xx and changes nothing: users, password hashes, balances, ledger and audit log stay as they
were.

Each body is a valid one with at least one corruption that makes it invalid for sure: a field
of the wrong type, a value the core's own validators refuse (huge or empty strings, control
characters, any Unicode), an extra or missing field, money with three decimals, zero or too
much money, or something that is not a JSON object, or not JSON, at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import PASSWORD, Account, Accounts, ApiClient
from zenzefi_core.bootstrap import Core
from zenzefi_core.errors import DomainError
from zenzefi_core.money import Sign, parse_amount
from zenzefi_core.services.accounts import (
    normalize_email,
    one_line_text,
    validate_full_name,
    validate_password,
    validate_username,
)
from zenzefi_core.services.admin import REASON_MAX

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
nasty_text = st.one_of(
    st.text(),
    st.text(min_size=200, max_size=3000),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=100),
    st.sampled_from(["", " ", "\x00", "a\x00b", "😀" * 40, "é" * 80, "NaN", "1e3", "\n"]),
)


def refused_by(validator: Callable[[str], object]) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        try:
            validator(value)
        except DomainError:
            return True
        return False

    return check


def not_a_string(allow_null: bool = False) -> st.SearchStrategy[Any]:
    return json_values.filter(lambda v: not isinstance(v, str) and (allow_null or v is not None))


def corrupted(
    base: dict[str, Any], field_values: dict[str, st.SearchStrategy[Any]], required: list[str]
) -> st.SearchStrategy[Any]:
    """`base` with one corruption that certainly makes it invalid."""
    extra_key = st.text(min_size=1, max_size=20).filter(lambda k: k not in base)
    choices: list[st.SearchStrategy[Any]] = [
        st.tuples(extra_key, json_values).map(lambda kv: {**base, kv[0]: kv[1]}),
        json_values.filter(lambda v: not isinstance(v, dict)),
    ]
    for name in required:
        choices.append(st.just({k: v for k, v in base.items() if k != name}))
    for name, bad in field_values.items():
        choices.append(bad.map(_replacing(base, name)))
    return st.one_of(choices)


def _replacing(base: dict[str, Any], name: str) -> Callable[[Any], dict[str, Any]]:
    return lambda value: {**base, name: value}


raw_garbage = st.binary(max_size=200).filter(lambda b: not _is_json_object(b))


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


def snapshot(core: Core) -> tuple[Any, ...]:
    with core.uow() as uow:
        users = sorted(uow.users.search(limit=100, offset=0).items, key=lambda u: u.id)
        ledgers = [list(uow.ledger.list_for_user(u.id, limit=100, offset=0).items) for u in users]
        audit = uow.audit.list_entries(limit=100, offset=0).total
    return users, ledgers, audit


def send(client: ApiClient, method: str, path: str, body: Any, **kwargs: Any):
    if isinstance(body, bytes):
        return client.request(
            method, path, content=body, headers={"content-type": "application/json", **kwargs}
        )
    return client.request(method, path, json=body, headers=kwargs or None)


def assert_refused(response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert isinstance(response.json()["detail"], str)


REGISTER_BASE = {"email": "new@example.com", "username": "newcomer", "password": PASSWORD}
register_bodies = st.one_of(
    corrupted(
        REGISTER_BASE,
        {
            "email": nasty_text.filter(refused_by(normalize_email)) | not_a_string(),
            "username": nasty_text.filter(refused_by(validate_username)) | not_a_string(),
            "password": nasty_text.filter(refused_by(validate_password)) | not_a_string(),
            "full_name": nasty_text.filter(refused_by(validate_full_name)) | not_a_string(),
        },
        required=["email", "username", "password"],
    ),
    raw_garbage,
)


@pytest.fixture
def alice(accounts: Accounts) -> Account:
    """Made once per test, not per example: every example must leave the store as it was."""
    return accounts.register("alice", full_name="Alice")


@pytest.fixture
def admin(accounts: Accounts) -> Account:
    return accounts.admin()


@PROPERTY
@given(body=register_bodies)
def test_bad_registrations_are_refused(client: ApiClient, core: Core, alice, body) -> None:
    before = snapshot(core)
    assert_refused(send(client, "POST", "/api/v1/auth/register", body))
    assert snapshot(core) == before


login_bodies = st.one_of(
    corrupted(
        {"email": "alice@example.com", "password": PASSWORD},
        {
            "email": not_a_string() | st.text(min_size=1025, max_size=1100),
            "password": not_a_string()
            | st.text(max_size=100).filter(lambda p: p != PASSWORD)
            | st.text(min_size=1025, max_size=1100),
        },
        required=["email", "password"],
    ),
    raw_garbage,
)


@PROPERTY
@given(body=login_bodies)
def test_bad_logins_are_refused(client: ApiClient, core: Core, alice, body) -> None:
    before = snapshot(core)
    assert_refused(send(client, "POST", "/api/v1/auth/login", body))
    assert snapshot(core) == before


valid_new_password = st.just("a brand new password")
profile_bodies = st.one_of(
    corrupted(
        {"full_name": "Alice"},
        {"full_name": nasty_text.filter(refused_by(validate_full_name)) | not_a_string()},
        required=[],
    ),
    # A new password without the current one, with a wrong one, or itself invalid.
    valid_new_password.map(lambda p: {"password": p, "full_name": "Changed"}),
    st.tuples(valid_new_password, st.text(max_size=50).filter(lambda c: c != PASSWORD)).map(
        lambda pc: {"password": pc[0], "current_password": pc[1], "full_name": "Changed"}
    ),
    nasty_text.filter(refused_by(validate_password)).map(
        lambda p: {"password": p, "current_password": PASSWORD}
    ),
    not_a_string().map(lambda v: {"password": v, "current_password": PASSWORD}),
    not_a_string().map(lambda v: {"password": "a brand new password", "current_password": v}),
    raw_garbage,
)


@PROPERTY
@given(body=profile_bodies)
def test_bad_profile_changes_are_refused(client: ApiClient, core: Core, alice, body) -> None:
    before = snapshot(core)
    assert_refused(send(client, "PATCH", "/api/v1/users/me", body, **alice.headers))
    assert snapshot(core) == before


def three_decimals() -> st.SearchStrategy[str]:
    return st.tuples(
        st.integers(min_value=-(10**6), max_value=10**6),
        st.integers(min_value=0, max_value=99),
        st.integers(min_value=1, max_value=9),
        st.sampled_from(["", "0", "00"]),
    ).map(lambda t: f"{t[0]}.{t[1]:02d}{t[2]}{t[3]}")


def refused_reason(value: str) -> bool:
    try:
        return one_line_text(value, "reason", REASON_MAX) is None
    except DomainError:
        return True


def refused_amount(value: str) -> bool:
    try:
        parse_amount(value, sign=Sign.ANY)
    except DomainError:
        return True
    return False


credit_bodies = st.one_of(
    corrupted(
        {"amount": "10.00", "reason": "Goodwill"},
        {
            "amount": three_decimals()
            | st.sampled_from(["0", "0.00", "-0", "+0.0", "1000000.01", "-1000000.01", "1e2"])
            | nasty_text.filter(refused_amount)
            | not_a_string(),
            "reason": nasty_text.filter(refused_reason) | not_a_string(),
        },
        required=["amount", "reason"],
    ),
    # A valid debit the wallet cannot cover: 402.
    st.decimals(min_value="0.01", max_value="999999.99", places=2).map(
        lambda d: {"amount": f"-{d}", "reason": "Debit"}
    ),
    raw_garbage,
)


@PROPERTY
@given(body=credit_bodies)
def test_bad_credits_are_refused(client: ApiClient, core: Core, admin, alice, body) -> None:
    before = snapshot(core)
    path = f"/api/v1/admin/users/{alice.id}/credit"
    assert_refused(send(client, "POST", path, body, **admin.headers))
    assert snapshot(core) == before
