"""Random sequences of wallet operations against a model, on memory, SQLite and PostgreSQL.

After every step: each balance equals the model's and the sum of the user's ledger entries,
no balance is negative, and `CheckLedger` finds nothing wrong.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING
from uuid import UUID

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType
from zenzefi_core.domain.ledger import CREDIT_TYPES, DEBIT_TYPES
from zenzefi_core.errors import InsufficientBalance, UserNotFound
from zenzefi_core.ids import new_id
from zenzefi_core.money import ZERO
from zenzefi_core.services.ledger_check import CheckLedger
from zenzefi_core.services.wallet import CreditWallet, DebitWallet, WalletChange

if TYPE_CHECKING:
    from tests.conftest import StoreMaker, UserMaker

USERS = ("alice", "bob")
AMOUNTS = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("500.00"), places=2)
CREDIT_KINDS = st.sampled_from(sorted(CREDIT_TYPES | {TransactionType.ADJUSTMENT}))
DEBIT_KINDS = st.sampled_from(sorted(DEBIT_TYPES | {TransactionType.ADJUSTMENT}))

SETTINGS = settings(
    max_examples=30,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_wallet_state_machine(store_maker: StoreMaker, make_user: UserMaker) -> None:
    class WalletMachine(RuleBasedStateMachine):
        """The model: a balance and an entry count per user."""

        def __init__(self) -> None:
            super().__init__()
            self.uow_factory = store_maker()
            self.clock = FixedClock(datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
            self.credit = CreditWallet(self.uow_factory, self.clock)
            self.debit = DebitWallet(self.uow_factory, self.clock)
            self.ids: dict[str, UUID] = {
                name: make_user(self.uow_factory, name).id for name in USERS
            }
            self.model = dict.fromkeys(USERS, ZERO)
            self.entries = dict.fromkeys(USERS, 0)
            self.step = 0

        def change(self, name: str, amount: Decimal, kind: TransactionType) -> WalletChange:
            self.step += 1
            self.clock.advance(timedelta(seconds=1))
            return WalletChange(
                user_id=self.ids[name],
                amount=amount,
                transaction_type=kind,
                description=f"step {self.step}",
                reference_type="test",
                reference_id=f"step-{self.step}",
            )

        def record(self, name: str, signed: Decimal) -> None:
            self.model[name] += signed
            self.entries[name] += 1

        def assert_refused(self, name: str, amount: Decimal, kind: TransactionType) -> None:
            available = self.model[name]
            with pytest.raises(InsufficientBalance) as raised:
                self.debit(self.change(name, amount, kind))
            assert str(raised.value) == (
                f"Insufficient balance. Required: {amount:.2f} ZNC, Available: {available:.2f} ZNC"
            )

        @rule(name=st.sampled_from(USERS), amount=AMOUNTS, kind=CREDIT_KINDS)
        def credit_money(self, name: str, amount: Decimal, kind: TransactionType) -> None:
            entry = self.credit(self.change(name, amount, kind))
            self.record(name, amount)
            assert entry.amount == amount
            assert entry.transaction_type is kind
            assert entry.balance_after == self.model[name]

        @rule(name=st.sampled_from(USERS), amount=AMOUNTS, kind=DEBIT_KINDS)
        def debit_money(self, name: str, amount: Decimal, kind: TransactionType) -> None:
            if amount > self.model[name]:
                self.assert_refused(name, amount, kind)
                return
            entry = self.debit(self.change(name, amount, kind))
            self.record(name, -amount)
            assert entry.amount == -amount
            assert entry.balance_after == self.model[name]

        @precondition(lambda self: any(self.model.values()))
        @rule(data=st.data(), kind=DEBIT_KINDS)
        def debit_everything(self, data: st.DataObject, kind: TransactionType) -> None:
            name = data.draw(st.sampled_from([n for n in USERS if self.model[n] > ZERO]))
            entry = self.debit(self.change(name, self.model[name], kind))
            self.record(name, -self.model[name])
            assert str(entry.balance_after) == "0.00"

        @rule(
            name=st.sampled_from(USERS),
            extra=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("10.00"), places=2),
            kind=DEBIT_KINDS,
        )
        def overdraw(self, name: str, extra: Decimal, kind: TransactionType) -> None:
            self.assert_refused(name, self.model[name] + extra, kind)

        @rule(amount=AMOUNTS, credit=st.booleans())
        def touch_an_unknown_wallet(self, amount: Decimal, credit: bool) -> None:
            use_case = self.credit if credit else self.debit
            change = self.change(USERS[0], amount, TransactionType.ADJUSTMENT)
            with pytest.raises(UserNotFound):
                use_case(dataclasses.replace(change, user_id=new_id()))

        @invariant()
        def balances_match_the_model_and_the_ledger(self) -> None:
            with self.uow_factory() as uow:
                for name, user_id in self.ids.items():
                    user = uow.users.get(user_id)
                    assert user is not None
                    assert user.balance == self.model[name]
                    assert user.balance >= ZERO
                    assert uow.ledger.total_for_user(user_id) == self.model[name]
                    page = uow.ledger.list_for_user(user_id, limit=1, offset=0)
                    assert page.total == self.entries[name]
                    if page.items:
                        assert page.items[0].balance_after == user.balance

        @invariant()
        def the_ledger_check_passes(self) -> None:
            report = CheckLedger(self.uow_factory)()
            assert report.ok, report.render()
            assert report.users_checked == len(USERS)

    run_state_machine_as_test(WalletMachine, settings=SETTINGS)
