"""One contract for the persistence ports, run against memory, SQLite and PostgreSQL.

Every test here takes the `uow_factory` fixture, so the in-memory fake is held to exactly the
behaviour of the SQL adapter on both engines.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest
from sqlalchemy import update

from zenzefi_core.adapters.memory import InMemoryUnitOfWork
from zenzefi_core.adapters.sqlalchemy import SqlAlchemyUnitOfWork
from zenzefi_core.adapters.sqlalchemy.tables import users as users_table
from zenzefi_core.domain import IdempotencyRecord, LedgerEntry, OutboxEvent, TransactionType, User
from zenzefi_core.errors import IdempotencyConflict
from zenzefi_core.ids import new_id
from zenzefi_core.ports import LedgerDiscrepancy, UnitOfWork, UnitOfWorkFactory

T = TransactionType
MOMENT = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def a_user(
    username: str = "alice",
    *,
    email: str | None = None,
    referral_code: str | None = None,
    **fields: object,
) -> User:
    return User(
        id=new_id(),
        email=email or f"{username.lower()}@example.com",
        username=username,
        password_hash="argon2-hash-of-" + username,
        referral_code=referral_code or f"CODE{username.upper()}"[:12],
        created_at=MOMENT,
        **fields,  # type: ignore[arg-type]
    )


def an_entry(
    user: User,
    amount: str,
    *,
    balance_after: str = "0.00",
    transaction_type: TransactionType = T.DEPOSIT,
    at: datetime = MOMENT,
    reference_id: str = "ref",
) -> LedgerEntry:
    return LedgerEntry(
        id=new_id(),
        user_id=user.id,
        amount=Decimal(amount),
        balance_after=Decimal(balance_after),
        transaction_type=transaction_type,
        description=f"{transaction_type} of {amount}",
        reference_type="test",
        reference_id=reference_id,
        created_at=at,
    )


def an_event(event_type: str, at: datetime, user: User | None = None) -> OutboxEvent:
    return OutboxEvent(
        id=new_id(),
        event_type=event_type,
        payload={"kind": event_type, "amount": "1.50", "nested": {"list": [1, 2, None]}},
        created_at=at,
        user_id=None if user is None else user.id,
    )


def stored(uow_factory: UnitOfWorkFactory, *users: User) -> None:
    with uow_factory() as uow:
        for user in users:
            uow.users.add(user)
        uow.commit()


def fetch(uow_factory: UnitOfWorkFactory, user_id: UUID) -> User | None:
    with uow_factory() as uow:
        return uow.users.get(user_id)


def set_balance_behind_the_ledger(
    uow_factory: UnitOfWorkFactory, user_id: UUID, balance: Decimal
) -> None:
    """Break the invariant on purpose, the way a stray script or manual fix would."""
    uow = uow_factory()
    if isinstance(uow, InMemoryUnitOfWork):
        store = uow._store
        with store.lock:
            user = store.tables.users[user_id]
            store.tables.users[user_id] = dataclasses.replace(user, balance=balance)
    elif isinstance(uow, SqlAlchemyUnitOfWork):
        with uow._engine.begin() as connection:
            connection.execute(
                update(users_table).where(users_table.c.id == user_id).values(balance=balance)
            )
    else:
        raise TypeError(f"no way to tamper with {type(uow).__name__}")


@pytest.fixture
def alice(uow_factory: UnitOfWorkFactory) -> User:
    user = a_user("alice")
    stored(uow_factory, user)
    return user


# --- users -----------------------------------------------------------------------------------


def test_add_then_get_returns_the_same_user(uow_factory: UnitOfWorkFactory) -> None:
    referrer = a_user("referrer")
    user = a_user(
        "Bob",
        full_name="Bob B",
        referred_by_id=referrer.id,
        is_active=False,
        is_superuser=True,
    )
    stored(uow_factory, referrer, user)
    back = fetch(uow_factory, user.id)
    assert back == user
    assert back is not None
    assert back.balance == Decimal("0.00")
    assert back.created_at.tzinfo is not None
    assert back.created_at.utcoffset() == timedelta(0)


def test_get_unknown_user_is_none(uow_factory: UnitOfWorkFactory, alice: User) -> None:
    with uow_factory() as uow:
        assert uow.users.get(new_id()) is None
        assert uow.users.get_by_email("nobody@example.com") is None
        assert uow.users.get_by_username("nobody") is None
        assert uow.users.get_by_referral_code("NOSUCHCODE00") is None


@pytest.mark.parametrize(
    "email", ["alice@example.com", "ALICE@Example.COM", "  alice@example.com "]
)
def test_get_by_email_ignores_case_and_surrounding_space(
    uow_factory: UnitOfWorkFactory, alice: User, email: str
) -> None:
    with uow_factory() as uow:
        assert uow.users.get_by_email(email) == alice


@pytest.mark.parametrize("username", ["alice", "ALICE", "aLiCe", " alice "])
def test_get_by_username_ignores_case_and_surrounding_space(
    uow_factory: UnitOfWorkFactory, username: str
) -> None:
    user = a_user("Alice")
    stored(uow_factory, user)
    with uow_factory() as uow:
        found = uow.users.get_by_username(username)
    assert found == user
    assert found is not None
    assert found.username == "Alice"


def test_get_by_referral_code_is_exact(uow_factory: UnitOfWorkFactory, alice: User) -> None:
    with uow_factory() as uow:
        assert uow.users.get_by_referral_code(alice.referral_code) == alice
        assert uow.users.get_by_referral_code(alice.referral_code.lower()) is None
        assert uow.users.get_by_referral_code(alice.referral_code[:-1]) is None


def test_each_change_writes_its_own_columns_and_never_the_balance(
    uow_factory: UnitOfWorkFactory, alice: User
) -> None:
    with uow_factory() as uow:
        assert uow.users.change_balance(alice.id, Decimal("5.00")) == Decimal("5.00")
        uow.commit()
    with uow_factory() as uow:
        named = uow.users.set_full_name(alice.id, "Alice A")
        hashed = uow.users.set_password(alice.id, "another-hash")
        off = uow.users.set_active(alice.id, False)
        promoted = uow.users.set_superuser(alice.id, True)
        uow.commit()
    expected = dataclasses.replace(
        alice,
        full_name="Alice A",
        password_hash="another-hash",
        is_active=False,
        is_superuser=True,
        balance=Decimal("5.00"),
    )
    assert fetch(uow_factory, alice.id) == expected
    # Each returns the row as that statement left it.
    assert named is not None
    assert named.full_name == "Alice A"
    assert named.is_active
    assert hashed is not None
    assert hashed.password_hash == "another-hash"
    assert off is not None
    assert not off.is_active
    assert not off.is_superuser
    assert promoted == expected


def test_a_change_keeps_what_another_transaction_wrote_meanwhile(
    uow_factory: UnitOfWorkFactory, alice: User
) -> None:
    """What a use case read earlier is never written back: a profile change that read the
    account before an operator's ban leaves the ban in place."""
    read_before = fetch(uow_factory, alice.id)
    assert read_before is not None
    assert read_before.is_active
    with uow_factory() as uow:
        uow.users.set_active(alice.id, False)
        uow.commit()
    with uow_factory() as uow:
        uow.users.set_full_name(read_before.id, "Renamed")
        uow.commit()
    back = fetch(uow_factory, alice.id)
    assert back is not None
    assert back.full_name == "Renamed"
    assert not back.is_active


