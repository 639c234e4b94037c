"""Concurrent debits on the real engines: the conditional update never lets a wallet overspend,
and concurrent credits and debits neither lose nor create money."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, TypeVar
from uuid import UUID

from sqlalchemy import Engine

from zenzefi_core.adapters.sqlalchemy import SqlAlchemyUnitOfWork
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import LedgerEntry, TransactionType
from zenzefi_core.errors import InsufficientBalance
from zenzefi_core.ports import UnitOfWorkFactory
from zenzefi_core.services.ledger_check import CheckLedger
from zenzefi_core.services.wallet import CreditWallet, DebitWallet, WalletChange

if TYPE_CHECKING:
    from tests.conftest import UserMaker

R = TypeVar("R")


def run_together(calls: list[Callable[[], R]]) -> list[R | BaseException]:
    """Start every call at the same moment, one thread each; return results or exceptions."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[R | BaseException] = [RuntimeError("did not run")] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = calls[index]()
        except BaseException as error:
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def change(user_id: UUID, amount: str, kind: TransactionType, n: int) -> WalletChange:
    return WalletChange(
        user_id=user_id,
        amount=Decimal(amount),
        transaction_type=kind,
        description=f"concurrent {kind} {n}",
        reference_type="test",
        reference_id=f"{kind}-{n}",
    )


def wallet_state(uow_factory: UnitOfWorkFactory, user_id: UUID) -> tuple[Decimal, Decimal]:
    with uow_factory() as uow:
        user = uow.users.get(user_id)
        assert user is not None
        return user.balance, uow.ledger.total_for_user(user_id)


def entries_of(
    uow_factory: UnitOfWorkFactory, user_id: UUID, kind: TransactionType | None = None
) -> list[LedgerEntry]:
    with uow_factory() as uow:
        page = uow.ledger.list_for_user(user_id, limit=1000, offset=0, transaction_type=kind)
    assert page.total == len(page.items)
    return list(page.items)


def test_fifty_simultaneous_debits_on_a_wallet_that_affords_twenty(
    engine: Engine, clock: FixedClock, make_user: UserMaker
) -> None:
    uow_factory = partial(SqlAlchemyUnitOfWork, engine)
    user = make_user(uow_factory, balance=Decimal("50.00"))
    debit = DebitWallet(uow_factory, clock)

    outcomes = run_together(
        [partial(debit, change(user.id, "2.50", TransactionType.PURCHASE, n)) for n in range(50)]
    )

    succeeded = [o for o in outcomes if isinstance(o, LedgerEntry)]
    refused = [o for o in outcomes if isinstance(o, InsufficientBalance)]
    unexpected = [o for o in outcomes if not isinstance(o, LedgerEntry | InsufficientBalance)]
    assert unexpected == []
    assert len(succeeded) == 20
    assert len(refused) == 30
    # A debit is refused only once the wallet is empty, and says so.
    assert {str(error) for error in refused} == {
        "Insufficient balance. Required: 2.50 ZNC, Available: 0.00 ZNC"
    }
    # Each successful debit saw a different balance: they were applied one after another.
    assert sorted(entry.balance_after for entry in succeeded) == [
        Decimal("2.50") * k for k in range(20)
    ]

    balance, ledger_total = wallet_state(uow_factory, user.id)
    assert str(balance) == "0.00"
    assert ledger_total == balance
    purchases = entries_of(uow_factory, user.id, TransactionType.PURCHASE)
    assert len(purchases) == 20
    assert {entry.id for entry in purchases} == {entry.id for entry in succeeded}
    report = CheckLedger(uow_factory)()
    assert report.ok, report.render()


def test_concurrent_credits_and_debits_neither_lose_nor_create_money(
    engine: Engine, clock: FixedClock, make_user: UserMaker
) -> None:
    uow_factory = partial(SqlAlchemyUnitOfWork, engine)
    payer = make_user(uow_factory, "payer", balance=Decimal("10.00"))
    bystander = make_user(uow_factory, "bystander", balance=Decimal("5.00"))
    credit = CreditWallet(uow_factory, clock)
    debit = DebitWallet(uow_factory, clock)

    calls: list[Callable[[], LedgerEntry]] = []
    for n in range(20):
        calls.append(partial(credit, change(payer.id, "1.00", TransactionType.DEPOSIT, n)))
        calls.append(partial(debit, change(payer.id, "1.50", TransactionType.PURCHASE, n)))
        calls.append(partial(debit, change(payer.id, "0.35", TransactionType.ADJUSTMENT, n)))
    # Another wallet, debited at the same time, that can afford all of its debits.
    calls += [
        partial(debit, change(bystander.id, "1.00", TransactionType.PURCHASE, n)) for n in range(5)
    ]
    outcomes = run_together(calls)

    unexpected = [o for o in outcomes if not isinstance(o, LedgerEntry | InsufficientBalance)]
    assert unexpected == []
    entries = [o for o in outcomes if isinstance(o, LedgerEntry)]
    credits = [e for e in entries if e.user_id == payer.id and e.amount > 0]
    debits = [e for e in entries if e.user_id == payer.id and e.amount < 0]
    assert len(credits) == 20  # a credit can never be refused
    assert all(isinstance(o, LedgerEntry) for o in outcomes[-5:])  # the bystander could afford it

    expected = Decimal("10.00") + sum(e.amount for e in credits) + sum(e.amount for e in debits)
    balance, ledger_total = wallet_state(uow_factory, payer.id)
    assert balance == expected
    assert ledger_total == balance
    assert balance >= 0
    recorded = entries_of(uow_factory, payer.id)
    assert len(recorded) == 1 + len(credits) + len(debits)
    assert {e.id for e in recorded} >= {e.id for e in credits + debits}
    # The entries form one serial history from 0.00 to the final balance: every balance an
    # entry started from is one another entry left behind. A lost update (two changes applied
    # to the same starting balance) would break this.
    started_from = Counter(e.balance_after - e.amount for e in recorded)
    left_behind = Counter(e.balance_after for e in recorded)
    assert started_from + Counter({balance: 1}) == left_behind + Counter({Decimal("0.00"): 1})
    assert all(e.balance_after >= 0 for e in recorded)

    assert wallet_state(uow_factory, bystander.id) == (Decimal("0.00"), Decimal("0.00"))
    report = CheckLedger(uow_factory)()
    assert report.ok, report.render()
    assert report.users_checked == 2
