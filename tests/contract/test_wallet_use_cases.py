"""The wallet use cases give the same results on memory, SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING
from uuid import UUID

import pytest

from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType
from zenzefi_core.errors import InsufficientBalance, UserNotFound
from zenzefi_core.ids import new_id
from zenzefi_core.ports import UnitOfWorkFactory
from zenzefi_core.services.ledger_check import CheckLedger
from zenzefi_core.services.wallet import CreditWallet, DebitWallet, WalletChange

if TYPE_CHECKING:
    from tests.conftest import UserMaker

T = TransactionType


def change(user_id: UUID, amount: str, kind: TransactionType) -> WalletChange:
    return WalletChange(
        user_id=user_id,
        amount=Decimal(amount),
        transaction_type=kind,
        description=f"{kind} {amount}",
        reference_type="test",
        reference_id=f"{kind}-{amount}",
    )


def test_a_scenario_leaves_the_same_ledger_everywhere(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    user = make_user(uow_factory)
    credit, debit = CreditWallet(uow_factory, clock), DebitWallet(uow_factory, clock)

    credit(change(user.id, "5", T.DEPOSIT))
    credit(change(user.id, "0.1", T.REFERRAL_BONUS))
    debit(change(user.id, "2.6", T.PURCHASE))
    credit(change(user.id, "2.60", T.REFUND))
    debit(change(user.id, "0.10", T.REFERRAL_CLAWBACK))
    debit(change(user.id, "4.99", T.ADJUSTMENT))
    with pytest.raises(InsufficientBalance) as raised:
        debit(change(user.id, "0.02", T.PURCHASE))
    credit(change(user.id, "1000000", T.ADJUSTMENT))

    assert str(raised.value) == "Insufficient balance. Required: 0.02 ZNC, Available: 0.01 ZNC"
    with uow_factory() as uow:
        entries = uow.ledger.list_for_user(user.id, limit=100, offset=0).items
        stored = uow.users.get(user.id)
        total = uow.ledger.total_for_user(user.id)
    assert [
        (e.transaction_type.value, str(e.amount), str(e.balance_after)) for e in reversed(entries)
    ] == [
        ("deposit", "5.00", "5.00"),
        ("referral_bonus", "0.10", "5.10"),
        ("purchase", "-2.60", "2.50"),
        ("refund", "2.60", "5.10"),
        ("referral_clawback", "-0.10", "5.00"),
        ("adjustment", "-4.99", "0.01"),
        ("adjustment", "1000000.00", "1000000.01"),
    ]
    assert stored is not None
    assert str(stored.balance) == str(total) == "1000000.01"
    assert CheckLedger(uow_factory)().ok


def test_entries_returned_by_the_use_cases_match_what_is_stored(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    user = make_user(uow_factory, balance=Decimal("3.00"))
    returned = [
        CreditWallet(uow_factory, clock)(change(user.id, "7", T.DEPOSIT)),
        DebitWallet(uow_factory, clock)(change(user.id, "9.5", T.PURCHASE)),
    ]
    with uow_factory() as uow:
        stored = uow.ledger.list_for_user(user.id, limit=2, offset=0).items
    assert list(stored) == returned[::-1]
    assert [str(e.amount) for e in returned] == ["7.00", "-9.50"]


def test_a_refused_debit_changes_nothing(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker
) -> None:
    user = make_user(uow_factory, balance=Decimal("1.00"))
    with pytest.raises(InsufficientBalance, match=r"Required: 1\.01 ZNC, Available: 1\.00 ZNC$"):
        DebitWallet(uow_factory, clock)(change(user.id, "1.01", T.PURCHASE))
    with uow_factory() as uow:
        after = uow.users.get(user.id)
        page = uow.ledger.list_for_user(user.id, limit=10, offset=0)
    assert after == user
    assert page.total == 1


def test_an_unknown_wallet_is_not_found(uow_factory: UnitOfWorkFactory, clock: FixedClock) -> None:
    stranger = new_id()
    with pytest.raises(UserNotFound):
        CreditWallet(uow_factory, clock)(change(stranger, "1.00", T.DEPOSIT))
    with pytest.raises(UserNotFound):
        DebitWallet(uow_factory, clock)(change(stranger, "1.00", T.PURCHASE))
    with uow_factory() as uow:
        assert uow.ledger.list_for_user(stranger, limit=10, offset=0).total == 0
        assert uow.ledger.count_users() == 0