def test_end_sessions_counts_up_from_the_stored_version(
    uow_factory: UnitOfWorkFactory, alice: User
) -> None:
    assert alice.session_version == 0
    with uow_factory() as uow:
        first = uow.users.end_sessions(alice.id)
        second = uow.users.end_sessions(alice.id)
        uow.commit()
    assert first is not None
    assert first.session_version == 1
    assert second is not None
    assert second.session_version == 2
    back = fetch(uow_factory, alice.id)
    assert back == dataclasses.replace(alice, session_version=2)


def test_a_change_of_an_unknown_user_changes_nothing(
    uow_factory: UnitOfWorkFactory, alice: User
) -> None:
    ghost = a_user("ghost")
    with uow_factory() as uow:
        assert uow.users.set_full_name(ghost.id, "Nobody") is None
        assert uow.users.set_password(ghost.id, "hash") is None
        assert uow.users.set_active(ghost.id, False) is None
        assert uow.users.set_superuser(ghost.id, True) is None
        assert uow.users.end_sessions(ghost.id) is None
        uow.commit()
    assert fetch(uow_factory, ghost.id) is None
    assert fetch(uow_factory, alice.id) == alice


def test_change_balance_is_conditional(uow_factory: UnitOfWorkFactory, alice: User) -> None:
    with uow_factory() as uow:
        steps = [
            uow.users.change_balance(alice.id, Decimal("10.00")),
            uow.users.change_balance(alice.id, Decimal("-3.50")),
            uow.users.change_balance(alice.id, Decimal("-6.51")),
            uow.users.change_balance(alice.id, Decimal("-6.50")),
            uow.users.change_balance(alice.id, Decimal("-0.01")),
            uow.users.change_balance(new_id(), Decimal("1.00")),
        ]
        uow.commit()
    assert steps == [Decimal("10.00"), Decimal("6.50"), None, Decimal("0.00"), None, None]
    assert [str(step) for step in steps if step is not None] == ["10.00", "6.50", "0.00"]
    back = fetch(uow_factory, alice.id)
    assert back is not None
    assert str(back.balance) == "0.00"


