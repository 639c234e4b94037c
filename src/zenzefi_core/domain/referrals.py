from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from zenzefi_core.money import ZERO


@dataclass(frozen=True, slots=True)
class ReferralBonus:
    """The bonus one purchase earned the buyer's referrer, and how much of it was reversed.

    A refund reverses the refunded token's share of the bonus: `clawed_back` is what was
    actually taken back from the referrer, `shortfall` what could not be taken because the
    referrer's balance was too small (a balance never goes below zero). The purchase is named by
    `purchase_type` and `purchase_id`, as on its ledger entries.
    """

    id: UUID
    referrer_id: UUID
    referee_id: UUID
    purchase_type: str
    purchase_id: UUID
    purchase_amount: Decimal
    amount: Decimal
    transaction_id: UUID
    created_at: datetime
    clawed_back: Decimal = ZERO
    shortfall: Decimal = ZERO

    @property
    def outstanding(self) -> Decimal:
        """The part of the bonus no refund has reversed yet."""
        return self.amount - self.clawed_back - self.shortfall
