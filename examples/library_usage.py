"""Zenzefi's rules inside another Python service, with that service's own storage.

The service in this example keeps its operators' actions in a database of its own (SQLite, via
the standard library), checks passwords with its own scheme (scrypt) and has its own event bus.
Everything else it leaves to `zenzefi_core`'s in-memory adapter. It plugs its parts in through
the core's ports (`zenzefi_core.ports`):

- `OperatorActionLog` implements `AuditLogRepository` on the service's SQLite table;
- `ServiceUnitOfWork` is a `UnitOfWork`: the core's in-memory one for every repository but
  `audit`, with both stores committed together;
- `ScryptHasher` implements `PasswordHasher`;
- `EventBus` implements `EventPublisher`; the core's `PublishCommittedEvents`, as the unit of
  work's `after_commit` hook, hands it each unit's events once they are committed.

Then it runs the use cases a shop needs: register users (one through a referral code), deposit,
adjust a balance as an operator, price tokens and a bundle, buy both, use the token (which pays
the referrer its bonus: bonuses wait for a token's first use), read the balance and the ledger,
and audit the ledger. Run it with `python examples/library_usage.py`; the test suite runs
it too (tests/unit/test_library_example.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Self
from uuid import UUID

from zenzefi_core.adapters.cache import InProcessCache
from zenzefi_core.adapters.memory import MemoryStore
from zenzefi_core.clock import SystemClock
from zenzefi_core.domain import AuditAction, AuditEntry, OutboxEvent, TransactionType
from zenzefi_core.policy import ShopPolicy
from zenzefi_core.ports import AfterCommit, AuditLogRepository, Clock, Page, UnitOfWork
from zenzefi_core.pricing import price_bundle
from zenzefi_core.services.accounts import CreateSuperuser
from zenzefi_core.services.admin import AdjustBalance, BalanceAdjustment
from zenzefi_core.services.balance import GetBalance, ListTransactions, TransactionQuery
from zenzefi_core.services.bundles import (
    BundleOrder,
    BundleQuery,
    ListBundles,
    PurchaseBundle,
    SeedDefaultBundles,
)
from zenzefi_core.services.ledger_check import CheckLedger
from zenzefi_core.services.outbox import PublishCommittedEvents
from zenzefi_core.services.proxy import ProxyAccess, ProxyRequest
from zenzefi_core.services.tokens import PurchaseToken, TokenOrder
from zenzefi_core.services.users import (
    Authenticate,
    Credentials,
    GetReferralSummary,
    ReferralQuery,
    RegisterUser,
    Registration,
)
from zenzefi_core.services.wallet import CreditWallet, WalletChange

# --- the service's own parts -----------------------------------------------------------------


class ScryptHasher:
    """The service's password scheme (`PasswordHasher` port): scrypt from the standard library."""

    def __init__(self, n: int = 2**14, r: int = 8, p: int = 1) -> None:
        self._params = (n, r, p)

    def hash(self, password: str) -> str:
        n, r, p = self._params
        salt = os.urandom(16)
        digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p)
        return "$".join(["scrypt", str(n), str(r), str(p), _b64(salt), _b64(digest)])

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            scheme, n, r, p, salt, digest = password_hash.split("$")
        except ValueError:
            return False
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p)
        )
        return hmac.compare_digest(actual, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class OperatorActionLog:
    """The audit log (`AuditLogRepository` port) on the service's own `operator_actions` table.

    It works inside the transaction its unit of work opened on the service's connection, so an
    entry is kept exactly when the action it records is.
    """

    SCHEMA = """
        CREATE TABLE IF NOT EXISTS operator_actions (
            id TEXT PRIMARY KEY,
            actor_id TEXT,
            action TEXT NOT NULL,
            target_type TEXT NOT NULL,
            target_id TEXT NOT NULL,
            details TEXT NOT NULL,
            client_address TEXT,
            created_at TEXT NOT NULL
        )
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def add(self, entry: AuditEntry) -> None:
        self._db.execute(
            "INSERT INTO operator_actions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(entry.id),
                None if entry.actor_id is None else str(entry.actor_id),
                entry.action.value,
                entry.target_type,
                entry.target_id,
                json.dumps(entry.details),
                entry.client_address,
                entry.created_at.isoformat(),
            ),
        )

    def list_entries(
        self,
        *,
        limit: int,
        offset: int,
        action: AuditAction | None = None,
        target_id: str | None = None,
    ) -> Page[AuditEntry]:
        # `? IS NULL OR column = ?`: an unset filter matches everything, the statement stays fixed.
        wanted = None if action is None else action.value
        args: list[Any] = [wanted, wanted, target_id, target_id]
        (total,) = self._db.execute(
            "SELECT count(*) FROM operator_actions"
            " WHERE (? IS NULL OR action = ?) AND (? IS NULL OR target_id = ?)",
            args,
        ).fetchone()
        rows = self._db.execute(
            "SELECT * FROM operator_actions"
            " WHERE (? IS NULL OR action = ?) AND (? IS NULL OR target_id = ?)"
            " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        return Page(
            items=[_audit_entry(row) for row in rows], total=total, limit=limit, offset=offset
        )


def _audit_entry(row: tuple[Any, ...]) -> AuditEntry:
    id_, actor_id, action, target_type, target_id, details, address, created_at = row
    return AuditEntry(
        id=UUID(id_),
        actor_id=None if actor_id is None else UUID(actor_id),
        action=AuditAction(action),
        target_type=target_type,
        target_id=target_id,
        details=json.loads(details),
        client_address=address,
        created_at=datetime.fromisoformat(created_at),
    )


class ServiceUnitOfWork:
    """A `UnitOfWork`: the core's in-memory repositories, and the service's own audit log.

    The two stores commit together: the SQLite transaction first (the step that can fail, in
    which case nothing of the unit is kept), then the in-memory tables, which only swap a
    reference. Leaving the block without `commit()` rolls both back, as the port requires.
    """

    def __init__(
        self,
        store: MemoryStore,
        connection: sqlite3.Connection,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self._inner = store.unit_of_work(after_commit)
        self._db = connection
        self._audit = OperatorActionLog(connection)

    @property
    def audit(self) -> AuditLogRepository:
        return self._audit

    def __getattr__(self, name: str) -> Any:
        # Every other repository (users, ledger, tokens, ...) is the core's in-memory one.
        return getattr(self._inner, name)

    def __enter__(self) -> Self:
        self._inner.__enter__()  # takes the memory store's lock: units of work run one by one
        self._db.execute("BEGIN")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._db.rollback()  # whatever was not committed
        finally:
            self._inner.__exit__(exc_type, exc, tb)

    def commit(self) -> None:
        self._db.commit()
        self._inner.commit()
        self._db.execute("BEGIN")  # later work in the same block starts a new transaction

    def rollback(self) -> None:
        self._db.rollback()
        self._inner.rollback()
        self._db.execute("BEGIN")


@dataclass
class EventBus:
    """The service's own message bus (`EventPublisher` port); here it only keeps what it was
    handed, in order. A real one returns once its broker has accepted the event, and raises
    `BrokerUnavailable` otherwise: the event then stays pending in the outbox, for `RelayOutbox`."""

    received: list[OutboxEvent] = field(default_factory=list)

    def publish(self, event: OutboxEvent) -> None:
        self.received.append(event)


@dataclass
class Service:
    """The service's wiring: one store, one audit database, one bus, the shop's rules."""

    store: MemoryStore
    audit_db: sqlite3.Connection
    bus: EventBus
    clock: Clock
    policy: ShopPolicy

    @classmethod
    def open(cls, audit_path: str = ":memory:") -> Service:
        # isolation_level=None: the unit of work issues BEGIN and COMMIT itself.
        connection = sqlite3.connect(audit_path, isolation_level=None, check_same_thread=False)
        connection.execute(OperatorActionLog.SCHEMA)
        return cls(MemoryStore(), connection, EventBus(), SystemClock(), ShopPolicy())

    def uow(self) -> UnitOfWork:
        # After each commit, hand the unit's events to the bus and mark them dispatched (in a
        # unit of work of its own, without the hook); what the bus refuses stays pending.
        hand_over = PublishCommittedEvents(self._plain_uow, self.clock, self.bus)
        return ServiceUnitOfWork(self.store, self.audit_db, hand_over)

    def _plain_uow(self) -> UnitOfWork:
        return ServiceUnitOfWork(self.store, self.audit_db)


# --- the use cases, as the service runs them -------------------------------------------------


@dataclass(frozen=True)
class Tour:
    """What `run` did, for the caller (and the test) to check."""

    token_price_24h: Decimal
    starter_pack_price: Decimal
    bob_balance: Decimal
    alice_balance: Decimal
    alice_referral_bonus: Decimal
    alice_bonus_pending: Decimal
    bob_ledger: list[tuple[str, Decimal]]
    audit_rows: list[tuple[str, str]]
    events: list[str]
    ledger_ok: bool


def run(service: Service | None = None) -> Tour:
    service = service or Service.open()
    uow, clock, policy = service.uow, service.clock, service.policy
    hasher = ScryptHasher()

    # Accounts: an operator, Alice, and Bob who joins with Alice's referral code.
    operator = CreateSuperuser(uow, clock, hasher)(
        email="ops@example.com",
        username="ops",
        password="operator pass 1",  # noqa: S106 - an example account
    ).user
    register = RegisterUser(uow, clock, hasher)
    alice = register(Registration("alice@example.com", "alice", "correct horse"))
    bob = register(
        Registration("bob@example.com", "bob", "battery staple", referral_code=alice.referral_code)
    )
    assert Authenticate(uow, hasher)(Credentials("bob@example.com", "battery staple")).id == bob.id

    # Money in: a deposit the service's own payment system took, and an operator's credit.
    CreditWallet(uow, clock, policy.low_balance_threshold)(
        WalletChange(
            user_id=bob.id,
            amount=Decimal("100.00"),
            transaction_type=TransactionType.DEPOSIT,
            description="Card payment",
            reference_type="card_payment",
            reference_id="pay-0001",
        )
    )
    AdjustBalance(uow, clock)(
        BalanceAdjustment(
            actor_id=operator.id, user_id=bob.id, amount=Decimal("20.00"), reason="Welcome credit"
        )
    )

    # Prices: one 24-hour token, and the default Starter Pack (5 of them, 10 % off).
    token_price = policy.prices.price_for(24)
    starter = price_bundle(5, token_price, Decimal("10.00"))

    # Purchases: a token, then the Starter Pack from the catalogue. Alice's 10 % of each is
    # pending: an unused token can still be refunded.
    day = PurchaseToken(uow, clock, policy)(TokenOrder(user_id=bob.id, duration_hours=24))
    SeedDefaultBundles(uow, clock, policy.prices)()
    catalogue = ListBundles(uow)(BundleQuery())
    pack = next(b for b in catalogue if b.name == "Starter Pack")
    PurchaseBundle(uow, clock, policy)(BundleOrder(user_id=bob.id, bundle_id=pack.id))

    # Bob's first proxied request with the day token starts its clock; the token can no longer
    # be refunded, so the same transaction pays Alice its bonus. The bundle's stays pending.
    proxy = ProxyAccess(uow, clock, InProcessCache(), referrals=policy.referrals)
    proxy.authorize(ProxyRequest(token_hash=day.token.token_hash, device_id="bob-desktop-01"))

    balance = GetBalance(uow)
    referrals = GetReferralSummary(uow)(ReferralQuery(alice.id))
    ledger = ListTransactions(uow)(TransactionQuery(user_id=bob.id))
    audit = service.audit_db.execute(
        "SELECT action, target_id FROM operator_actions ORDER BY created_at"
    ).fetchall()
    return Tour(
        token_price_24h=token_price,
        starter_pack_price=starter.total_price,
        bob_balance=balance(bob.id),
        alice_balance=balance(alice.id),
        alice_referral_bonus=referrals.bonus_earned,
        alice_bonus_pending=referrals.bonus_pending,
        bob_ledger=[(e.transaction_type.value, e.amount) for e in reversed(ledger.items)],
        audit_rows=[(action, target) for action, target in audit],
        events=[event.event_type for event in service.bus.received],
        ledger_ok=CheckLedger(uow)().ok,
    )


def main() -> None:
    tour = run()
    print(f"24-hour token: {tour.token_price_24h} ZNC; Starter Pack: {tour.starter_pack_price} ZNC")
    print("Bob's ledger, oldest first:")
    for kind, amount in tour.bob_ledger:
        print(f"  {kind:<12} {amount:>8}")
    print(
        f"Bob's balance: {tour.bob_balance}; Alice's referral bonus: "
        f"{tour.alice_referral_bonus} paid, {tour.alice_bonus_pending} pending"
    )
    print(f"Operator actions in the service's own table: {tour.audit_rows}")
    print(f"Events on the service's bus: {', '.join(tour.events)}")
    print(f"Ledger consistent: {tour.ledger_ok}")


if __name__ == "__main__":
    main()
