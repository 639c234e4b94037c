from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID


class TransactionType(StrEnum):
    """Why a balance changed. Credits are positive entries, debits negative."""

    DEPOSIT = "deposit"
    PURCHASE = "purchase"
    REFUND = "refund"
    REFERRAL_BONUS = "referral_bonus"
    REFERRAL_CLAWBACK = "referral_clawback"
    ADJUSTMENT = "adjustment"


#: Entry types that only ever add to a balance.
CREDIT_TYPES = frozenset(
    {
        TransactionType.DEPOSIT,
        TransactionType.REFUND,
        TransactionType.REFERRAL_BONUS,
    }
)
#: Entry types that only ever take from a balance.
DEBIT_TYPES = frozenset({TransactionType.PURCHASE, TransactionType.REFERRAL_CLAWBACK})


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One balance change. `amount` is signed; `balance_after` is the balance it left behind.

    Every entry names its cause (`reference_type`, `reference_id`): the payment, token, purchase
    or operator action that produced it, so no entry exists without a reason.
    """

    id: UUID
    user_id: UUID
    amount: Decimal
    balance_after: Decimal
    transaction_type: TransactionType
    description: str
    reference_type: str
    reference_id: str
    created_at: datetime
