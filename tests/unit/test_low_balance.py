"""The low-balance alert: one `balance.low` event for the debit that crosses below the line."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import pytest

from zenzefi_core.adapters.memory import MemoryStore
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType
from zenzefi_core.services.wallet import (
    DEFAULT_LOW_BALANCE_THRESHOLD,
    CreditWallet,
    DebitWallet,
    WalletChange,
    crossed_below,
)
from zenzefi_core.settings import Settings

if TYPE_CHECKING:
    from tests.conftest import UserMaker


def low_balance_events(store: MemoryStore) -> list[dict]:
    with store.unit_of_work() as uow:
        return [e.payload for e in uow.outbox.pending(limit=100) if e.event_type == "balance.low"]


def change(user_id, amount: str, kind: TransactionType = TransactionType.ADJUSTMENT):
    return WalletChange(
        user_id=user_id,
        amount=Decimal(amount),
        transaction_type=kind,
        description="correction",
        reference_type="test",
        reference_id="1",
    )


@pytest.mark.parametrize(
    ("before", "after", "crossed"),
    [
        ("10.00", "9.99", True),
        ("10.01", "10.00", False),
        ("9.99", "5.00", False),
        ("50", "0", True),
        ("5.00", "12.00", False),
    ],
)
def test_crossing_below_the_line(before: str, after: str, crossed: bool) -> None:
    threshold = Decimal("10.00")
    assert crossed_below(Decimal(before), Decimal(after), threshold) is crossed


def test_the_default_line_is_the_settings_default() -> None:
    assert Settings().low_balance_threshold == DEFAULT_LOW_BALANCE_THRESHOLD == Decimal("10.00")


def test_every_debit_is_watched_once_per_crossing(clock: FixedClock, make_user: UserMaker) -> None:
    """Not only purchases: any debit through the wallet, an operator's included."""
    store = MemoryStore()
    alice = make_user(store.unit_of_work, balance=Decimal("25.00"))
    debit = DebitWallet(store.unit_of_work, clock)
    debit(change(alice.id, "6.00"))  # 19.00
    debit(change(alice.id, "6.00"))  # 13.00
    assert low_balance_events(store) == []
    entry = debit(change(alice.id, "6.00"))  # 7.00: crosses
    debit(change(alice.id, "6.00"))  # 1.00: already below
    assert low_balance_events(store) == [
        {
            "user_id": str(alice.id),
            "balance": "7.00",
            "threshold": "10.00",
            "transaction_id": str(entry.id),
        }
    ]
    CreditWallet(store.unit_of_work, clock)(change(alice.id, "20.00", TransactionType.DEPOSIT))
    debit(change(alice.id, "15.00"))  # 21.00 -> 6.00: crosses again
    assert [e["balance"] for e in low_balance_events(store)] == ["7.00", "6.00"]


def test_the_line_can_be_configured(clock: FixedClock, make_user: UserMaker) -> None:
    store = MemoryStore()
    alice = make_user(store.unit_of_work, balance=Decimal("25.00"))
    DebitWallet(store.unit_of_work, clock, low_balance_threshold=Decimal("20.00"))(
        change(alice.id, "6.00")
    )
    assert [e["threshold"] for e in low_balance_events(store)] == ["20.00"]
