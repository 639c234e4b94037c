from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from zenzefi_core.domain.tokens import TokenScope
from zenzefi_core.money import quantize


@dataclass(frozen=True, slots=True)
class TokenBundle:
    """A catalogue offer: `token_count` tokens of one duration and scope at a discount.

    `base_price` and `total_price` are derived from the price table and the discount when the
    bundle is created or changed (see `pricing.price_bundle`); nobody types them in.
    """

    id: UUID
    name: str
    description: str | None
    token_count: int
    duration_hours: int
    scope: TokenScope
    discount_percent: Decimal
    base_price: Decimal
    total_price: Decimal
    is_active: bool
    created_at: datetime

    @property
    def savings(self) -> Decimal:
        return self.base_price - self.total_price

    @property
    def price_per_token(self) -> Decimal:
        """For display; the tokens themselves split the total exactly (`pricing.split_price`)."""
        return quantize(self.total_price / self.token_count)


@dataclass(frozen=True, slots=True)
class BundlePurchase:
    """One purchase of a bundle: one ledger entry, `token_count` tokens.

    Name, size and price are copied from the bundle at purchase time, so a later change to the
    catalogue never rewrites what someone bought.
    """

    id: UUID
    user_id: UUID
    bundle_id: UUID
    bundle_name: str
    token_count: int
    duration_hours: int
    scope: TokenScope
    total_price: Decimal
    created_at: datetime
