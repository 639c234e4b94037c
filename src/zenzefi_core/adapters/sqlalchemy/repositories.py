"""Repositories over one SQLAlchemy connection (Core, not ORM: each statement is explicit)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Connection,
    Row,
    Text,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from zenzefi_core.adapters.sqlalchemy.tables import (
    access_tokens,
    audit_log,
    bundle_purchases,
    idempotency_keys,
    outbox_events,
    payment_intents,
    transactions,
    users,
    webhook_endpoints,
)
from zenzefi_core.adapters.sqlalchemy.types import UtcDateTime
from zenzefi_core.domain import (
    AuditAction,
    AuditEntry,
    IdempotencyRecord,
    LedgerEntry,
    OutboxEvent,
    PaymentStatus,
    TransactionType,
    User,
)
from zenzefi_core.errors import DuplicateUser, IdempotencyConflict
from zenzefi_core.money import ZERO
from zenzefi_core.money_audit import (
    KNOWN_REFERENCES,
    EntryFact,
    MoneyFacts,
    PaymentFact,
    PurchaseFact,
    TokenFact,
    UserFact,
)
from zenzefi_core.ports import LedgerDiscrepancy, OutboxBacklog, Page


def _cents(expression: Any) -> Any:
    """ROUND(x, 2): exact on PostgreSQL, and keeps SQLite's float storage on whole cents."""
    return func.round(expression, 2)


def _sum(total: Any) -> Decimal:
    """A SUM read back as an amount. SQLite adds floats, so amounts that cancel out can come
    back as -0.0, which must not reach anyone as "-0.00"."""
    amount = ZERO if total is None else Decimal(str(total)).quantize(ZERO)
    return ZERO if amount == ZERO else amount


# The statements every purchase runs, built once: building a statement and its cache key
# costs more Python than executing it, so these are executed with their parameters only.
_USER_BY_ID = select(users).where(users.c.id == bindparam("user_id"))
_DELTA = bindparam("delta", type_=users.c.balance.type)
#: The debit (or credit) itself: the balance check is part of the UPDATE, which returns the
#: balance it produced.
_CHANGE_BALANCE = (
    update(users)
    .where(users.c.id == bindparam("user_id"), users.c.balance + _DELTA >= 0)
    .values(balance=_cents(users.c.balance + _DELTA))
    .returning(users.c.balance)
)
_INSERT_ENTRY = insert(transactions)
_INSERT_EVENTS = insert(outbox_events)
#: An event stored pending only when an active endpoint of its user subscribes to its type,
#: otherwise already dispatched at its creation. `pattern` is the LIKE pattern of the JSON
#: string of the type, as the endpoints' event lists store it.
_INSERT_EVENT_FOR_SUBSCRIBERS = (
    insert(outbox_events)
    .values(
        id=bindparam("event_id"),
        event_type=bindparam("event_type"),
        payload=bindparam("payload", type_=outbox_events.c.payload.type),
        user_id=bindparam("event_user_id", type_=outbox_events.c.user_id.type),
        created_at=bindparam("event_created_at", type_=UtcDateTime()),
        dispatched_at=case(
            (
                exists().where(
                    webhook_endpoints.c.user_id
                    == bindparam("event_user_id", type_=outbox_events.c.user_id.type),
                    webhook_endpoints.c.is_active.is_(True),
                    cast(webhook_endpoints.c.events, Text).like(bindparam("pattern"), escape="/"),
                ),
                null(),
            ),
            else_=bindparam("event_created_at", type_=UtcDateTime()),
        ),
        attempts=bindparam("event_attempts"),
    )
    .returning(outbox_events.c.dispatched_at)
)


def _like_pattern(text: str) -> str:
    """A LIKE pattern (escape character `/`) matching `text` anywhere."""
    escaped = text.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


def _user(row: Row[Any]) -> User:
    return User(
        id=row.id,
        email=row.email,
        username=row.username,
        password_hash=row.password_hash,
        referral_code=row.referral_code,
        created_at=row.created_at,
        full_name=row.full_name,
        referred_by_id=row.referred_by_id,
        is_active=row.is_active,
        is_superuser=row.is_superuser,
        balance=row.balance,
        session_version=row.session_version,
    )


_UNIQUE_USER_COLUMNS = {
    "email": "email",
    "username_lower": "username",
    "referral_code": "referral code",
}


