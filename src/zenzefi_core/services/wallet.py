"""The wallet: every balance change is a ledger entry written in the same transaction.

`post_entry` is the one place a balance changes. Use cases that move money as part of something
larger (a token purchase, a refund) call it inside their own unit of work; `CreditWallet` and
`DebitWallet` are the stand-alone use cases for when moving money is the whole job.

Because every debit goes through `post_entry`, so does the low-balance alert: the debit that takes
a balance from at or above the threshold to below it writes one `balance.low` event, and later
debits below the line write none until a credit lifts the balance above it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from zenzefi_core.domain import LedgerEntry, TransactionType
from zenzefi_core.domain.ledger import CREDIT_TYPES, DEBIT_TYPES
from zenzefi_core.errors import InsufficientBalance, InvalidAmount, InvalidInput, UserNotFound
from zenzefi_core.ids import new_id
from zenzefi_core.money import ZERO, format_amount, quantize
from zenzefi_core.ports import Clock, UnitOfWork, UnitOfWorkFactory
from zenzefi_core.services.events import record_event

#: The product documents' low-balance line; `Settings.low_balance_threshold` overrides it.
DEFAULT_LOW_BALANCE_THRESHOLD = Decimal("10.00")


def crossed_below(before: Decimal, after: Decimal, threshold: Decimal) -> bool:
    """True only for the change that takes a balance from at or above `threshold` to below it."""
    return after < threshold <= before


def post_entry(
    uow: UnitOfWork,
    clock: Clock,
    *,
    user_id: UUID,
    amount: Decimal,
    transaction_type: TransactionType,
    description: str,
    reference_type: str,
    reference_id: str,
    low_balance_threshold: Decimal = DEFAULT_LOW_BALANCE_THRESHOLD,
) -> LedgerEntry:
    """Change a balance by a signed `amount` and record why, inside the caller's unit of work.

    Raises `InsufficientBalance` (and changes nothing) when a negative amount exceeds the balance,
    `UserNotFound` for an unknown user, and `InvalidAmount` when the sign does not fit the type.
    A debit that crosses below `low_balance_threshold` also records a `balance.low` event.
    """
    if amount != quantize(amount):
        raise InvalidAmount("amount must have at most two decimal places")
    # Written with exactly two places (5 -> 5.00), as the SQL adapter reads every amount back.
    amount = quantize(amount)
    if amount == ZERO:
        raise InvalidAmount("a ledger entry must move money")
    if transaction_type in CREDIT_TYPES and amount < ZERO:
        raise InvalidAmount(f"a {transaction_type} entry must be positive")
    if transaction_type in DEBIT_TYPES and amount > ZERO:
        raise InvalidAmount(f"a {transaction_type} entry must be negative")
    if not reference_type or not reference_id:
        raise InvalidInput("a ledger entry must name its cause")

    new_balance = uow.users.change_balance(user_id, amount)
    if new_balance is None:
        user = uow.users.get(user_id)
        if user is None:
            raise UserNotFound(user_id)
        raise InsufficientBalance(required=-amount, available=user.balance)

    entry = LedgerEntry(
        id=new_id(),
        user_id=user_id,
        amount=amount,
        balance_after=new_balance,
        transaction_type=transaction_type,
        description=description,
        reference_type=reference_type,
        reference_id=reference_id,
        created_at=clock.now(),
    )
    uow.ledger.add(entry)
    # The balance before is exact: the conditional update returned the balance it produced.
    if amount < ZERO and crossed_below(new_balance - amount, new_balance, low_balance_threshold):
        record_event(
            uow,
            clock,
            "balance.low",
            {
                "user_id": str(user_id),
                "balance": format_amount(new_balance),
                "threshold": format_amount(low_balance_threshold),
                "transaction_id": str(entry.id),
            },
            user_id=user_id,
        )
    return entry


@dataclass(frozen=True, slots=True)
class WalletChange:
    """What a request asks the wallet to do. `amount` is positive; the use case sets the sign."""

    user_id: UUID
    amount: Decimal
    transaction_type: TransactionType
    description: str
    reference_type: str
    reference_id: str


class _WalletUseCase:
    allowed: frozenset[TransactionType]
    sign: int

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        low_balance_threshold: Decimal = DEFAULT_LOW_BALANCE_THRESHOLD,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._low_balance_threshold = low_balance_threshold

    def __call__(self, change: WalletChange) -> LedgerEntry:
        if change.transaction_type not in self.allowed:
            raise InvalidInput(
                f"{type(self).__name__} cannot record a {change.transaction_type} entry"
            )
        if change.amount <= ZERO:
            raise InvalidAmount("amount must be greater than zero")
        with self._uow_factory() as uow:
            entry = post_entry(
                uow,
                self._clock,
                user_id=change.user_id,
                amount=self.sign * change.amount,
                transaction_type=change.transaction_type,
                description=change.description,
                reference_type=change.reference_type,
                reference_id=change.reference_id,
                low_balance_threshold=self._low_balance_threshold,
            )
            uow.commit()
        return entry


class CreditWallet(_WalletUseCase):
    """Add money: a deposit, a refund, a referral bonus or a positive adjustment."""

    allowed = CREDIT_TYPES | {TransactionType.ADJUSTMENT}
    sign = 1


class DebitWallet(_WalletUseCase):
    """Take money: a purchase, a referral clawback or a negative adjustment. Never below zero."""

    allowed = DEBIT_TYPES | {TransactionType.ADJUSTMENT}
    sign = -1
