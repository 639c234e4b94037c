"""Which status each domain error gets: the most specific class in the table wins."""

from __future__ import annotations

from decimal import Decimal

import pytest

from zenzefi_api.errors import status_for
from zenzefi_core.errors import (
    AccountDisabled,
    ActionRefused,
    AuthenticationFailed,
    BundleNotFound,
    Conflict,
    DomainError,
    DuplicateUser,
    IdempotencyConflict,
    InsufficientBalance,
    InvalidAmount,
    InvalidDuration,
    InvalidInput,
    InvalidReferralCode,
    InvalidScope,
    InvalidSignature,
    PaymentMismatch,
    PaymentNotFound,
    PermissionDenied,
    StorageUnavailable,
    TokenAlreadyActivated,
    TokenAlreadyRevoked,
    TokenNotFound,
    UserNotFound,
)


@pytest.fixture(autouse=True)
def ledger_stays_whole() -> None:
    """No app and no database here: the table alone is under test."""


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidInput("bad"), 422),
        (InvalidAmount("bad"), 422),
        (InvalidReferralCode(), 400),
        (InvalidDuration(5, (1, 24)), 400),
        (InvalidScope("root", ("full",)), 400),
        (TokenAlreadyActivated(), 400),
        (TokenAlreadyRevoked(), 400),
        (DuplicateUser("email"), 400),
        (ActionRefused("no"), 400),
        (PaymentMismatch("no"), 400),
        (DomainError("anything else"), 400),
        (AuthenticationFailed(), 401),
        (InvalidSignature(), 401),
        (InsufficientBalance(Decimal("2.00"), Decimal("1.00")), 402),
        (PermissionDenied("no"), 403),
        (AccountDisabled(), 403),
        (UserNotFound("x"), 404),
        (PaymentNotFound(), 404),
        (TokenNotFound(), 404),
        (BundleNotFound(), 404),
        (Conflict("clash"), 409),
        (IdempotencyConflict(), 409),
        (StorageUnavailable(), 503),
    ],
)
def test_status_for(error: DomainError, status: int) -> None:
    assert status_for(error) == status
