"""The shop's wiring on the in-memory adapter: settings to policy, secrets, keys and alerts."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from tests.shop import Shop, open_account
from zenzefi_core.adapters.memory import MemoryStore
from zenzefi_core.clock import FixedClock
from zenzefi_core.errors import InvalidInput
from zenzefi_core.ids import new_id
from zenzefi_core.policy import ShopPolicy
from zenzefi_core.pricing import DEFAULT_PRICES
from zenzefi_core.referrals import ReferralPolicy
from zenzefi_core.security import hash_access_token, new_access_token
from zenzefi_core.services.bundles import BundleOrder
from zenzefi_core.services.idempotency import IdempotencyKey, request_hash
from zenzefi_core.services.tokens import TokenOrder
from zenzefi_core.services.wallet import DEFAULT_LOW_BALANCE_THRESHOLD
from zenzefi_core.settings import Settings


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 26, 10, 0, tzinfo=UTC))


@pytest.fixture
def shop(clock: FixedClock) -> Shop:
    return Shop(MemoryStore().unit_of_work, clock, ShopPolicy())


def test_the_default_policy_is_the_product_documents() -> None:
    policy = ShopPolicy.from_settings(Settings())
    assert policy == ShopPolicy()
    assert policy.prices.prices == DEFAULT_PRICES
    assert policy.referrals == ReferralPolicy(percent=Decimal("10"))
    assert policy.low_balance_threshold == DEFAULT_LOW_BALANCE_THRESHOLD == Decimal("10.00")


def test_the_policy_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZENZEFI_TOKENS_PRICES", '{"2": "2.50", "48": "30"}')
    monkeypatch.setenv("ZENZEFI_REFERRAL_PERCENT", "7.5")
    monkeypatch.setenv("ZENZEFI_REFERRAL_MINIMUM_PURCHASE", "5.00")
    monkeypatch.setenv("ZENZEFI_REFERRAL_FIRST_PURCHASE_ONLY", "true")
    monkeypatch.setenv("ZENZEFI_REFERRAL_MONTHLY_CAP", "100")
    monkeypatch.setenv("ZENZEFI_LOW_BALANCE_THRESHOLD", "25.00")
    policy = ShopPolicy.from_settings(Settings())
    assert policy.prices.durations == (2, 48)
    assert policy.prices.price_for(48) == Decimal("30.00")
    assert policy.referrals == ReferralPolicy(
        percent=Decimal("7.5"),
        minimum_purchase=Decimal("5.00"),
        first_purchase_only=True,
        monthly_cap=Decimal("100.00"),
    )
    assert policy.low_balance_threshold == Decimal("25.00")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ZENZEFI_TOKENS_PRICES", '{"24": 18.5}'),
        ("ZENZEFI_TOKENS_PRICES", '{"24": "18.005"}'),
        ("ZENZEFI_TOKENS_PRICES", '{"24": "-1"}'),
        ("ZENZEFI_TOKENS_PRICES", "{}"),
        ("ZENZEFI_REFERRAL_PERCENT", "101"),
        ("ZENZEFI_REFERRAL_MONTHLY_CAP", "-1"),
        ("ZENZEFI_REFERRAL_MINIMUM_PURCHASE", "0.001"),
    ],
)
def test_bad_settings_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises((ValidationError, InvalidInput)):
        ShopPolicy.from_settings(Settings())


def test_access_token_secrets() -> None:
    secret = new_access_token()
    assert re.fullmatch(r"[A-Za-z0-9_-]{64}", secret.plaintext)
    assert secret.hash == hashlib.sha256(secret.plaintext.encode()).hexdigest()
    assert secret.hash == hash_access_token(secret.plaintext)
    assert secret.prefix == secret.plaintext[:8]
    assert len({new_access_token().plaintext for _ in range(100)}) == 100


def test_no_secret_is_kept_anywhere_in_the_store(clock: FixedClock) -> None:
    store = MemoryStore()
    shop = Shop(store.unit_of_work, clock, ShopPolicy())
    starter = shop.seeded()["Starter Pack"]
    alice = open_account(store.unit_of_work, clock, "alice", balance="200.00")
    single = shop.purchase_token(
        TokenOrder(user_id=alice.id, duration_hours=24, idempotency_key="a")
    )
    bundle = shop.purchase_bundle(
        BundleOrder(user_id=alice.id, bundle_id=starter.id, idempotency_key="b")
    )
    secrets = [single.plaintext, *(i.plaintext for i in bundle.tokens)]
    assert all(secrets)
    everything = repr(store.tables)
    for secret in secrets:
        assert secret is not None
        assert secret not in everything
        assert hash_access_token(secret) in everything


def test_idempotency_keys_are_checked_and_fingerprinted() -> None:
    user_id = new_id()
    assert IdempotencyKey.for_request(user_id, None, "op", {}) is None
    key = IdempotencyKey.for_request(user_id, "abc-123", "op", {"b": 1, "a": "x"})
    assert key is not None
    assert key.request_hash == request_hash("op", {"a": "x", "b": 1})
    assert key.request_hash != request_hash("op", {"a": "x", "b": 2})
    assert key.request_hash != request_hash("other", {"a": "x", "b": 1})
    for bad in ("", "x" * 256, "naïve", "tab\there"):
        with pytest.raises(InvalidInput, match="Idempotency-Key"):
            IdempotencyKey.for_request(user_id, bad, "op", {})