def test_a_refused_change_leaves_the_balance_alone(
    uow_factory: UnitOfWorkFactory, alice: User
) -> None:
    with uow_factory() as uow:
        uow.users.change_balance(alice.id, Decimal("2.00"))
        assert uow.users.change_balance(alice.id, Decimal("-2.01")) is None
        user = uow.users.get(alice.id)
        assert user is not None
        assert user.balance == Decimal("2.00")
        uow.commit()
    back = fetch(uow_factory, alice.id)
    assert back is not None
    assert back.balance == Decimal("2.00")


# --- ledger ----------------------------------------------------------------------------------


def test_ledger_entries_round_trip_exactly(uow_factory: UnitOfWorkFactory, alice: User) -> None:
    entry = an_entry(alice, "12.34", balance_after="12.34", reference_id="payment-1")
    with uow_factory() as uow:
        uow.ledger.add(entry)
        uow.commit()
    with uow_factory() as uow:
        page = uow.ledger.list_for_user(alice.id, limit=10, offset=0)
    assert list(page.items) == [entry]
    back = page.items[0]
    assert str(back.amount) == "12.34"
    assert back.transaction_type is T.DEPOSIT
    assert back.created_at.utcoffset() == timedelta(0)


def test_list_for_user_newest_first_paginated_and_filtered(
    uow_factory: UnitOfWorkFactory, alice: User
) -> None:
    bob = a_user("bob")
    stored(uow_factory, bob)
    # Inserted out of order; two share a timestamp, where the (time-ordered) id decides.
    plan = [
        ("1.00", T.DEPOSIT, 2),
        ("-0.50", T.PURCHASE, 0),
        ("2.00", T.REFUND, 5),
        ("-0.25", T.PURCHASE, 5),
        ("3.00", T.ADJUSTMENT, 1),
    ]
    written = [
        an_entry(alice, amount, transaction_type=kind, at=MOMENT + timedelta(minutes=minutes))
        for amount, kind, minutes in plan
    ]
    with uow_factory() as uow:
        for entry in written:
            uow.ledger.add(entry)
        uow.ledger.add(an_entry(bob, "9.00", at=MOMENT + timedelta(hours=1)))
        uow.commit()

    newest_first = sorted(written, key=lambda e: (e.created_at, e.id), reverse=True)
    assert [e.amount for e in newest_first] == [
        Decimal(a) for a in ("-0.25", "2.00", "1.00", "3.00", "-0.50")
    ]
    with uow_factory() as uow:
        everything = uow.ledger.list_for_user(alice.id, limit=100, offset=0)
        first = uow.ledger.list_for_user(alice.id, limit=2, offset=0)
        second = uow.ledger.list_for_user(alice.id, limit=2, offset=2)
        last = uow.ledger.list_for_user(alice.id, limit=2, offset=4)
        beyond = uow.ledger.list_for_user(alice.id, limit=2, offset=10)
        purchases = uow.ledger.list_for_user(
            alice.id, limit=1, offset=0, transaction_type=T.PURCHASE
        )
        bonuses = uow.ledger.list_for_user(
            alice.id, limit=10, offset=0, transaction_type=T.REFERRAL_BONUS
        )
        nobody = uow.ledger.list_for_user(new_id(), limit=10, offset=0)

    assert list(everything.items) == newest_first
    assert everything.total == 5
    assert list(first.items) == newest_first[:2]
    assert list(second.items) == newest_first[2:4]
    assert list(last.items) == newest_first[4:]
    assert list(beyond.items) == []
    assert {first.total, second.total, last.total, beyond.total} == {5}
    assert (first.limit, first.offset, second.offset) == (2, 0, 2)
    assert [e.amount for e in purchases.items] == [Decimal("-0.25")]
    assert purchases.total == 2
    assert list(bonuses.items) == []
    assert bonuses.total == 0
    assert nobody.total == 0