def _duplicate_field(error: IntegrityError) -> str:
    """Which unique column clashed, read from the constraint's name, never from the message.

    PostgreSQL's message quotes the clashing value, so an email such as
    ``username@example.com`` would otherwise be reported as a duplicate username.
    """
    diag = getattr(error.orig, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    if constraint:  # PostgreSQL: uq_users_<column>
        column = constraint.removeprefix("uq_users_")
    else:  # SQLite: "UNIQUE constraint failed: users.<column>"
        column = str(error.orig).rpartition("users.")[2].strip()
    return _UNIQUE_USER_COLUMNS.get(column, "id")


class SqlUserRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def add(self, user: User) -> None:
        try:
            with self._c.begin_nested():
                self._c.execute(
                    insert(users).values(
                        id=user.id,
                        email=user.email,
                        username=user.username,
                        username_lower=user.username.lower(),
                        password_hash=user.password_hash,
                        full_name=user.full_name,
                        referral_code=user.referral_code,
                        referred_by_id=user.referred_by_id,
                        is_active=user.is_active,
                        is_superuser=user.is_superuser,
                        balance=user.balance,
                        session_version=user.session_version,
                        created_at=user.created_at,
                    )
                )
        except IntegrityError as error:
            raise DuplicateUser(_duplicate_field(error)) from None

    def _one(self, *where: Any) -> User | None:
        row = self._c.execute(select(users).where(*where)).first()
        return None if row is None else _user(row)

    def get(self, user_id: UUID) -> User | None:
        row = self._c.execute(_USER_BY_ID, {"user_id": user_id}).first()
        return None if row is None else _user(row)

    def get_by_email(self, email: str) -> User | None:
        return self._one(users.c.email == email.strip().lower())

    def get_by_username(self, username: str) -> User | None:
        return self._one(users.c.username_lower == username.strip().lower())

    def get_by_referral_code(self, code: str) -> User | None:
        return self._one(users.c.referral_code == code)

    def _set(self, user_id: UUID, **values: Any) -> User | None:
        row = self._c.execute(
            update(users).where(users.c.id == user_id).values(**values).returning(*users.c)
        ).first()
        return None if row is None else _user(row)

    def set_full_name(self, user_id: UUID, full_name: str | None) -> User | None:
        return self._set(user_id, full_name=full_name)

    def set_password(self, user_id: UUID, password_hash: str) -> User | None:
        return self._set(user_id, password_hash=password_hash)

    def set_active(self, user_id: UUID, active: bool) -> User | None:
        return self._set(user_id, is_active=active)

    def set_superuser(self, user_id: UUID, superuser: bool) -> User | None:
        return self._set(user_id, is_superuser=superuser)

    def end_sessions(self, user_id: UUID) -> User | None:
        return self._set(user_id, session_version=users.c.session_version + 1)

    def change_balance(self, user_id: UUID, delta: Decimal) -> Decimal | None:
        row = self._c.execute(_CHANGE_BALANCE, {"user_id": user_id, "delta": delta}).first()
        return None if row is None else row.balance

    def _page(self, where: list[Any], order: list[Any], *, limit: int, offset: int) -> Page[User]:
        total = self._c.execute(select(func.count()).select_from(users).where(*where))
        rows = self._c.execute(
            select(users).where(*where).order_by(*order).limit(limit).offset(offset)
        )
        return Page(
            items=[_user(row) for row in rows],
            total=total.scalar_one(),
            limit=limit,
            offset=offset,
        )

    def search(
        self,
        *,
        limit: int,
        offset: int,
        query: str | None = None,
        is_active: bool | None = None,
        is_superuser: bool | None = None,
    ) -> Page[User]:
        where: list[Any] = []
        if query:
            # Emails are stored folded and usernames have a folded copy, so LIKE needs no lower().
            folded = query.lower()
            where.append(
                or_(
                    users.c.email.contains(folded, autoescape=True),
                    users.c.username_lower.contains(folded, autoescape=True),
                )
            )
        if is_active is not None:
            where.append(users.c.is_active == is_active)
        if is_superuser is not None:
            where.append(users.c.is_superuser == is_superuser)
        order = [users.c.created_at.desc(), users.c.id.desc()]
        return self._page(where, order, limit=limit, offset=offset)

    def referrals(self, referrer_id: UUID, *, limit: int, offset: int) -> Page[User]:
        where = [users.c.referred_by_id == referrer_id]
        order = [users.c.created_at, users.c.id]
        return self._page(where, order, limit=limit, offset=offset)


def _entry(row: Row[Any]) -> LedgerEntry:
    return LedgerEntry(
        id=row.id,
        user_id=row.user_id,
        amount=row.amount,
        balance_after=row.balance_after,
        transaction_type=TransactionType(row.transaction_type),
        description=row.description,
        reference_type=row.reference_type,
        reference_id=row.reference_id,
        created_at=row.created_at,
    )


class SqlLedgerRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection
        #: Entries added in the current transaction, for the unit of work's ledger observer.
        self.added: list[LedgerEntry] = []

    def add(self, entry: LedgerEntry) -> None:
        self._c.execute(
            _INSERT_ENTRY,
            {
                "id": entry.id,
                "user_id": entry.user_id,
                "amount": entry.amount,
                "balance_after": entry.balance_after,
                "transaction_type": entry.transaction_type.value,
                "description": entry.description,
                "reference_type": entry.reference_type,
                "reference_id": entry.reference_id,
                "created_at": entry.created_at,
            },
        )
        self.added.append(entry)

    def list_for_user(
        self,
        user_id: UUID,
        *,
        limit: int,
        offset: int,
        transaction_type: TransactionType | None = None,
    ) -> Page[LedgerEntry]:
        where = [transactions.c.user_id == user_id]
        if transaction_type is not None:
            where.append(transactions.c.transaction_type == transaction_type.value)
        total = self._c.execute(select(func.count()).select_from(transactions).where(*where))
        rows = self._c.execute(
            select(transactions)
            .where(*where)
            .order_by(transactions.c.created_at.desc(), transactions.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return Page(
            items=[_entry(row) for row in rows],
            total=total.scalar_one(),
            limit=limit,
            offset=offset,
        )

    def total_for_user(self, user_id: UUID) -> Decimal:
        total = self._c.execute(
            select(_cents(func.coalesce(func.sum(transactions.c.amount), 0))).where(
                transactions.c.user_id == user_id
            )
        ).scalar_one()
        return _sum(total)

    def referral_earnings(self, user_id: UUID) -> Decimal:
        kinds = [TransactionType.REFERRAL_BONUS.value, TransactionType.REFERRAL_CLAWBACK.value]
        total = self._c.execute(
            select(_cents(func.coalesce(func.sum(transactions.c.amount), 0))).where(
                transactions.c.user_id == user_id, transactions.c.transaction_type.in_(kinds)
            )
        ).scalar_one()
        return _sum(total)

    def discrepancies(self) -> list[LedgerDiscrepancy]:
        per_user = (
            select(
                transactions.c.user_id,
                func.sum(transactions.c.amount).label("total"),
            )
            .group_by(transactions.c.user_id)
            .subquery()
        )
        total = _cents(func.coalesce(per_user.c.total, 0))
        rows = self._c.execute(
            select(users.c.id, users.c.username, users.c.balance, total.label("ledger_total"))
            .select_from(users.outerjoin(per_user, per_user.c.user_id == users.c.id))
            .where((total != _cents(users.c.balance)) | (users.c.balance < 0))
            .order_by(users.c.id)
        )
        return [
            LedgerDiscrepancy(
                user_id=row.id,
                username=row.username,
                balance=row.balance,
                ledger_total=Decimal(str(row.ledger_total)).quantize(ZERO),
            )
            for row in rows
        ]

    def count_users(self) -> int:
        return self._c.execute(select(func.count()).select_from(users)).scalar_one()

    def money_facts(self) -> MoneyFacts:
        if self._c.dialect.name == "postgresql" and not self._c.in_transaction():
            # One snapshot for all the statements below, so an entry and the record it names
            # are seen at the same moment even while the shop runs. SQLite transactions are
            # serialisable already.
            self._c.execution_options(isolation_level="REPEATABLE READ")
        t = transactions.c
        traced = t.reference_type.in_(sorted(KNOWN_REFERENCES))
        entries = [
            EntryFact(
                row.id,
                row.user_id,
                TransactionType(row.transaction_type),
                row.amount,
                row.reference_type,
                row.reference_id,
            )
            for row in self._c.execute(
                select(
                    t.id, t.user_id, t.transaction_type, t.amount, t.reference_type, t.reference_id
                ).where(traced)
            )
        ]
        untraced = self._c.execute(
            select(func.count()).select_from(transactions).where(~traced)
        ).scalar_one()
        a, p, b = access_tokens.c, payment_intents.c, bundle_purchases.c
        return MoneyFacts(
            users=[
                UserFact(row.id, row.username, row.referred_by_id)
                for row in self._c.execute(
                    select(users.c.id, users.c.username, users.c.referred_by_id)
                )
            ],
            entries=entries,
            tokens=[
                TokenFact(
                    row.id, row.user_id, row.price_paid, row.bundle_purchase_id, bool(row.revoked)
                )
                for row in self._c.execute(
                    select(
                        a.id,
                        a.user_id,
                        a.price_paid,
                        a.bundle_purchase_id,
                        a.revoked_at.is_not(None).label("revoked"),
                    )
                )
            ],
            bundle_purchases=[
                PurchaseFact(row.id, row.user_id, row.total_price)
                for row in self._c.execute(select(b.id, b.user_id, b.total_price))
            ],
            payments=[
                PaymentFact(
                    row.id, row.user_id, row.amount_znc, row.status == PaymentStatus.SUCCEEDED.value
                )
                for row in self._c.execute(select(p.id, p.user_id, p.amount_znc, p.status))
            ],
            untraced_entries=int(untraced),
        )


def _event(row: Row[Any]) -> OutboxEvent:
    return OutboxEvent(
        id=row.id,
        event_type=row.event_type,
        payload=row.payload,
        created_at=row.created_at,
        user_id=row.user_id,
        dispatched_at=row.dispatched_at,
        attempts=row.attempts,
    )


class SqlOutboxRepository:
    """With `worker_events`, an event of any other type is stored pending only when an active
    webhook endpoint of its user subscribes to it, and otherwise already dispatched with no
    attempt (nothing would consume it); the check is part of the event's `INSERT`. Without,
    every event is stored pending."""

    def __init__(self, connection: Connection, worker_events: frozenset[str] | None = None) -> None:
        self._c = connection
        self._worker_events = worker_events
        #: Events added in the current transaction, for the unit of work's after-commit hook.
        self.added: list[OutboxEvent] = []

    def add(self, event: OutboxEvent) -> None:
        self.add_all([event])

    def add_all(self, events: Sequence[OutboxEvent]) -> None:
        if not events:
            return
        if self._worker_events is None:
            self._insert(events)
            self.added.extend(events)
            return
        pending = [event for event in events if event.event_type in self._worker_events]
        self._insert(pending)
        stored = {event.id: event for event in pending}
        for event in events:
            if event.id not in stored:
                stored[event.id] = self._add_for_subscribers(event)
        self.added.extend(stored[event.id] for event in events)

    def _insert(self, events: Sequence[OutboxEvent]) -> None:
        if not events:
            return
        self._c.execute(
            _INSERT_EVENTS,
            [
                {
                    "id": event.id,
                    "event_type": event.event_type,
                    "payload": event.payload,
                    "user_id": event.user_id,
                    "created_at": event.created_at,
                    "dispatched_at": event.dispatched_at,
                    "attempts": event.attempts,
                }
                for event in events
            ],
        )

    def _add_for_subscribers(self, event: OutboxEvent) -> OutboxEvent:
        """Insert the event, pending only if an endpoint of its user subscribes to its type."""
        if event.user_id is None or event.dispatched_at is not None:
            stored = dataclasses.replace(
                event, dispatched_at=event.dispatched_at or event.created_at
            )
            self._insert([stored])
            return stored
        dispatched_at = self._c.execute(
            _INSERT_EVENT_FOR_SUBSCRIBERS,
            {
                "event_id": event.id,
                "event_type": event.event_type,
                "payload": event.payload,
                "event_user_id": event.user_id,
                "event_created_at": event.created_at,
                "event_attempts": event.attempts,
                # The list is stored as JSON text; the quoted name matches one whole element.
                "pattern": _like_pattern(json.dumps(event.event_type)),
            },
        ).scalar_one()
        return dataclasses.replace(event, dispatched_at=dispatched_at)

    def get(self, event_id: UUID) -> OutboxEvent | None:
        row = self._c.execute(select(outbox_events).where(outbox_events.c.id == event_id)).first()
        return None if row is None else _event(row)

    def pending(self, *, limit: int) -> list[OutboxEvent]:
        rows = self._c.execute(
            select(outbox_events)
            .where(outbox_events.c.dispatched_at.is_(None))
            .order_by(outbox_events.c.created_at, outbox_events.c.id)
            .limit(limit)
            # SQLite has no row locks: FOR UPDATE takes its write lock (see engine.py) instead.
            .with_for_update(skip_locked=True)
        )
        return [_event(row) for row in rows]

    def mark_dispatched(self, event_ids: Sequence[UUID], at: datetime) -> None:
        if not event_ids:
            return
        self._c.execute(
            update(outbox_events)
            .where(outbox_events.c.id.in_(list(event_ids)), outbox_events.c.dispatched_at.is_(None))
            .values(dispatched_at=at, attempts=outbox_events.c.attempts + 1)
        )

    def backlog(self) -> OutboxBacklog:
        # Both aggregates read the (dispatched_at, created_at) index only.
        row = self._c.execute(
            select(func.count(), func.min(outbox_events.c.created_at)).where(
                outbox_events.c.dispatched_at.is_(None)
            )
        ).one()
        return OutboxBacklog(pending=int(row[0]), oldest_created_at=row[1])


class SqlIdempotencyRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def get(self, user_id: UUID, key: str) -> IdempotencyRecord | None:
        row = self._c.execute(
            select(idempotency_keys).where(
                idempotency_keys.c.user_id == user_id, idempotency_keys.c.key == key
            )
        ).first()
        if row is None:
            return None
        return IdempotencyRecord(
            user_id=row.user_id,
            key=row.key,
            operation=row.operation,
            request_hash=row.request_hash,
            response=row.response,
            created_at=row.created_at,
            secrets_encrypted=row.secrets_encrypted,
        )

    def add(self, record: IdempotencyRecord) -> None:
        try:
            with self._c.begin_nested():
                self._c.execute(
                    insert(idempotency_keys).values(
                        user_id=record.user_id,
                        key=record.key,
                        operation=record.operation,
                        request_hash=record.request_hash,
                        response=record.response,
                        secrets_encrypted=record.secrets_encrypted,
                        created_at=record.created_at,
                    )
                )
        except IntegrityError:
            raise IdempotencyConflict() from None

    def remove(self, user_id: UUID, key: str) -> None:
        self._c.execute(
            delete(idempotency_keys).where(
                idempotency_keys.c.user_id == user_id, idempotency_keys.c.key == key
            )
        )

    def purge(self, *, created_up_to: datetime) -> int:
        result = self._c.execute(
            delete(idempotency_keys).where(idempotency_keys.c.created_at <= created_up_to)
        )
        return result.rowcount


def _audit_entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        actor_id=row.actor_id,
        action=AuditAction(row.action),
        target_type=row.target_type,
        target_id=row.target_id,
        details=row.details,
        client_address=row.client_address,
        created_at=row.created_at,
    )


class SqlAuditLogRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def add(self, entry: AuditEntry) -> None:
        self._c.execute(
            insert(audit_log).values(
                id=entry.id,
                actor_id=entry.actor_id,
                action=entry.action.value,
                target_type=entry.target_type,
                target_id=entry.target_id,
                details=entry.details,
                client_address=entry.client_address,
                created_at=entry.created_at,
            )
        )

    def list_entries(
        self,
        *,
        limit: int,
        offset: int,
        action: AuditAction | None = None,
        target_id: str | None = None,
    ) -> Page[AuditEntry]:
        where: list[Any] = []
        if action is not None:
            where.append(audit_log.c.action == action.value)
        if target_id is not None:
            where.append(audit_log.c.target_id == target_id)
        total = self._c.execute(select(func.count()).select_from(audit_log).where(*where))
        rows = self._c.execute(
            select(audit_log)
            .where(*where)
            .order_by(audit_log.c.created_at.desc(), audit_log.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return Page(
            items=[_audit_entry(row) for row in rows],
            total=total.scalar_one(),
            limit=limit,
            offset=offset,
        )
