"""What a token's owner is shown of its life: ready, active, expired or revoked, and time left."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

from zenzefi_core.domain.tokens import AccessToken, TokenScope, TokenStatus

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
TOKEN = AccessToken(
    id=uuid4(),
    user_id=uuid4(),
    token_hash="h",
    token_prefix="p",
    duration_hours=24,
    scope=TokenScope.FULL,
    price_paid=Decimal("18.00"),
    created_at=NOW - timedelta(days=3),
)


def started(at: datetime) -> AccessToken:
    return dataclasses.replace(TOKEN, activated_at=at, expires_at=at + timedelta(hours=24))


def test_an_unused_token_is_ready_with_its_whole_duration() -> None:
    assert TOKEN.status_at(NOW) is TokenStatus.READY
    assert TOKEN.seconds_left_at(NOW) == 24 * 3600


def test_a_token_in_use_counts_down() -> None:
    token = started(NOW - timedelta(hours=1, seconds=30))
    assert token.status_at(NOW) is TokenStatus.ACTIVE
    assert token.seconds_left_at(NOW) == 23 * 3600 - 30
    assert token.is_active_at(NOW)


def test_a_token_past_its_end_is_expired() -> None:
    token = started(NOW - timedelta(hours=24))
    assert token.status_at(NOW) is TokenStatus.EXPIRED
    assert token.seconds_left_at(NOW) == 0
    assert not token.is_active_at(NOW)


def test_a_revoked_token_is_revoked_whatever_its_clock() -> None:
    for token in (TOKEN, started(NOW - timedelta(hours=1))):
        revoked = dataclasses.replace(token, revoked_at=NOW)
        assert revoked.status_at(NOW) is TokenStatus.REVOKED
        assert revoked.seconds_left_at(NOW) == 0