def test_total_for_user_sums_only_that_users_entries(
    uow_factory: UnitOfWorkFactory, alice: User
) -> None:
    bob = a_user("bob")
    stored(uow_factory, bob)
    with uow_factory() as uow:
        for amount in ("0.10", "0.20", "-0.30", "100.05", "-0.01"):
            uow.ledger.add(an_entry(alice, amount))
        uow.ledger.add(an_entry(bob, "7.00"))
        uow.commit()
    with uow_factory() as uow:
        assert uow.ledger.total_for_user(alice.id) == Decimal("100.04")
        assert str(uow.ledger.total_for_user(alice.id)) == "100.04"
        assert uow.ledger.total_for_user(bob.id) == Decimal("7.00")
        assert str(uow.ledger.total_for_user(new_id())) == "0.00"


def wallet(uow: UnitOfWork, user: User, amount: str, kind: TransactionType = T.DEPOSIT) -> None:
    """Change a balance and record it, as post_entry does."""
    after = uow.users.change_balance(user.id, Decimal(amount))
    assert after is not None
    uow.ledger.add(an_entry(user, amount, balance_after=str(after), transaction_type=kind))


def test_discrepancies_and_count_users(uow_factory: UnitOfWorkFactory, alice: User) -> None:
    bob, carol = a_user("bob"), a_user("carol")
    stored(uow_factory, bob, carol)
    with uow_factory() as uow:
        wallet(uow, alice, "10.00")
        wallet(uow, alice, "-2.50", T.PURCHASE)
        wallet(uow, bob, "0.30")
        uow.commit()
    with uow_factory() as uow:
        assert uow.ledger.discrepancies() == []
        assert uow.ledger.count_users() == 3

    set_balance_behind_the_ledger(uow_factory, alice.id, Decimal("8.00"))
    set_balance_behind_the_ledger(uow_factory, carol.id, Decimal("0.01"))

    with uow_factory() as uow:
        found = uow.ledger.discrepancies()
        assert uow.ledger.count_users() == 3
    expected = [
        LedgerDiscrepancy(
            user_id=alice.id,
            username="alice",
            balance=Decimal("8.00"),
            ledger_total=Decimal("7.50"),
        ),
        LedgerDiscrepancy(
            user_id=carol.id,
            username="carol",
            balance=Decimal("0.01"),
            ledger_total=Decimal("0.00"),
        ),
    ]
    assert found == sorted(expected, key=lambda d: d.user_id)
    assert all(str(d.ledger_total) in ("7.50", "0.00") for d in found)


def test_discrepancies_of_an_empty_store(uow_factory: UnitOfWorkFactory) -> None:
    with uow_factory() as uow:
        assert uow.ledger.discrepancies() == []
        assert uow.ledger.count_users() == 0


