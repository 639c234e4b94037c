"""The configurable rules of the shop, read once from `Settings` and handed to the use cases."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from zenzefi_core.pricing import PriceTable
from zenzefi_core.referrals import ReferralPolicy
from zenzefi_core.services.wallet import DEFAULT_LOW_BALANCE_THRESHOLD
from zenzefi_core.settings import Settings


@dataclass(frozen=True, slots=True)
class ShopPolicy:
    """Prices, the referral programme and the low-balance line; the defaults are the product
    documents'."""

    prices: PriceTable = field(default_factory=PriceTable)
    referrals: ReferralPolicy = field(default_factory=ReferralPolicy)
    low_balance_threshold: Decimal = DEFAULT_LOW_BALANCE_THRESHOLD

    @classmethod
    def from_settings(cls, settings: Settings) -> ShopPolicy:
        referral = settings.referral
        return cls(
            prices=PriceTable(settings.tokens.prices),
            referrals=ReferralPolicy(
                percent=referral.percent,
                minimum_purchase=referral.minimum_purchase,
                first_purchase_only=referral.first_purchase_only,
                monthly_cap=referral.monthly_cap,
            ),
            low_balance_threshold=settings.low_balance_threshold,
        )
