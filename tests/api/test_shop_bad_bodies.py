"""Property: a bad request to the shop — a token purchase, a bundle purchase, an operator's new
bundle or bundle change — always gets a 4xx and changes nothing: balances, ledgers, tokens, the
catalogue and the audit log stay as they were.

Built like `test_bad_bodies`: valid bodies with corruptions (wrong types, values the core
refuses, unknown fields such as a typed-in price, missing fields, not an object, not JSON). A
corrupted bundle body is kept only if the (strict) body decoder or the core would surely refuse
it. Purchases come from a buyer who cannot afford anything, so even a body that slips through is
a 402 that changes nothing.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.api.conftest import Account, Accounts, ApiClient
from tests.api.test_bad_bodies import (
    PROPERTY,
    assert_refused,
    corrupted,
    json_values,
    nasty_text,
    not_a_string,
    raw_garbage,
    send,
)
from tests.api.test_bad_bodies import snapshot as accounts_snapshot
from zenzefi_api.controllers.bundles import BundleChangeIn, BundleIn
from zenzefi_core.bootstrap import Core
from zenzefi_core.domain.bundles import TokenBundle
from zenzefi_core.errors import DomainError
from zenzefi_core.pricing import PriceTable, parse_discount, parse_scope, price_bundle
from zenzefi_core.services.accounts import one_line_text
from zenzefi_core.services.bundles import DESCRIPTION_MAX, NAME_MAX

PRICES = PriceTable()


def snapshot(core: Core) -> tuple[Any, ...]:
    users, ledgers, audit = accounts_snapshot(core)
    now = core.clock.now()
    with core.uow() as uow:
        tokens = [
            uow.tokens.list_for_user(u.id, now=now, active_only=False, limit=100, offset=0).items
            for u in users
        ]
        catalogue = uow.bundles.catalogue(active_only=False)
    return users, ledgers, audit, tokens, catalogue


@pytest.fixture
def buyer(accounts: Accounts) -> Account:
    """Can afford nothing on sale: the cheapest token is 1.00."""
    account = accounts.register("buyer")
    accounts.post(account, "0.50")
    return account


@pytest.fixture
def admin(accounts: Accounts) -> Account:
    return accounts.admin()


@pytest.fixture
def starter(core: Core) -> TokenBundle:
    with core.uow() as uow:
        return next(b for b in uow.bundles.catalogue(active_only=True) if b.name == "Starter Pack")


not_an_int = json_values.filter(lambda v: isinstance(v, bool) or not isinstance(v, int))
scopes = nasty_text | not_a_string(allow_null=True)
purchase_bodies = st.one_of(
    corrupted(
        {"duration_hours": 24, "scope": "full"},
        {
            "duration_hours": st.integers() | not_an_int | st.sampled_from(list(PRICES.prices)),
            "scope": scopes | st.sampled_from(["full", "certificates_only"]),
        },
        required=["duration_hours"],
    ),
    raw_garbage,
)


@PROPERTY
@given(body=purchase_bodies)
def test_bad_token_purchases_are_refused(client: ApiClient, core: Core, buyer, body) -> None:
    before = snapshot(core)
    assert_refused(send(client, "POST", "/api/v1/tokens/purchase", body, **buyer.headers))
    assert snapshot(core) == before


# Printable Latin-1: what an HTTP client can put in a header at all.
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=300)


@PROPERTY
@given(key=header_text)
def test_unaffordable_bundle_purchases_change_nothing(
    client: ApiClient, core: Core, buyer, starter, key: str
) -> None:
    before = snapshot(core)
    response = client.post(
        f"/api/v1/bundles/{starter.id}/purchase",
        headers={**buyer.headers, "Idempotency-Key": key.encode("latin-1")},
    )
    assert_refused(response)
    assert snapshot(core) == before


def bundle_accepted(body: Any, struct: type[msgspec.Struct], current: dict[str, Any]) -> bool:
    """Whether the decoder and the core would take this body (then it is no bad body)."""
    try:
        data = msgspec.convert(body, type=struct, strict=True, str_keys=True)
    except (msgspec.ValidationError, TypeError):
        return False
    given_fields = {
        name: value
        for name in struct.__struct_fields__
        if not isinstance(value := getattr(data, name), msgspec.UnsetType)
    }
    fields = {**current, **given_fields}
    try:
        if one_line_text(fields["name"], "name", NAME_MAX) is None:
            return False
        if fields.get("description") is not None:
            one_line_text(fields["description"], "description", DESCRIPTION_MAX)
        parse_scope(fields["scope"])
        price_bundle(
            fields["token_count"],
            PRICES.price_for(fields["duration_hours"]),
            parse_discount(fields["discount_percent"]),
        )
    except DomainError:
        return False
    return True


BUNDLE_FIELDS = {
    "name": nasty_text | not_a_string(allow_null=True),
    "description": nasty_text | not_a_string(),
    "token_count": st.integers() | not_an_int,
    "duration_hours": st.integers() | not_an_int,
    "discount_percent": nasty_text
    | json_values
    | st.sampled_from(["100", "99.99", "-1", "9.999", "1e1", "NaN"]),
    "scope": scopes,
    "is_active": json_values,
}
PRICE_FIELDS = st.sampled_from(["base_price", "total_price", "savings", "price_per_token", "id"])
NEW_BUNDLE = {"name": "New", "token_count": 2, "duration_hours": 24, "discount_percent": "5.00"}
STARTER = {
    "name": "Starter Pack",
    "description": None,
    "token_count": 5,
    "duration_hours": 24,
    "discount_percent": "10.00",
    "scope": "full",
}


def with_price(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A body that types in a price or an id: always refused, whatever the value."""
    return st.tuples(PRICE_FIELDS, json_values).map(lambda kv: {**base, kv[0]: kv[1]})


new_bundle_bodies = st.one_of(
    corrupted(
        NEW_BUNDLE,
        BUNDLE_FIELDS,
        required=["name", "token_count", "duration_hours"],
    ).filter(lambda b: not bundle_accepted(b, BundleIn, {"scope": "full", "discount_percent": 0})),
    with_price(NEW_BUNDLE),
    raw_garbage,
)


@PROPERTY
@given(body=new_bundle_bodies)
def test_bad_new_bundles_are_refused(client: ApiClient, core: Core, admin, body) -> None:
    before = snapshot(core)
    assert_refused(send(client, "POST", "/api/v1/bundles", body, **admin.headers))
    assert snapshot(core) == before


bundle_changes = st.one_of(
    corrupted({"name": "Renamed"}, BUNDLE_FIELDS, required=[]).filter(
        lambda b: not bundle_accepted(b, BundleChangeIn, STARTER)
    ),
    with_price({"name": "Renamed"}),
    raw_garbage,
)


@PROPERTY
@given(body=bundle_changes)
def test_bad_bundle_changes_are_refused(
    client: ApiClient, core: Core, admin, starter, body
) -> None:
    before = snapshot(core)
    path = f"/api/v1/bundles/{starter.id}"
    assert_refused(send(client, "PATCH", path, body, **admin.headers))
    assert snapshot(core) == before
