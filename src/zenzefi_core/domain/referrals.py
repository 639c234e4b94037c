from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from zenzefi_core.money import ZERO


@dataclass(frozen=True, slots=True)
class ReferralBonus:
    """A bonus credited when its purchase was made, as the programme did before bonuses waited
    for a token's first use (`ReferralShare`). Only databases from that time hold these; a
    refund of one of its tokens still reverses the token's share of it.

    `clawed_back` is what refunds actually took back from the referrer, `shortfall` what they
    could not take because the referrer's balance was too small (a balance never goes below
    zero). The purchase is named by `purchase_type` and `purchase_id`, as on its ledger entries.
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


class ShareState(StrEnum):
    """Where one token's share of a referral bonus is."""

    #: The token is bought and unused: it can still be refunded, so nothing is paid yet.
    PENDING = "pending"
    #: The token was used, so its purchase is final: the share was paid to the referrer.
    CREDITED = "credited"
    #: The token was refunded unused: its purchase is undone, so the share never pays.
    CANCELLED = "cancelled"
    #: The token was used, but nothing could be paid: the referrer's account was deactivated,
    #: or the monthly cap was already reached.
    FORFEITED = "forfeited"


@dataclass(frozen=True, slots=True)
class ReferralShare:
    """One token's share of the bonus its purchase earns the buyer's referrer.

    The bonus is worked out when the purchase is made and split over its tokens the way the
    price is, but paid only when each token is first used: until then the token can be refunded,
    and a bonus paid for a purchase that is later undone would be money nobody paid for.
    `credited` is what was paid (less than `amount` when the monthly cap cut it).
    """

    token_id: UUID
    referrer_id: UUID
    referee_id: UUID
    purchase_type: str
    purchase_id: UUID
    amount: Decimal
    created_at: datetime
    state: ShareState = ShareState.PENDING
    credited: Decimal = ZERO
    transaction_id: UUID | None = None
    settled_at: datetime | None = None