# --- outbox ----------------------------------------------------------------------------------


def test_outbox_pending_is_oldest_first_and_skips_dispatched(
    uow_factory: UnitOfWorkFactory, alice: User
) -> None:
    events = [
        an_event("token.purchased", MOMENT + timedelta(seconds=3), alice),
        an_event("balance.low", MOMENT + timedelta(seconds=1), alice),
        an_event("referral.bonus", MOMENT + timedelta(seconds=2)),
        an_event("token.expired", MOMENT + timedelta(seconds=4)),
    ]
    with uow_factory() as uow:
        for event in events:
            uow.outbox.add(event)
        uow.commit()
    oldest_first = sorted(events, key=lambda e: e.created_at)

    with uow_factory() as uow:
        assert uow.outbox.pending(limit=10) == oldest_first
        assert uow.outbox.pending(limit=2) == oldest_first[:2]
        dispatched_at = MOMENT + timedelta(minutes=1)
        uow.outbox.mark_dispatched([oldest_first[0].id, oldest_first[2].id], dispatched_at)
        uow.outbox.mark_dispatched([], dispatched_at)
        uow.commit()

    with uow_factory() as uow:
        assert uow.outbox.pending(limit=10) == [oldest_first[1], oldest_first[3]]
        uow.outbox.mark_dispatched([oldest_first[1].id, new_id()], dispatched_at)
        uow.commit()
    with uow_factory() as uow:
        assert uow.outbox.pending(limit=10) == [oldest_first[3]]


def test_outbox_events_round_trip(uow_factory: UnitOfWorkFactory, alice: User) -> None:
    event = an_event("token.purchased", MOMENT, alice)
    with uow_factory() as uow:
        uow.outbox.add(event)
        uow.commit()
    with uow_factory() as uow:
        (back,) = uow.outbox.pending(limit=10)
    assert back == event
    assert back.payload == {
        "kind": "token.purchased",
        "amount": "1.50",
        "nested": {"list": [1, 2, None]},
    }
    assert back.created_at.utcoffset() == timedelta(0)
    assert back.dispatched_at is None
    assert back.attempts == 0


def test_outbox_add_without_commit_is_not_pending(uow_factory: UnitOfWorkFactory) -> None:
    with uow_factory() as uow:
        uow.outbox.add(an_event("token.purchased", MOMENT))
        assert len(uow.outbox.pending(limit=10)) == 1
    with uow_factory() as uow:
        assert uow.outbox.pending(limit=10) == []


# --- idempotency keys ------------------------------------------------------------------------


def a_record(user: User, key: str, response: dict[str, object] | None = None) -> IdempotencyRecord:
    return IdempotencyRecord(
        user_id=user.id,
        key=key,
        operation="purchase_token",
        request_hash="a" * 64,
        response=response or {"token_id": "t-1", "price": "10.00", "items": [1, 2]},
        created_at=MOMENT,
    )


def test_idempotency_add_then_get(uow_factory: UnitOfWorkFactory, alice: User) -> None:
    record = a_record(alice, "key-1")
    with uow_factory() as uow:
        uow.idempotency.add(record)
        uow.commit()
    with uow_factory() as uow:
        assert uow.idempotency.get(alice.id, "key-1") == record
        assert uow.idempotency.get(alice.id, "key-2") is None
        assert uow.idempotency.get(new_id(), "key-1") is None


def test_idempotency_duplicate_key_conflicts(uow_factory: UnitOfWorkFactory, alice: User) -> None:
    bob = a_user("bob")
    stored(uow_factory, bob)
    first = a_record(alice, "key-1")
    with uow_factory() as uow:
        uow.idempotency.add(first)
        uow.commit()
    with uow_factory() as uow:
        with pytest.raises(IdempotencyConflict):
            uow.idempotency.add(a_record(alice, "key-1", {"token_id": "t-2"}))
        # Another user may use the same key; the refusal left the unit of work usable.
        uow.idempotency.add(a_record(bob, "key-1"))
        uow.commit()
    with uow_factory() as uow:
        assert uow.idempotency.get(alice.id, "key-1") == first
        again = uow.idempotency.get(bob.id, "key-1")
        assert again is not None
        assert again.user_id == bob.id


