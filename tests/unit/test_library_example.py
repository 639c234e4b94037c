"""The library guide's example (examples/library_usage.py) runs, and its own repository keeps
the unit of work's promise: kept together with the core's changes, or not at all."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import pytest
from examples import library_usage

from zenzefi_core.errors import AuthenticationFailed, InsufficientBalance
from zenzefi_core.ids import new_id
from zenzefi_core.services.admin import AdjustBalance, AuditQuery, BalanceAdjustment, ListAuditLog
from zenzefi_core.services.users import Authenticate, Credentials

EXAMPLE = Path(library_usage.__file__)


@pytest.fixture
def service(tmp_path: Path) -> library_usage.Service:
    return library_usage.Service.open(str(tmp_path / "audit.sqlite3"))


def _user_id(service: library_usage.Service, email: str) -> UUID:
    with service.uow() as uow:
        user = uow.users.get_by_email(email)
    assert user is not None
    return user.id


def test_the_tour_prices_buys_and_pays_the_referrer(service: library_usage.Service) -> None:
    tour = library_usage.run(service)

    assert (tour.token_price_24h, tour.starter_pack_price) == (Decimal("18.00"), Decimal("81.00"))
    assert tour.bob_ledger == [
        ("deposit", Decimal("100.00")),
        ("adjustment", Decimal("20.00")),
        ("purchase", Decimal("-18.00")),
        ("purchase", Decimal("-81.00")),
    ]
    assert tour.bob_balance == Decimal("21.00")
    # 10 % of both purchases: the used token's paid, the unused bundle's pending.
    assert tour.alice_referral_bonus == tour.alice_balance == Decimal("1.80")
    assert tour.alice_bonus_pending == Decimal("8.10")
    bob = _user_id(service, "bob@example.com")
    assert tour.audit_rows == [("balance.adjusted", str(bob))]
    assert tour.events == [
        "token.purchased",
        "bundle.purchased",
        "token.activated",
        "referral.bonus",
    ]
    assert tour.ledger_ok
    # Every event the bus took is marked dispatched: none is left for the relay.
    with service.uow() as uow:
        assert uow.outbox.pending(limit=10) == []


def test_the_core_reads_the_services_own_audit_table(service: library_usage.Service) -> None:
    library_usage.run(service)
    operator = _user_id(service, "ops@example.com")

    page = ListAuditLog(service.uow)(AuditQuery(actor_id=operator))

    assert page.total == 1
    (entry,) = page.items
    assert entry.actor_id == operator
    assert entry.details["amount"] == "20.00"
    assert ListAuditLog(service.uow)(AuditQuery(actor_id=operator, target_id="other")).total == 0


def test_a_refused_action_leaves_both_stores_as_they_were(service: library_usage.Service) -> None:
    library_usage.run(service)
    operator = _user_id(service, "ops@example.com")
    bob = _user_id(service, "bob@example.com")
    rows = service.audit_db.execute("SELECT count(*) FROM operator_actions").fetchone()

    with pytest.raises(InsufficientBalance):
        AdjustBalance(service.uow, service.clock)(
            BalanceAdjustment(actor_id=operator, user_id=bob, amount=Decimal("-500.00"), reason="x")
        )

    assert service.audit_db.execute("SELECT count(*) FROM operator_actions").fetchone() == rows
    with service.uow() as uow:
        assert uow.ledger.total_for_user(bob) == Decimal("21.00")


def test_leaving_without_commit_discards_the_audit_entry_too(
    service: library_usage.Service,
) -> None:
    library_usage.run(service)
    with service.uow() as uow:
        (entry,) = uow.audit.list_entries(limit=10, offset=0).items
        uow.audit.add(dataclasses.replace(entry, id=new_id()))
        assert uow.audit.list_entries(limit=10, offset=0).total == 2
    with service.uow() as uow:
        assert uow.audit.list_entries(limit=10, offset=0).total == 1


def test_the_services_own_password_scheme_is_used() -> None:
    service = library_usage.Service.open()
    library_usage.run(service)
    hasher = library_usage.ScryptHasher()
    with service.uow() as uow:
        stored = uow.users.get_by_email("bob@example.com")
    assert stored is not None
    assert stored.password_hash.startswith("scrypt$")
    with pytest.raises(AuthenticationFailed):
        Authenticate(service.uow, hasher)(Credentials("bob@example.com", "wrong password"))


def test_the_example_runs_as_a_script() -> None:
    result = subprocess.run(  # noqa: S603 - this interpreter and the example, nothing else
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Bob's balance: 21.00" in result.stdout
    assert "Ledger consistent: True" in result.stdout
