"""The installed `zenzefi` command, run as a separate process on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, func, select, update

from tests.conftest import uow_factory_for
from tests.shop import open_account
from zenzefi_core.adapters.sqlalchemy import current_revision, make_engine
from zenzefi_core.adapters.sqlalchemy.migrate import alembic_config
from zenzefi_core.adapters.sqlalchemy.tables import users
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType
from zenzefi_core.domain.tokens import TokenScope
from zenzefi_core.services.tokens import issue_token
from zenzefi_core.services.wallet import post_entry

ZENZEFI = Path(sys.executable).parent / "zenzefi"
ADMIN = ["admin", "create", "--email", "a@example.com", "--username", "admin"]


@pytest.fixture
def database(blank_database_url: str, tmp_path: Path) -> Iterator[tuple[dict[str, str], Engine]]:
    """The environment the command runs with, and an engine on the same database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZENZEFI_")}
    env["ZENZEFI_DATA_DIR"] = str(tmp_path / "data")
    if blank_database_url.startswith("sqlite"):
        # The embedded default: no URL, a SQLite file in the data folder.
        url = f"sqlite:///{tmp_path / 'data' / 'zenzefi.db'}"
    else:
        url = env["ZENZEFI_DATABASE_URL"] = blank_database_url
    engine = make_engine(url)
    yield env, engine
    engine.dispose()


def zenzefi(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    assert ZENZEFI.exists(), f"the console script is not installed at {ZENZEFI}"
    return subprocess.run(  # noqa: S603 - a fixed executable and arguments
        [str(ZENZEFI), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def head(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def test_migrate_admin_and_check_ledger(
    database: tuple[dict[str, str], Engine], tmp_path: Path
) -> None:
    env, engine = database

    migrated = zenzefi(env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.startswith("Database migrated: ")
    assert current_revision(engine) == head(engine)
    if "ZENZEFI_DATABASE_URL" not in env:
        assert (tmp_path / "data" / "zenzefi.db").is_file()

    created = zenzefi(env, *ADMIN, "--password", "Secret123!")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("Created superuser: admin <a@example.com> (id ")
    with engine.connect() as connection:
        row = connection.execute(select(users)).one()
    assert (row.email, row.username, row.is_superuser, row.is_active) == (
        "a@example.com",
        "admin",
        True,
        True,
    )
    assert row.password_hash.startswith("$argon2id$")
    assert str(row.id) in created.stdout

    # The same email again: promoted (already is), nothing created, the password untouched.
    with engine.begin() as connection:
        connection.execute(update(users).values(is_superuser=False, is_active=False))
    promoted = zenzefi(env, *ADMIN, "--password", "Different456!")
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.startswith("Promoted existing user to superuser: admin <a@example.com>")
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(users)).scalar_one() == 1
        again = connection.execute(select(users)).one()
    assert (again.is_superuser, again.is_active) == (True, True)
    assert again.password_hash == row.password_hash

    ok = zenzefi(env, "check-ledger")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip() == "Ledger OK: 1 wallet(s) checked, no discrepancies."

    with engine.begin() as connection:
        connection.execute(update(users).values(balance=Decimal("5.00")))
    broken = zenzefi(env, "check-ledger")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert broken.stdout.splitlines() == [
        "Ledger check FAILED: 1 of 1 wallet(s) break an invariant.",
        f"  user {row.id} (admin): balance 5.00 != ledger total 0.00 (difference +5.00)",
    ]


def test_admin_create_refuses_bad_input_with_exit_code_2(
    database: tuple[dict[str, str], Engine],
) -> None:
    env, engine = database
    short = zenzefi(env, *ADMIN, "--password", "short")
    assert short.returncode == 2
    assert short.stderr.strip() == "error: password must be at least 8 bytes"
    assert "Traceback" not in short.stderr

    assert zenzefi(env, *ADMIN, "--password", "Secret123!").returncode == 0
    taken = zenzefi(
        env,
        "admin",
        "create",
        "--email",
        "b@example.com",
        "--username",
        "ADMIN",
        "--password",
        "Secret123!",
    )
    assert taken.returncode == 2
    assert taken.stderr.strip() == "error: A user with this username already exists"
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(users)).scalar_one() == 1


def test_check_ledger_fails_on_a_bonus_paid_for_a_refunded_purchase(
    database: tuple[dict[str, str], Engine],
) -> None:
    """Rows written straight into the store, as the farming loop of issue 13 left them on older
    databases: every wallet balances, yet a bonus stayed paid for a purchase that was undone."""
    env, engine = database
    assert zenzefi(env, "migrate").returncode == 0
    clock = FixedClock(datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
    uow = uow_factory_for(engine)
    referrer = open_account(uow, clock, "farmer_a")
    referee = open_account(uow, clock, "farmer_b", balance="300.00", referrer=referrer)
    with uow() as unit:
        token = issue_token(
            user_id=referee.id,
            duration_hours=720,
            scope=TokenScope.FULL,
            price_paid=Decimal("300.00"),
            created_at=clock.now(),
        ).token
        unit.tokens.add_all([token])
        for user, amount, kind in [
            (referee, "-300.00", TransactionType.PURCHASE),
            (referrer, "30.00", TransactionType.REFERRAL_BONUS),
            (referee, "300.00", TransactionType.REFUND),
        ]:
            post_entry(
                unit,
                clock,
                user_id=user.id,
                amount=Decimal(amount),
                transaction_type=kind,
                description="written directly",
                reference_type="token",
                reference_id=str(token.id),
            )
        assert unit.tokens.revoke(token.id, clock.now())
        unit.commit()

    broken = zenzefi(env, "check-ledger")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    lines = broken.stdout.splitlines()
    assert lines[0] == (
        "Ledger check FAILED: 0 of 2 wallet(s) break an invariant. Money supply: 1 problem(s)."
    )
    assert lines[1] == (
        f"  user {referrer.id}: net referral bonuses of 30.00 ZNC on farmer_b's purchases, but "
        "10 % of what farmer_b bought and kept allows 0.00 (over by 30.00)"
    )
    # The deposit names a cause outside the product's records, so it is counted, not traced.
    assert lines[2:] == ["1 entry(ies) name causes outside Zenzefi's records and were not traced."]

    # The referrer gives the bonus back (an operator's debit would too): the supply adds up.
    with uow() as unit:
        post_entry(
            unit,
            clock,
            user_id=referrer.id,
            amount=Decimal("-30.00"),
            transaction_type=TransactionType.REFERRAL_CLAWBACK,
            description="written directly",
            reference_type="token",
            reference_id=str(token.id),
        )
        unit.commit()
    fixed = zenzefi(env, "check-ledger")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert fixed.stdout.startswith("Ledger OK: 2 wallet(s) checked, no discrepancies.")