def test_idempotency_keeps_sealed_secrets_and_purges_by_age(
    uow_factory: UnitOfWorkFactory, alice: User
) -> None:
    sealed = dataclasses.replace(a_record(alice, "old"), secrets_encrypted="gAAAA-sealed")
    edge = dataclasses.replace(a_record(alice, "edge"), created_at=MOMENT + timedelta(hours=1))
    young = dataclasses.replace(a_record(alice, "young"), created_at=MOMENT + timedelta(hours=2))
    with uow_factory() as uow:
        for record in (sealed, edge, young):
            uow.idempotency.add(record)
        uow.commit()
    with uow_factory() as uow:
        assert uow.idempotency.get(alice.id, "old") == sealed
        assert uow.idempotency.purge(created_up_to=MOMENT + timedelta(hours=1)) == 2
        uow.idempotency.remove(alice.id, "no-such-key")
        uow.commit()
    with uow_factory() as uow:
        assert uow.idempotency.get(alice.id, "old") is None
        assert uow.idempotency.get(alice.id, "edge") is None
        assert uow.idempotency.get(alice.id, "young") == young
        uow.idempotency.remove(alice.id, "young")
        # A removed key can be used again.
        uow.idempotency.add(dataclasses.replace(young, response={"again": True}))
        uow.commit()
    with uow_factory() as uow:
        again = uow.idempotency.get(alice.id, "young")
    assert again is not None
    assert again.response == {"again": True}


# --- transactions ----------------------------------------------------------------------------


def test_leaving_without_commit_persists_nothing(uow_factory: UnitOfWorkFactory) -> None:
    user = a_user("alice")
    with uow_factory() as uow:
        uow.users.add(user)
        uow.users.change_balance(user.id, Decimal("5.00"))
        uow.ledger.add(an_entry(user, "5.00", balance_after="5.00"))
        assert uow.users.get(user.id) is not None
    with uow_factory() as uow:
        assert uow.users.get(user.id) is None
        assert uow.ledger.count_users() == 0
        assert uow.ledger.list_for_user(user.id, limit=10, offset=0).total == 0


def test_commit_persists(uow_factory: UnitOfWorkFactory) -> None:
    user = a_user("alice")
    with uow_factory() as uow:
        uow.users.add(user)
        uow.users.change_balance(user.id, Decimal("5.00"))
        uow.ledger.add(an_entry(user, "5.00", balance_after="5.00"))
        uow.commit()
    with uow_factory() as uow:
        back = uow.users.get(user.id)
        assert back is not None
        assert back.balance == Decimal("5.00")
        assert uow.ledger.total_for_user(user.id) == Decimal("5.00")


def test_an_exception_rolls_back(uow_factory: UnitOfWorkFactory, alice: User) -> None:
    def fail() -> None:
        with uow_factory() as uow:
            uow.users.change_balance(alice.id, Decimal("5.00"))
            raise RuntimeError("half way")

    with pytest.raises(RuntimeError, match="half way"):
        fail()
    assert fetch(uow_factory, alice.id) == alice


def test_work_after_a_commit_needs_its_own_commit(
    uow_factory: UnitOfWorkFactory, alice: User
) -> None:
    with uow_factory() as uow:
        uow.users.change_balance(alice.id, Decimal("1.00"))
        uow.commit()
        uow.users.change_balance(alice.id, Decimal("2.00"))
        uow.users.add(a_user("bob"))
    back = fetch(uow_factory, alice.id)
    assert back is not None
    assert back.balance == Decimal("1.00")
    with uow_factory() as uow:
        assert uow.users.get_by_username("bob") is None


def test_explicit_rollback_then_commit(uow_factory: UnitOfWorkFactory, alice: User) -> None:
    with uow_factory() as uow:
        uow.users.change_balance(alice.id, Decimal("1.00"))
        uow.rollback()
        uow.users.change_balance(alice.id, Decimal("2.00"))
        uow.commit()
    back = fetch(uow_factory, alice.id)
    assert back is not None
    assert back.balance == Decimal("2.00")


