from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID


class PaymentStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class PaymentIntent:
    """A top-up the user asked for. Money reaches the wallet only when the provider confirms.

    The status moves once, from pending to one final state; only `succeeded` credits, and the
    credit is a `deposit` ledger entry whose cause is this intent.
    """

    id: UUID
    user_id: UUID
    amount_znc: Decimal
    amount_rub: Decimal
    status: PaymentStatus
    provider: str
    payment_url: str
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """A provider callback already processed; its id makes a replay a no-op."""

    event_id: str
    payment_id: UUID
    status: PaymentStatus
    received_at: datetime
