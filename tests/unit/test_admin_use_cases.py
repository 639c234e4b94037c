"""Operator use cases on the in-memory adapter: balance adjustments with their audit entries,
account and role changes, user search, the audit log, and the wallet read side."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zenzefi_core.adapters.memory import MemoryStore
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import AuditAction, TransactionType, User
from zenzefi_core.errors import (
    AccountDisabled,
    ActionRefused,
    InsufficientBalance,
    InvalidAmount,
    InvalidInput,
    PermissionDenied,
    UserNotFound,
)
from zenzefi_core.ids import new_id
from zenzefi_core.money_audit import AUDIT_REFERENCE
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.accounts import add_user
from zenzefi_core.services.admin import (
    AccountChange,
    AdjustBalance,
    AuditQuery,
    BalanceAdjustment,
    ListAuditLog,
    ListUsers,
    SetSuperuser,
    SetUserActive,
    ShowUser,
    UserLookup,
    UserQuery,
    require_superuser,
)
from zenzefi_core.services.balance import GetBalance, ListTransactions, TransactionQuery
from zenzefi_core.services.ledger_check import CheckLedger

HASHER = fast_password_hasher()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def create(store: MemoryStore, clock: FixedClock, username: str, **flags: bool) -> User:
    clock.advance(timedelta(seconds=1))
    with store.unit_of_work() as uow:
        user = add_user(
            uow,
            clock,
            HASHER,
            email=f"{username}@example.com",
            username=username,
            password="correct horse",
            is_superuser=flags.get("is_superuser", False),
        )
        if not flags.get("is_active", True):
            user = uow.users.set_active(user.id, False) or user
        uow.commit()
    return user


@pytest.fixture
def admin(store, clock) -> User:
    return create(store, clock, "admin", is_superuser=True)


@pytest.fixture
def alice(store, clock) -> User:
    return create(store, clock, "alice")


@pytest.fixture
def adjust(store, clock) -> AdjustBalance:
    return AdjustBalance(store.unit_of_work, clock, maximum=Decimal("1000.00"))


def snapshot(store: MemoryStore):
    with store.unit_of_work() as uow:
        return (
            sorted(uow.users.search(limit=100, offset=0).items, key=lambda u: u.id),
            uow.audit.list_entries(limit=100, offset=0).items,
            uow.ledger.discrepancies(),
        )


def test_require_superuser() -> None:
    base = User(
        id=new_id(),
        email="a@example.com",
        username="abc",
        password_hash="x",
        referral_code="A" * 12,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(PermissionDenied):
        require_superuser(None)
    with pytest.raises(PermissionDenied, match="Superuser"):
        require_superuser(base)
    with pytest.raises(AccountDisabled):
        require_superuser(dataclasses.replace(base, is_superuser=True, is_active=False))
    admin = dataclasses.replace(base, is_superuser=True)
    assert require_superuser(admin) is admin


# Balance adjustments


def test_credit_and_debit_write_an_adjustment_and_its_audit_entry(
    store, adjust, admin, alice
) -> None:
    credited = adjust(
        BalanceAdjustment(admin.id, alice.id, Decimal("25.50"), " goodwill ", "203.0.113.9")
    )
    assert credited.entry.amount == Decimal("25.50")
    assert credited.entry.balance_after == Decimal("25.50")
    assert credited.entry.transaction_type is TransactionType.ADJUSTMENT
    assert credited.entry.description == "goodwill"
    assert credited.entry.reference_type == AUDIT_REFERENCE
    assert credited.entry.reference_id == str(credited.audit.id)
    assert credited.audit.actor_id == admin.id
    assert credited.audit.action is AuditAction.BALANCE_ADJUSTED
    assert credited.audit.target_type == "user"
    assert credited.audit.target_id == str(alice.id)
    assert credited.audit.client_address == "203.0.113.9"
    assert credited.audit.details == {
        "amount": "25.50",
        "reason": "goodwill",
        "transaction_id": str(credited.entry.id),
        "balance_after": "25.50",
    }

    debited = adjust(BalanceAdjustment(admin.id, alice.id, Decimal("-25.50"), "reversal"))
    assert debited.entry.balance_after == Decimal("0.00")
    assert debited.audit.client_address is None
    assert GetBalance(store.unit_of_work)(alice.id) == Decimal("0.00")
    assert CheckLedger(store.unit_of_work)().ok


def test_a_debit_below_zero_changes_nothing(store, adjust, admin, alice) -> None:
    adjust(BalanceAdjustment(admin.id, alice.id, Decimal("10.00"), "start"))
    before = snapshot(store)
    with pytest.raises(InsufficientBalance, match=r"Required: 10\.01 ZNC, Available: 10\.00 ZNC"):
        adjust(BalanceAdjustment(admin.id, alice.id, Decimal("-10.01"), "too much"))
    assert snapshot(store) == before


@pytest.mark.parametrize(
    ("amount", "error"),
    [
        (Decimal("0"), InvalidAmount),
        (Decimal("1.001"), InvalidAmount),
        (Decimal("1000.01"), InvalidAmount),
        (Decimal("-1000.01"), InvalidAmount),
        (Decimal("NaN"), InvalidAmount),
    ],
)
def test_bad_amounts_are_refused(store, adjust, admin, alice, amount, error) -> None:
    before = snapshot(store)
    with pytest.raises(error):
        adjust(BalanceAdjustment(admin.id, alice.id, amount, "reason"))
    assert snapshot(store) == before


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501, "two\nlines", "nul\x00"])
def test_a_reason_is_required_and_one_bounded_line(store, adjust, admin, alice, reason) -> None:
    with pytest.raises(InvalidInput, match="reason"):
        adjust(BalanceAdjustment(admin.id, alice.id, Decimal("1.00"), reason))


def test_only_an_active_superuser_may_adjust(store, clock, adjust, admin, alice) -> None:
    bob = create(store, clock, "bob")
    former = create(store, clock, "former", is_superuser=True, is_active=False)
    before = snapshot(store)
    with pytest.raises(PermissionDenied):
        adjust(BalanceAdjustment(bob.id, alice.id, Decimal("1.00"), "self-service"))
    with pytest.raises(AccountDisabled):
        adjust(BalanceAdjustment(former.id, alice.id, Decimal("1.00"), "old habits"))
    with pytest.raises(PermissionDenied):
        adjust(BalanceAdjustment(new_id(), alice.id, Decimal("1.00"), "ghost"))
    with pytest.raises(UserNotFound):
        adjust(BalanceAdjustment(admin.id, new_id(), Decimal("1.00"), "nobody"))
    assert snapshot(store) == before


def test_a_long_client_address_is_cut_to_the_column(adjust, admin, alice) -> None:
    result = adjust(BalanceAdjustment(admin.id, alice.id, Decimal("1.00"), "r", "f" * 100))
    assert result.audit.client_address == "f" * 64


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.decimals(min_value=-300, max_value=300, places=2, allow_nan=False).filter(bool),
        max_size=25,
    )
)
def test_adjustments_never_overdraw_and_keep_the_ledger_whole(amounts) -> None:
    store = MemoryStore()
    clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))
    admin = create(store, clock, "admin", is_superuser=True)
    alice = create(store, clock, "alice")
    adjust = AdjustBalance(store.unit_of_work, clock)
    expected = Decimal("0.00")
    for amount in amounts:
        if expected + amount < 0:
            with pytest.raises(InsufficientBalance):
                adjust(BalanceAdjustment(admin.id, alice.id, amount, "property"))
        else:
            adjust(BalanceAdjustment(admin.id, alice.id, amount, "property"))
            expected += amount
    assert GetBalance(store.unit_of_work)(alice.id) == expected
    assert CheckLedger(store.unit_of_work)().ok
    with store.unit_of_work() as uow:
        page = uow.audit.list_entries(limit=100, offset=0)
        ledger = uow.ledger.list_for_user(alice.id, limit=100, offset=0)
    # Exactly one audit entry for every adjustment that happened, and none for refusals.
    assert page.total == ledger.total
    assert {e.reference_id for e in ledger.items} == {str(a.id) for a in page.items}


# Account and role changes


@pytest.mark.parametrize(
    ("use_case", "field", "off", "on"),
    [
        (SetUserActive, "is_active", AuditAction.USER_DEACTIVATED, AuditAction.USER_ACTIVATED),
        (
            SetSuperuser,
            "is_superuser",
            AuditAction.SUPERUSER_REVOKED,
            AuditAction.SUPERUSER_GRANTED,
        ),
    ],
)
def test_flag_changes_are_saved_and_audited(store, clock, admin, alice, use_case, field, off, on):
    change = use_case(store.unit_of_work, clock)
    start = getattr(alice, field)
    first = change(AccountChange(admin.id, alice.id, not start, "198.51.100.1"))
    assert getattr(first, field) is (not start)
    again = change(AccountChange(admin.id, alice.id, start))
    assert getattr(again, field) is start
    show = ShowUser(store.unit_of_work)
    assert getattr(show(UserLookup(admin.id, alice.id)), field) is start

    entries = ListAuditLog(store.unit_of_work)(AuditQuery(admin.id)).items
    assert [e.action for e in entries] == ([on, off] if start else [off, on])
    assert entries[0].details == {"field": field, "before": not start, "after": start}
    assert entries[1].client_address == "198.51.100.1"
    assert all(e.target_id == str(alice.id) and e.actor_id == admin.id for e in entries)


def test_operators_cannot_lock_themselves_out(store, clock, admin) -> None:
    before = snapshot(store)
    with pytest.raises(ActionRefused, match="deactivate your own"):
        SetUserActive(store.unit_of_work, clock)(AccountChange(admin.id, admin.id, False))
    with pytest.raises(ActionRefused, match="your own superuser"):
        SetSuperuser(store.unit_of_work, clock)(AccountChange(admin.id, admin.id, False))
    assert snapshot(store) == before


def test_flag_changes_need_a_superuser_and_a_real_target(store, clock, admin, alice) -> None:
    with pytest.raises(PermissionDenied):
        SetSuperuser(store.unit_of_work, clock)(AccountChange(alice.id, alice.id, True))
    with pytest.raises(UserNotFound):
        SetUserActive(store.unit_of_work, clock)(AccountChange(admin.id, new_id(), False))
    with pytest.raises(UserNotFound):
        ShowUser(store.unit_of_work)(UserLookup(admin.id, new_id()))


def test_a_deactivated_superuser_loses_operator_rights_at_once(store, clock, admin) -> None:
    other = create(store, clock, "other", is_superuser=True)
    SetUserActive(store.unit_of_work, clock)(AccountChange(admin.id, other.id, False))
    with pytest.raises(AccountDisabled):
        ListUsers(store.unit_of_work)(UserQuery(other.id))


# Listing


def test_list_users_searches_filters_and_pages(store, clock, admin) -> None:
    for name in ["alice", "Alina", "bob", "carol_x"]:
        create(store, clock, name)
    SetUserActive(store.unit_of_work, clock)(
        AccountChange(admin.id, create(store, clock, "alfred").id, False)
    )
    list_users = ListUsers(store.unit_of_work)

    def names(**query) -> list[str]:
        return [u.username for u in list_users(UserQuery(admin.id, **query)).items]

    assert names() == ["alfred", "carol_x", "bob", "Alina", "alice", "admin"]
    assert names(search="  AL ") == ["alfred", "Alina", "alice"]
    assert names(search="EXAMPLE.com", limit=2, offset=1) == ["carol_x", "bob"]
    assert names(search="al", is_active=True) == ["Alina", "alice"]
    assert names(is_superuser=True) == ["admin"]
    assert names(search="nobody") == []
    assert names(search="   ") == names()
    assert list_users(UserQuery(admin.id, search="al")).total == 3
    for bad in [
        UserQuery(admin.id, search="x" * 255),
        UserQuery(admin.id, search="\x00"),
        UserQuery(admin.id, limit=0),
        UserQuery(admin.id, offset=-1),
    ]:
        with pytest.raises(InvalidInput):
            list_users(bad)
    with pytest.raises(PermissionDenied):
        list_users(UserQuery(new_id()))


def test_audit_log_lists_newest_first_with_filters(store, clock, admin, alice) -> None:
    adjust = AdjustBalance(store.unit_of_work, clock)
    bob = create(store, clock, "bob")
    adjust(BalanceAdjustment(admin.id, alice.id, Decimal("5.00"), "one"))
    clock.advance(timedelta(seconds=1))
    adjust(BalanceAdjustment(admin.id, bob.id, Decimal("6.00"), "two"))
    clock.advance(timedelta(seconds=1))
    SetUserActive(store.unit_of_work, clock)(AccountChange(admin.id, bob.id, False))
    log = ListAuditLog(store.unit_of_work)

    def actions(**query) -> list[AuditAction]:
        return [e.action for e in log(AuditQuery(admin.id, **query)).items]

    adjusted, deactivated = AuditAction.BALANCE_ADJUSTED, AuditAction.USER_DEACTIVATED
    assert actions() == [deactivated, adjusted, adjusted]
    assert actions(action=adjusted) == [adjusted, adjusted]
    assert actions(target_id=str(bob.id)) == [deactivated, adjusted]
    assert actions(limit=1, offset=1) == [adjusted]
    assert log(AuditQuery(admin.id, limit=1)).total == 3
    with pytest.raises(PermissionDenied):
        log(AuditQuery(alice.id))
    with pytest.raises(InvalidInput):
        log(AuditQuery(admin.id, target_id="\x00"))


def test_wallet_reads_list_newest_first_and_filter_by_type(store, clock, admin, alice) -> None:
    adjust = AdjustBalance(store.unit_of_work, clock)
    for amount in ["5.00", "-2.00", "7.00"]:
        clock.advance(timedelta(seconds=1))
        adjust(BalanceAdjustment(admin.id, alice.id, Decimal(amount), "r"))
    history = ListTransactions(store.unit_of_work)
    page = history(TransactionQuery(alice.id, limit=2))
    assert [e.amount for e in page.items] == [Decimal("7.00"), Decimal("-2.00")]
    assert page.total == 3
    assert history(TransactionQuery(alice.id, transaction_type=TransactionType.DEPOSIT)).total == 0
    assert GetBalance(store.unit_of_work)(alice.id) == Decimal("10.00")
    with pytest.raises(InvalidInput):
        history(TransactionQuery(alice.id, limit=101))
    with pytest.raises(UserNotFound):
        GetBalance(store.unit_of_work)(new_id())