def test_timestamps_come_back_timezone_aware_utc(uow_factory: UnitOfWorkFactory) -> None:
    # The clock hands out UTC; SQLite has no time zone type and must put it back on reading.
    moment = datetime(2026, 11, 26, 13, 30, 15, 123456, tzinfo=UTC)
    user = dataclasses.replace(a_user("alice"), created_at=moment)
    stored(uow_factory, user)
    with uow_factory() as uow:
        uow.ledger.add(an_entry(user, "1.00", at=moment))
        uow.outbox.add(an_event("balance.low", moment, user))
        uow.idempotency.add(dataclasses.replace(a_record(user, "k"), created_at=moment))
        uow.commit()
    with uow_factory() as uow:
        back = uow.users.get(user.id)
        assert back is not None
        (entry,) = uow.ledger.list_for_user(user.id, limit=10, offset=0).items
        (event,) = uow.outbox.pending(limit=10)
        record = uow.idempotency.get(user.id, "k")
        assert record is not None
    for value in (back.created_at, entry.created_at, event.created_at, record.created_at):
        assert value == moment
        assert value.utcoffset() == timedelta(0)
        assert value.isoformat() == "2026-11-26T13:30:15.123456+00:00"


def test_cents_stay_exact(uow_factory: UnitOfWorkFactory, alice: User) -> None:
    """0.10 + 0.20 is 0.30 exactly, also on SQLite, which stores NUMERIC as a float."""
    with uow_factory() as uow:
        wallet(uow, alice, "0.10")
        wallet(uow, alice, "0.20")
        uow.commit()
    with uow_factory() as uow:
        back = uow.users.get(alice.id)
        assert back is not None
        assert str(back.balance) == "0.30"
        assert uow.users.change_balance(alice.id, Decimal("-0.30")) == Decimal("0.00")
        uow.ledger.add(an_entry(alice, "-0.30", balance_after="0.00", transaction_type=T.PURCHASE))
        uow.commit()
    with uow_factory() as uow:
        back = uow.users.get(alice.id)
        assert back is not None
        assert str(back.balance) == "0.00"
        assert str(uow.ledger.total_for_user(alice.id)) == "0.00"
        assert uow.users.change_balance(alice.id, Decimal("-0.01")) is None
        assert uow.ledger.discrepancies() == []
        amounts = [
            str(e.amount) for e in uow.ledger.list_for_user(alice.id, limit=9, offset=0).items
        ]
    assert sorted(amounts) == ["-0.30", "0.10", "0.20"]


def test_many_small_amounts_add_up_exactly(uow_factory: UnitOfWorkFactory, alice: User) -> None:
    with uow_factory() as uow:
        for _ in range(100):
            wallet(uow, alice, "0.07")
        for _ in range(30):
            wallet(uow, alice, "-0.01", T.PURCHASE)
        uow.commit()
    with uow_factory() as uow:
        back = uow.users.get(alice.id)
        assert back is not None
        assert str(back.balance) == "6.70"
        assert str(uow.ledger.total_for_user(alice.id)) == "6.70"
        assert uow.ledger.discrepancies() == []
        assert uow.users.change_balance(alice.id, Decimal("-6.71")) is None
        assert uow.users.change_balance(alice.id, Decimal("-6.70")) == Decimal("0.00")


def test_large_amounts_stay_exact(uow_factory: UnitOfWorkFactory, alice: User) -> None:
    with uow_factory() as uow:
        wallet(uow, alice, "999999999999.99")
        wallet(uow, alice, "0.01")
        uow.commit()
    with uow_factory() as uow:
        back = uow.users.get(alice.id)
        assert back is not None
        assert str(back.balance) == "1000000000000.00"
        assert uow.ledger.total_for_user(alice.id) == Decimal("1000000000000.00")
        assert uow.users.change_balance(alice.id, Decimal("-999999999999.99")) == Decimal("0.01")
