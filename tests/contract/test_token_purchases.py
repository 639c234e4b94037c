"""Buying, listing and revoking access tokens, on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from decimal import Decimal

import pytest

from tests.shop import Shop, balance_of, deposit, events_of, ledger_of, open_account
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType
from zenzefi_core.domain.tokens import TokenScope
from zenzefi_core.errors import (
    AccountDisabled,
    IdempotencyConflict,
    InsufficientBalance,
    InvalidDuration,
    InvalidScope,
    TokenAlreadyActivated,
    TokenAlreadyRevoked,
    TokenNotFound,
)
from zenzefi_core.ids import new_id
from zenzefi_core.policy import ShopPolicy
from zenzefi_core.ports import UnitOfWorkFactory
from zenzefi_core.services.ledger_check import CheckLedger
from zenzefi_core.services.tokens import TokenOrder, TokenQuery, TokenRevocation

T = TransactionType


@pytest.fixture
def shop(uow_factory: UnitOfWorkFactory, clock: FixedClock) -> Shop:
    return Shop(uow_factory, clock, ShopPolicy())


def test_a_purchase_debits_the_price_and_stores_only_the_hash(shop: Shop) -> None:
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="100.00")
    bought = shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=24))

    token, plaintext = bought.token, bought.plaintext
    assert plaintext is not None
    assert len(plaintext) == 64  # 48 random bytes, URL-safe base64
    assert token.token_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert token.token_prefix == plaintext[:8]
    assert (token.duration_hours, token.scope, token.price_paid) == (
        24,
        TokenScope.FULL,
        Decimal("18.00"),
    )
    assert bought.cost == Decimal("18.00")
    assert (token.activated_at, token.expires_at, token.revoked_at) == (None, None, None)
    assert token.is_active_at(shop.clock.now())
    assert bought.new_balance == Decimal("82.00") == balance_of(shop.uow_factory, alice.id)
    assert not bought.replayed

    with shop.uow_factory() as uow:
        assert uow.tokens.get(token.id) == token
        assert uow.tokens.get_by_hash(token.token_hash) == token
        assert uow.tokens.get_by_hash(plaintext) is None
    [purchase] = ledger_of(shop.uow_factory, alice.id, T.PURCHASE)
    assert (purchase.amount, purchase.reference_type, purchase.reference_id) == (
        Decimal("-18.00"),
        "token",
        str(token.id),
    )
    [event] = events_of(shop.uow_factory, "token.purchased")
    assert event.user_id == alice.id
    assert event.payload == {
        "user_id": str(alice.id),
        "token_id": str(token.id),
        "token_prefix": token.token_prefix,
        "duration_hours": 24,
        "scope": "full",
        "cost_znc": "18.00",
        "new_balance": "82.00",
    }
    assert plaintext not in json.dumps([e.payload for e in events_of(shop.uow_factory)])
    assert CheckLedger(shop.uow_factory)().ok


@pytest.mark.parametrize(
    ("hours", "price"),
    [(1, "1.00"), (12, "10.00"), (24, "18.00"), (168, "100.00"), (720, "300.00")],
)
def test_every_duration_on_sale_can_be_bought(shop: Shop, hours: int, price: str) -> None:
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="300.00")
    bought = shop.purchase_token(
        TokenOrder(user_id=alice.id, duration_hours=hours, scope="certificates_only")
    )
    assert bought.token.price_paid == Decimal(price)
    assert bought.token.scope is TokenScope.CERTIFICATES_ONLY
    assert balance_of(shop.uow_factory, alice.id) == Decimal("300.00") - Decimal(price)


def test_a_short_balance_is_refused_and_changes_nothing(shop: Shop) -> None:
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="10.00")
    with pytest.raises(InsufficientBalance) as caught:
        shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=24))
    assert str(caught.value) == "Insufficient balance. Required: 18.00 ZNC, Available: 10.00 ZNC"
    assert balance_of(shop.uow_factory, alice.id) == Decimal("10.00")
    assert shop.list_tokens(TokenQuery(user_id=alice.id)).total == 0
    assert events_of(shop.uow_factory) == []


def test_bad_orders_are_refused_before_anything_happens(shop: Shop) -> None:
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="100.00")
    with pytest.raises(InvalidDuration, match=r"^Invalid duration"):
        shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=48))
    with pytest.raises(InvalidScope):
        shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=24, scope="everything"))
    assert balance_of(shop.uow_factory, alice.id) == Decimal("100.00")


def test_a_disabled_account_cannot_buy(shop: Shop) -> None:
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="100.00")
    with shop.uow_factory() as uow:
        uow.users.set_active(alice.id, False)
        uow.commit()
    with pytest.raises(AccountDisabled):
        shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=24))
    assert balance_of(shop.uow_factory, alice.id) == Decimal("100.00")


def test_tokens_are_listed_newest_first_and_filtered_to_active_ones(shop: Shop) -> None:
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="100.00")
    bob = open_account(shop.uow_factory, shop.clock, "bob", balance="100.00")
    bought = []
    for _ in range(4):
        bought.append(shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=1)).token)
        shop.clock.advance(timedelta(minutes=1))
    shop.purchase_token(TokenOrder(user_id=bob.id, duration_hours=1))
    oldest, used_up, revoked, fresh = bought
    shop.revoke(TokenRevocation(user_id=alice.id, token_id=revoked.id))
    with shop.uow_factory() as uow:
        assert uow.tokens.activate(used_up.id, shop.clock.now()) is not None
        assert uow.tokens.activate(oldest.id, shop.clock.now() + timedelta(minutes=30))
        uow.commit()
    shop.clock.advance(timedelta(minutes=61))  # used_up has expired, oldest has not

    everything = shop.list_tokens(TokenQuery(user_id=alice.id))
    assert [t.id for t in everything.items] == [fresh.id, revoked.id, used_up.id, oldest.id]
    assert everything.total == 4
    active = shop.list_tokens(TokenQuery(user_id=alice.id, active_only=True))
    assert [t.id for t in active.items] == [fresh.id, oldest.id]
    assert active.total == 2
    page = shop.list_tokens(TokenQuery(user_id=alice.id, limit=2, offset=1))
    assert [t.id for t in page.items] == [revoked.id, used_up.id]
    assert (page.total, page.limit, page.offset) == (4, 2, 1)


def test_revoking_an_unused_token_refunds_exactly_its_price(shop: Shop) -> None:
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="100.00")
    token = shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=168)).token
    shop.clock.advance(timedelta(minutes=5))
    revoked = shop.revoke(TokenRevocation(user_id=alice.id, token_id=token.id))

    assert revoked.refund_amount == Decimal("100.00")
    assert revoked.new_balance == Decimal("100.00") == balance_of(shop.uow_factory, alice.id)
    assert revoked.token.revoked_at == shop.clock.now()
    assert revoked.clawback is None
    with shop.uow_factory() as uow:
        stored = uow.tokens.get(token.id)
    assert stored is not None
    assert stored.revoked_at == shop.clock.now()
    assert not stored.is_active_at(shop.clock.now())
    [refund] = ledger_of(shop.uow_factory, alice.id, T.REFUND)
    assert (refund.amount, refund.reference_type, refund.reference_id) == (
        Decimal("100.00"),
        "token",
        str(token.id),
    )
    [event] = events_of(shop.uow_factory, "token.revoked")
    assert event.payload == {
        "user_id": str(alice.id),
        "token_id": str(token.id),
        "refund_amount": "100.00",
        "new_balance": "100.00",
    }
    assert CheckLedger(shop.uow_factory)().ok


def test_someone_elses_or_an_unknown_token_is_not_found(shop: Shop) -> None:
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="100.00")
    mallory = open_account(shop.uow_factory, shop.clock, "mallory", balance="0.00")
    token = shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=24)).token
    with pytest.raises(TokenNotFound):
        shop.revoke(TokenRevocation(user_id=mallory.id, token_id=token.id))
    with pytest.raises(TokenNotFound):
        shop.revoke(TokenRevocation(user_id=alice.id, token_id=new_id()))
    assert balance_of(shop.uow_factory, mallory.id) == Decimal("0.00")
    assert balance_of(shop.uow_factory, alice.id) == Decimal("82.00")


def test_an_activated_or_revoked_token_is_not_refunded(shop: Shop) -> None:
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="100.00")
    used = shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=24)).token
    unused = shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=24)).token
    with shop.uow_factory() as uow:
        uow.tokens.activate(used.id, shop.clock.now())
        uow.commit()
    with pytest.raises(TokenAlreadyActivated):
        shop.revoke(TokenRevocation(user_id=alice.id, token_id=used.id))
    shop.revoke(TokenRevocation(user_id=alice.id, token_id=unused.id))
    with pytest.raises(TokenAlreadyRevoked):
        shop.revoke(TokenRevocation(user_id=alice.id, token_id=unused.id))
    assert balance_of(shop.uow_factory, alice.id) == Decimal("82.00")
    assert len(ledger_of(shop.uow_factory, alice.id, T.REFUND)) == 1


def test_a_repeated_idempotency_key_returns_the_first_result_and_charges_once(shop: Shop) -> None:
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="100.00")
    order = TokenOrder(user_id=alice.id, duration_hours=24, idempotency_key="k-1")
    first = shop.purchase_token(order)
    shop.clock.advance(timedelta(seconds=30))
    again = shop.purchase_token(order)

    assert again.replayed
    assert again.token == first.token
    assert again.new_balance == first.new_balance == Decimal("82.00")
    # Only the hash was stored, so the replay cannot show the secret again.
    assert again.plaintext is None
    assert balance_of(shop.uow_factory, alice.id) == Decimal("82.00")
    assert shop.list_tokens(TokenQuery(user_id=alice.id)).total == 1
    assert len(events_of(shop.uow_factory, "token.purchased")) == 1
    with shop.uow_factory() as uow:
        record = uow.idempotency.get(alice.id, "k-1")
    assert record is not None
    assert first.plaintext is not None
    assert first.plaintext not in json.dumps(record.response)

    with pytest.raises(IdempotencyConflict):
        shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=1, idempotency_key="k-1"))
    # Keys belong to one user: someone else's "k-1" is a new request.
    bob = open_account(shop.uow_factory, shop.clock, "bob", balance="20.00")
    assert not shop.purchase_token(
        TokenOrder(user_id=bob.id, duration_hours=24, idempotency_key="k-1")
    ).replayed
    assert balance_of(shop.uow_factory, alice.id) == Decimal("82.00")


def test_a_failed_request_does_not_use_up_its_key(shop: Shop) -> None:
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="10.00")
    order = TokenOrder(user_id=alice.id, duration_hours=24, idempotency_key="retry-me")
    with pytest.raises(InsufficientBalance):
        shop.purchase_token(order)
    deposit(shop.uow_factory, shop.clock, alice, "10.00")
    bought = shop.purchase_token(order)
    assert not bought.replayed
    assert bought.new_balance == Decimal("2.00")


def test_balance_low_fires_once_per_crossing(shop: Shop) -> None:
    alice = open_account(shop.uow_factory, shop.clock, "alice", balance="31.00")

    def buy(hours: int) -> None:
        shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=hours))

    buy(12)  # 21.00
    buy(1)  # 20.00
    buy(1)  # ... 19.00
    for _ in range(9):
        buy(1)  # down to 10.00: at the line, not below it
    assert balance_of(shop.uow_factory, alice.id) == Decimal("10.00")
    assert events_of(shop.uow_factory, "balance.low") == []
    buy(1)  # 9.00: crosses
    buy(1)  # 8.00: already below
    [crossing] = events_of(shop.uow_factory, "balance.low")
    assert crossing.user_id == alice.id
    assert crossing.payload["balance"] == "9.00"
    assert crossing.payload["threshold"] == "10.00"

    deposit(shop.uow_factory, shop.clock, alice, "12.00")  # 20.00, above again
    buy(12)  # 10.00: not below
    buy(1)  # 9.00: crosses a second time
    assert [e.payload["balance"] for e in events_of(shop.uow_factory, "balance.low")] == [
        "9.00",
        "9.00",
    ]


def test_the_low_balance_line_comes_from_the_policy(
    uow_factory: UnitOfWorkFactory, clock: FixedClock
) -> None:
    shop = Shop(uow_factory, clock, ShopPolicy(low_balance_threshold=Decimal("90.00")))
    alice = open_account(uow_factory, clock, "alice", balance="100.00")
    shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=24))
    [event] = events_of(uow_factory, "balance.low")
    assert event.payload["threshold"] == "90.00"
