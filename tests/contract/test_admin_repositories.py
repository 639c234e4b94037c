"""The repository methods behind the operator and referral views, identical on memory, SQLite
and PostgreSQL: user search, referral lists and earnings, and the audit log."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from zenzefi_core.adapters.sqlalchemy import SqlAlchemyUnitOfWork, make_engine
from zenzefi_core.domain import AuditAction, AuditEntry, TransactionType, User
from zenzefi_core.errors import StorageUnavailable
from zenzefi_core.ids import new_id
from zenzefi_core.ports import UnitOfWorkFactory
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.accounts import add_user
from zenzefi_core.services.wallet import post_entry

HASHER = fast_password_hasher()


def create(uow_factory: UnitOfWorkFactory, clock, username: str, **fields) -> User:
    clock.advance(timedelta(seconds=1))
    with uow_factory() as uow:
        user = add_user(
            uow,
            clock,
            HASHER,
            email=f"{username}@example.com",
            username=username,
            password="correct horse",
            **fields,
        )
        uow.commit()
    return user


def test_search_matches_email_or_username_literally(uow_factory, clock) -> None:
    for name in ["a_b", "axb", "Percent", "Zed"]:
        create(uow_factory, clock, name)
    create(uow_factory, clock, "boss", is_superuser=True)
    with uow_factory() as uow:

        def names(**query) -> list[str]:
            page = uow.users.search(limit=10, offset=0, **query)
            return [u.username for u in page.items]

        assert names() == ["boss", "Zed", "Percent", "axb", "a_b"]
        assert names(query="_") == ["a_b"]
        assert names(query="%") == []
        assert names(query="ZE") == ["Zed"]
        assert names(query="EXAMPLE") == ["boss", "Zed", "Percent", "axb", "a_b"]
        assert names(is_superuser=True) == ["boss"]
        assert names(is_active=False) == []
        page = uow.users.search(limit=2, offset=1, query="b")
        assert [u.username for u in page.items] == ["axb", "a_b"]
        assert (page.total, page.limit, page.offset) == (3, 2, 1)


def test_referrals_and_their_earnings(uow_factory, clock) -> None:
    alice = create(uow_factory, clock, "alice")
    referees = [
        create(uow_factory, clock, n, referred_by_id=alice.id) for n in ["bob", "bea", "ben"]
    ]
    create(uow_factory, clock, "stranger")
    with uow_factory() as uow:
        for amount, kind in [
            ("0.10", TransactionType.REFERRAL_BONUS),
            ("0.20", TransactionType.REFERRAL_BONUS),
            ("-0.05", TransactionType.REFERRAL_CLAWBACK),
            ("100.00", TransactionType.DEPOSIT),
            ("-1.00", TransactionType.ADJUSTMENT),
        ]:
            post_entry(
                uow,
                clock,
                user_id=alice.id,
                amount=Decimal(amount),
                transaction_type=kind,
                description="test",
                reference_type="test",
                reference_id="1",
            )
        uow.commit()
    with uow_factory() as uow:
        page = uow.users.referrals(alice.id, limit=2, offset=1)
        assert [u.id for u in page.items] == [r.id for r in referees[1:]]
        assert page.total == 3
        assert uow.users.referrals(referees[0].id, limit=10, offset=0).total == 0
        earned = uow.ledger.referral_earnings(alice.id)
        assert earned == Decimal("0.25")
        assert str(earned) == "0.25"
        assert uow.ledger.referral_earnings(referees[0].id) == Decimal("0.00")


def test_audit_log_round_trip_and_filters(uow_factory, clock) -> None:
    admin = create(uow_factory, clock, "admin", is_superuser=True)
    target = create(uow_factory, clock, "target")
    entries = []
    actions: list[tuple[AuditAction, dict[str, Any], str | None]] = [
        (AuditAction.BALANCE_ADJUSTED, {"amount": "1.00", "reason": "ünïcode"}, "::1"),
        (AuditAction.USER_DEACTIVATED, {"before": True, "after": False}, None),
        (AuditAction.USER_ACTIVATED, {"before": False, "after": True}, "10.0.0.1"),
    ]
    with uow_factory() as uow:
        for action, details, address in actions:
            clock.advance(timedelta(seconds=1))
            entry = AuditEntry(
                id=new_id(),
                actor_id=admin.id,
                action=action,
                target_type="user",
                target_id=str(target.id),
                details=details,
                client_address=address,
                created_at=clock.now(),
            )
            uow.audit.add(entry)
            entries.append(entry)
        uow.commit()
    with uow_factory() as uow:
        page = uow.audit.list_entries(limit=10, offset=0)
        assert list(page.items) == entries[::-1]
        assert page.total == 3
        only = uow.audit.list_entries(limit=10, offset=0, action=AuditAction.BALANCE_ADJUSTED)
        assert list(only.items) == entries[:1]
        assert uow.audit.list_entries(limit=1, offset=2).items == [entries[0]]
        assert uow.audit.list_entries(limit=10, offset=0, target_id=str(admin.id)).total == 0


def test_an_unreachable_database_is_storage_unavailable(tmp_path: Path) -> None:
    # A directory where the database file should be: SQLite cannot open it.
    (tmp_path / "zenzefi.db").mkdir()
    for url in [
        f"sqlite:///{tmp_path / 'zenzefi.db'}",
        "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=2",
    ]:
        engine = make_engine(url)
        try:
            with pytest.raises(StorageUnavailable), SqlAlchemyUnitOfWork(engine) as uow:
                uow.users.get(new_id())
        finally:
            engine.dispose()
