"""The domain's entities: plain frozen dataclasses, free of any persistence concern."""

from zenzefi_core.domain.audit import AuditAction, AuditEntry
from zenzefi_core.domain.idempotency import IdempotencyRecord
from zenzefi_core.domain.ledger import LedgerEntry, TransactionType
from zenzefi_core.domain.outbox import OutboxEvent
from zenzefi_core.domain.payments import PaymentIntent, PaymentStatus, ProviderEvent
from zenzefi_core.domain.users import User

__all__ = [
    "AuditAction",
    "AuditEntry",
    "IdempotencyRecord",
    "LedgerEntry",
    "OutboxEvent",
    "PaymentIntent",
    "PaymentStatus",
    "ProviderEvent",
    "TransactionType",
    "User",
]
