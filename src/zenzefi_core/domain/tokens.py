from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

#: Ledger `reference_type` of a single token's purchase, refund and referral entries.
TOKEN_REFERENCE = "token"  # noqa: S105 - a ledger cause, not a secret
#: Ledger `reference_type` of a bundle purchase and of the referral bonus it produced.
BUNDLE_PURCHASE_REFERENCE = "bundle_purchase"


class TokenScope(StrEnum):
    """What an access token opens: the whole server, or only the certificate pages."""

    FULL = "full"
    CERTIFICATES_ONLY = "certificates_only"


class TokenStatus(StrEnum):
    """Where a token is in its life, as its owner sees it."""

    #: Bought, never used: the clock has not started, and it can still be refunded.
    READY = "ready"
    #: In use: activated and not yet expired.
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class AccessToken:
    """Time-limited access to the diagnostic server, bought with ZNC.

    Only the SHA-256 of the secret is kept (`token_hash`); the secret itself is shown to the
    buyer once. The clock starts lazily: `activated_at` is set by the first proxied request and
    `expires_at = activated_at + duration_hours`. `price_paid` is what this token cost, a share
    of the bundle price for a bundle token, and exactly what a refund returns.
    """

    id: UUID
    user_id: UUID
    token_hash: str
    token_prefix: str
    duration_hours: int
    scope: TokenScope
    price_paid: Decimal
    created_at: datetime
    bundle_purchase_id: UUID | None = None
    activated_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def purchase_type(self) -> str:
        """The `reference_type` of the ledger entry that paid for this token."""
        return TOKEN_REFERENCE if self.bundle_purchase_id is None else BUNDLE_PURCHASE_REFERENCE

    @property
    def purchase_id(self) -> UUID:
        """The purchase that paid for this token: its bundle purchase, or the token itself."""
        return self.bundle_purchase_id or self.id

    def is_active_at(self, now: datetime) -> bool:
        """Usable now: not revoked, and either not started yet or not yet expired."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at

    def status_at(self, now: datetime) -> TokenStatus:
        if self.revoked_at is not None:
            return TokenStatus.REVOKED
        if self.expires_at is None:
            return TokenStatus.READY
        return TokenStatus.ACTIVE if now < self.expires_at else TokenStatus.EXPIRED

    def seconds_left_at(self, now: datetime) -> int:
        """Usable time left, in whole seconds: the full duration while the clock has not
        started, what remains of it once it has, and none for an expired or revoked token."""
        status = self.status_at(now)
        if status is TokenStatus.READY:
            return int(timedelta(hours=self.duration_hours).total_seconds())
        if status is TokenStatus.ACTIVE and self.expires_at is not None:
            return int((self.expires_at - now).total_seconds())
        return 0
