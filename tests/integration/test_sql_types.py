"""The column types that keep the core's guarantees on both engines (SQLite has neither a time
zone type nor a decimal one)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import StatementError

from zenzefi_core.adapters.sqlalchemy.tables import users
from zenzefi_core.ids import new_id


def user_row(created_at: datetime, balance: Decimal = Decimal("0.00")) -> dict[str, object]:
    return {
        "id": new_id(),
        "email": "t@example.com",
        "username": "t",
        "username_lower": "t",
        "password_hash": "x",
        "referral_code": "TYPES0000000",
        "is_active": True,
        "is_superuser": False,
        "balance": balance,
        "created_at": created_at,
    }


def test_an_aware_datetime_in_any_zone_comes_back_as_the_same_instant_in_utc(
    engine: Engine,
) -> None:
    local = datetime(2026, 11, 26, 13, 30, 15, 123456, tzinfo=timezone(timedelta(hours=3)))
    with engine.begin() as connection:
        connection.execute(insert(users).values(**user_row(local)))
    with engine.connect() as connection:
        back = connection.execute(select(users.c.created_at)).scalar_one()
    assert back == local
    assert back.tzinfo is not None
    assert back.utcoffset() == timedelta(0)
    assert back == datetime(2026, 11, 26, 10, 30, 15, 123456, tzinfo=UTC)


def test_a_naive_datetime_is_refused(engine: Engine) -> None:
    naive = datetime(2026, 11, 26, 10, 0)  # noqa: DTZ001 - the point of the test
    with engine.begin() as connection, pytest.raises(StatementError, match="naive datetime"):
        connection.execute(insert(users).values(**user_row(naive)))
    with engine.connect() as connection:
        assert connection.execute(select(users.c.id)).first() is None


@pytest.mark.parametrize("amount", ["0.01", "0.10", "0.30", "1234567.89", "9999999999999.99"])
def test_money_comes_back_as_an_exact_two_place_decimal(engine: Engine, amount: str) -> None:
    with engine.begin() as connection:
        connection.execute(insert(users).values(**user_row(datetime.now(UTC), Decimal(amount))))
    with engine.connect() as connection:
        back = connection.execute(select(users.c.balance)).scalar_one()
    assert isinstance(back, Decimal)
    assert str(back) == amount
