"""An in-memory unit of work: the real semantics of the SQL adapter, without a database.

For library users who want the rules without persistence, and for unit tests that must run in
milliseconds. Transactions are serialised by one lock and isolated by working on copies of the
tables, which are swapped in on commit; leaving without commit discards them. The contract suite
in tests/contract runs the same tests against this and the SQLAlchemy adapter.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Self
from uuid import UUID

from zenzefi_core.analytics import (
    DAU_SPAN,
    Activity,
    ActivityBucketRow,
    LiveUsage,
    TopUser,
    UsageBucketRow,
    Window,
    session_microseconds,
)
from zenzefi_core.domain import (
    AuditAction,
    AuditEntry,
    IdempotencyRecord,
    LedgerEntry,
    OutboxEvent,
    PaymentIntent,
    PaymentStatus,
    ProviderEvent,
    TransactionType,
    User,
)
from zenzefi_core.domain.bundles import BundlePurchase, TokenBundle
from zenzefi_core.domain.notifications import Notification, NotificationKind, NotificationState
from zenzefi_core.domain.proxy import ProxySession, UsageDelta
from zenzefi_core.domain.referrals import ReferralBonus, ReferralShare, ShareState
from zenzefi_core.domain.tokens import (
    BUNDLE_PURCHASE_REFERENCE,
    TOKEN_REFERENCE,
    AccessToken,
)
from zenzefi_core.domain.webhooks import (
    DeliveryAttempt,
    DeliveryState,
    WebhookDelivery,
    WebhookEndpoint,
)
from zenzefi_core.errors import Conflict, DuplicateUser, IdempotencyConflict
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
from zenzefi_core.ports import AfterCommit, LedgerDiscrepancy, LedgerObserver, OutboxBacklog, Page


@dataclasses.dataclass
class _Tables:
    users: dict[UUID, User] = dataclasses.field(default_factory=dict)
    ledger: list[LedgerEntry] = dataclasses.field(default_factory=list)
    outbox: dict[UUID, OutboxEvent] = dataclasses.field(default_factory=dict)
    idempotency: dict[tuple[UUID, str], IdempotencyRecord] = dataclasses.field(default_factory=dict)
    payments: dict[UUID, PaymentIntent] = dataclasses.field(default_factory=dict)
    payment_events: dict[str, ProviderEvent] = dataclasses.field(default_factory=dict)
    audit: list[AuditEntry] = dataclasses.field(default_factory=list)
    tokens: dict[UUID, AccessToken] = dataclasses.field(default_factory=dict)
    bundles: dict[UUID, TokenBundle] = dataclasses.field(default_factory=dict)
    bundle_purchases: dict[UUID, BundlePurchase] = dataclasses.field(default_factory=dict)
    referral_bonuses: dict[UUID, ReferralBonus] = dataclasses.field(default_factory=dict)
    #: By token id.
    referral_shares: dict[UUID, ReferralShare] = dataclasses.field(default_factory=dict)
    notification_preferences: dict[tuple[UUID, NotificationKind], bool] = dataclasses.field(
        default_factory=dict
    )
    notifications: dict[UUID, Notification] = dataclasses.field(default_factory=dict)
    token_notices: dict[tuple[UUID, str], datetime] = dataclasses.field(default_factory=dict)
    proxy_sessions: dict[UUID, ProxySession] = dataclasses.field(default_factory=dict)
    token_expiries: dict[UUID, datetime] = dataclasses.field(default_factory=dict)
    webhook_endpoints: dict[UUID, WebhookEndpoint] = dataclasses.field(default_factory=dict)
    webhook_deliveries: dict[UUID, WebhookDelivery] = dataclasses.field(default_factory=dict)
    webhook_attempts: list[DeliveryAttempt] = dataclasses.field(default_factory=list)

    def copy(self) -> _Tables:
        # Entities are frozen, so copying the containers is enough to isolate a transaction.
        return _Tables(
            users=dict(self.users),
            ledger=list(self.ledger),
            outbox=dict(self.outbox),
            idempotency=dict(self.idempotency),
            payments=dict(self.payments),
            payment_events=dict(self.payment_events),
            audit=list(self.audit),
            tokens=dict(self.tokens),
            bundles=dict(self.bundles),
            bundle_purchases=dict(self.bundle_purchases),
            referral_bonuses=dict(self.referral_bonuses),
            referral_shares=dict(self.referral_shares),
            notification_preferences=dict(self.notification_preferences),
            notifications=dict(self.notifications),
            token_notices=dict(self.token_notices),
            proxy_sessions=dict(self.proxy_sessions),
            token_expiries=dict(self.token_expiries),
            webhook_endpoints=dict(self.webhook_endpoints),
            webhook_deliveries=dict(self.webhook_deliveries),
            webhook_attempts=list(self.webhook_attempts),
        )


class MemoryStore:
    """The committed state, shared by every unit of work made from it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.tables = _Tables()

    def unit_of_work(
        self,
        after_commit: AfterCommit | None = None,
        on_ledger: LedgerObserver | None = None,
        worker_events: frozenset[str] | None = None,
    ) -> InMemoryUnitOfWork:
        return InMemoryUnitOfWork(self, after_commit, on_ledger, worker_events)


class _UserRepository:
    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    def _clash(self, user: User) -> str | None:
        for other in self._t.users.values():
            if other.id == user.id:
                continue
            if other.email.lower() == user.email.lower():
                return "email"
            if other.username.lower() == user.username.lower():
                return "username"
            if other.referral_code == user.referral_code:
                return "referral code"
        return None

    def add(self, user: User) -> None:
        if user.id in self._t.users:
            raise DuplicateUser("id")
        clash = self._clash(user)
        if clash:
            raise DuplicateUser(clash)
        self._t.users[user.id] = user

    def get(self, user_id: UUID) -> User | None:
        return self._t.users.get(user_id)

    def _find(self, field: str, value: str) -> User | None:
        # Trimmed and folded like the SQL adapter's lookups.
        wanted = value.strip().lower()
        for user in self._t.users.values():
            if str(getattr(user, field)).lower() == wanted:
                return user
        return None

    def get_by_email(self, email: str) -> User | None:
        return self._find("email", email)

    def get_by_username(self, username: str) -> User | None:
        return self._find("username", username)

    def get_by_referral_code(self, code: str) -> User | None:
        for user in self._t.users.values():
            if user.referral_code == code:
                return user
        return None

    def _set(self, user_id: UUID, **changes: object) -> User | None:
        current = self._t.users.get(user_id)
        if current is None:
            return None
        updated = dataclasses.replace(current, **changes)  # type: ignore[arg-type]
        self._t.users[user_id] = updated
        return updated

    def set_full_name(self, user_id: UUID, full_name: str | None) -> User | None:
        return self._set(user_id, full_name=full_name)

    def set_password(self, user_id: UUID, password_hash: str) -> User | None:
        return self._set(user_id, password_hash=password_hash)

    def set_active(self, user_id: UUID, active: bool) -> User | None:
        return self._set(user_id, is_active=active)

    def set_superuser(self, user_id: UUID, superuser: bool) -> User | None:
        return self._set(user_id, is_superuser=superuser)

    def end_sessions(self, user_id: UUID) -> User | None:
        current = self._t.users.get(user_id)
        if current is None:
            return None
        return self._set(user_id, session_version=current.session_version + 1)

    def change_balance(self, user_id: UUID, delta: Decimal) -> Decimal | None:
        user = self._t.users.get(user_id)
        if user is None or user.balance + delta < ZERO:
            return None
        updated = dataclasses.replace(user, balance=user.balance + delta)
        self._t.users[user_id] = updated
        return updated.balance

    def search(
        self,
        *,
        limit: int,
        offset: int,
        query: str | None = None,
        is_active: bool | None = None,
        is_superuser: bool | None = None,
    ) -> Page[User]:
        folded = (query or "").lower()
        matching = [
            u
            for u in self._t.users.values()
            if (folded in u.email.lower() or folded in u.username.lower())
            and (is_active is None or u.is_active == is_active)
            and (is_superuser is None or u.is_superuser == is_superuser)
        ]
        matching.sort(key=lambda u: (u.created_at, u.id), reverse=True)
        return Page(
            items=matching[offset : offset + limit], total=len(matching), limit=limit, offset=offset
        )

    def referrals(self, referrer_id: UUID, *, limit: int, offset: int) -> Page[User]:
        referees = [u for u in self._t.users.values() if u.referred_by_id == referrer_id]
        referees.sort(key=lambda u: (u.created_at, u.id))
        return Page(
            items=referees[offset : offset + limit], total=len(referees), limit=limit, offset=offset
        )


class _LedgerRepository:
    def __init__(self, tables: _Tables) -> None:
        self._t = tables
        #: Entries added in the current transaction, for the unit of work's ledger observer.
        self.added: list[LedgerEntry] = []

    def add(self, entry: LedgerEntry) -> None:
        self._t.ledger.append(entry)
        self.added.append(entry)

    def list_for_user(
        self,
        user_id: UUID,
        *,
        limit: int,
        offset: int,
        transaction_type: TransactionType | None = None,
    ) -> Page[LedgerEntry]:
        matching = [
            e
            for e in self._t.ledger
            if e.user_id == user_id
            and (transaction_type is None or e.transaction_type == transaction_type)
        ]
        matching.sort(key=lambda e: (e.created_at, e.id), reverse=True)
        return Page(
            items=matching[offset : offset + limit],
            total=len(matching),
            limit=limit,
            offset=offset,
        )

    def total_for_user(self, user_id: UUID) -> Decimal:
        return sum((e.amount for e in self._t.ledger if e.user_id == user_id), ZERO)

    def referral_earnings(self, user_id: UUID) -> Decimal:
        kinds = {TransactionType.REFERRAL_BONUS, TransactionType.REFERRAL_CLAWBACK}
        return sum(
            (
                e.amount
                for e in self._t.ledger
                if e.user_id == user_id and e.transaction_type in kinds
            ),
            ZERO,
        )

    def discrepancies(self) -> list[LedgerDiscrepancy]:
        totals: dict[UUID, Decimal] = {}
        for entry in self._t.ledger:
            totals[entry.user_id] = totals.get(entry.user_id, ZERO) + entry.amount
        found = []
        for user in sorted(self._t.users.values(), key=lambda u: u.id):
            total = totals.get(user.id, ZERO)
            if user.balance != total or user.balance < ZERO:
                found.append(
                    LedgerDiscrepancy(
                        user_id=user.id,
                        username=user.username,
                        balance=user.balance,
                        ledger_total=total,
                    )
                )
        return found

    def count_users(self) -> int:
        return len(self._t.users)

    def money_facts(self) -> MoneyFacts:
        traced = [e for e in self._t.ledger if e.reference_type in KNOWN_REFERENCES]
        return MoneyFacts(
            users=[UserFact(u.id, u.username, u.referred_by_id) for u in self._t.users.values()],
            entries=[
                EntryFact(
                    e.id, e.user_id, e.transaction_type, e.amount, e.reference_type, e.reference_id
                )
                for e in traced
            ],
            tokens=[
                TokenFact(
                    t.id, t.user_id, t.price_paid, t.bundle_purchase_id, t.revoked_at is not None
                )
                for t in self._t.tokens.values()
            ],
            bundle_purchases=[
                PurchaseFact(p.id, p.user_id, p.total_price)
                for p in self._t.bundle_purchases.values()
            ],
            payments=[
                PaymentFact(p.id, p.user_id, p.amount_znc, p.status is PaymentStatus.SUCCEEDED)
                for p in self._t.payments.values()
            ],
            untraced_entries=len(self._t.ledger) - len(traced),
        )


class _OutboxRepository:
    """`worker_events` as in the SQL adapter's `SqlOutboxRepository`."""

    def __init__(self, tables: _Tables, worker_events: frozenset[str] | None = None) -> None:
        self._t = tables
        self._worker_events = worker_events
        #: Events added in the current transaction, for the unit of work's after-commit hook.
        self.added: list[OutboxEvent] = []

    def add(self, event: OutboxEvent) -> None:
        if not self._wanted(event):
            event = dataclasses.replace(
                event, dispatched_at=event.dispatched_at or event.created_at
            )
        self._t.outbox[event.id] = event
        self.added.append(event)

    def _wanted(self, event: OutboxEvent) -> bool:
        if self._worker_events is None or event.event_type in self._worker_events:
            return True
        return event.user_id is not None and any(
            e.is_active and e.user_id == event.user_id and event.event_type in e.events
            for e in self._t.webhook_endpoints.values()
        )

    def add_all(self, events: Sequence[OutboxEvent]) -> None:
        for event in events:
            self.add(event)

    def get(self, event_id: UUID) -> OutboxEvent | None:
        return self._t.outbox.get(event_id)

    def pending(self, *, limit: int) -> list[OutboxEvent]:
        waiting = [e for e in self._t.outbox.values() if e.dispatched_at is None]
        waiting.sort(key=lambda e: (e.created_at, e.id))
        return waiting[:limit]

    def mark_dispatched(self, event_ids: Sequence[UUID], at: datetime) -> None:
        for event_id in event_ids:
            event = self._t.outbox.get(event_id)
            if event is not None and event.dispatched_at is None:
                self._t.outbox[event_id] = dataclasses.replace(
                    event, dispatched_at=at, attempts=event.attempts + 1
                )

    def backlog(self) -> OutboxBacklog:
        waiting = [e.created_at for e in self._t.outbox.values() if e.dispatched_at is None]
        return OutboxBacklog(pending=len(waiting), oldest_created_at=min(waiting, default=None))


class _IdempotencyRepository:
    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    def get(self, user_id: UUID, key: str) -> IdempotencyRecord | None:
        return self._t.idempotency.get((user_id, key))

    def add(self, record: IdempotencyRecord) -> None:
        slot = (record.user_id, record.key)
        if slot in self._t.idempotency:
            raise IdempotencyConflict()
        self._t.idempotency[slot] = record

    def remove(self, user_id: UUID, key: str) -> None:
        self._t.idempotency.pop((user_id, key), None)

    def purge(self, *, created_up_to: datetime) -> int:
        expired = [
            slot
            for slot, record in self._t.idempotency.items()
            if record.created_at <= created_up_to
        ]
        for slot in expired:
            del self._t.idempotency[slot]
        return len(expired)


class _PaymentRepository:
    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    def add(self, intent: PaymentIntent) -> None:
        self._t.payments[intent.id] = intent

    def get(self, payment_id: UUID) -> PaymentIntent | None:
        return self._t.payments.get(payment_id)

    def list_for_user(self, user_id: UUID, *, limit: int, offset: int) -> Page[PaymentIntent]:
        mine = [p for p in self._t.payments.values() if p.user_id == user_id]
        mine.sort(key=lambda p: (p.created_at, p.id), reverse=True)
        return Page(
            items=mine[offset : offset + limit], total=len(mine), limit=limit, offset=offset
        )

    def complete(self, payment_id: UUID, status: PaymentStatus, at: datetime) -> bool:
        intent = self._t.payments.get(payment_id)
        if intent is None or intent.status is not PaymentStatus.PENDING:
            return False
        self._t.payments[payment_id] = dataclasses.replace(
            intent, status=status, updated_at=at, completed_at=at
        )
        return True

    def record_event(self, event: ProviderEvent) -> bool:
        if event.event_id in self._t.payment_events:
            return False
        self._t.payment_events[event.event_id] = event
        return True


class _AuditLogRepository:
    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    def add(self, entry: AuditEntry) -> None:
        self._t.audit.append(entry)

    def list_entries(
        self,
        *,
        limit: int,
        offset: int,
        action: AuditAction | None = None,
        target_id: str | None = None,
    ) -> Page[AuditEntry]:
        matching = [
            e
            for e in self._t.audit
            if (action is None or e.action == action)
            and (target_id is None or e.target_id == target_id)
        ]
        matching.sort(key=lambda e: (e.created_at, e.id), reverse=True)
        return Page(
            items=matching[offset : offset + limit], total=len(matching), limit=limit, offset=offset
        )


class _TokenRepository:
    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    def add_all(self, tokens: Sequence[AccessToken]) -> None:
        hashes = {t.token_hash for t in self._t.tokens.values()}
        for token in tokens:
            if token.id in self._t.tokens or token.token_hash in hashes:
                raise Conflict("Token already exists")
            hashes.add(token.token_hash)
        for token in tokens:
            self._t.tokens[token.id] = token

    def get(self, token_id: UUID) -> AccessToken | None:
        return self._t.tokens.get(token_id)

    def get_by_hash(self, token_hash: str) -> AccessToken | None:
        for token in self._t.tokens.values():
            if token.token_hash == token_hash:
                return token
        return None

    def list_for_user(
        self, user_id: UUID, *, now: datetime, active_only: bool, limit: int, offset: int
    ) -> Page[AccessToken]:
        mine = [
            t
            for t in self._t.tokens.values()
            if t.user_id == user_id and (not active_only or t.is_active_at(now))
        ]
        mine.sort(key=lambda t: (t.created_at, t.id), reverse=True)
        return Page(
            items=mine[offset : offset + limit], total=len(mine), limit=limit, offset=offset
        )

    def list_for_purchase(self, bundle_purchase_id: UUID) -> list[AccessToken]:
        tokens = [t for t in self._t.tokens.values() if t.bundle_purchase_id == bundle_purchase_id]
        return sorted(tokens, key=lambda t: t.id)

    def activate(self, token_id: UUID, at: datetime) -> AccessToken | None:
        token = self._t.tokens.get(token_id)
        if token is None or token.activated_at is not None or token.revoked_at is not None:
            return None
        activated = dataclasses.replace(
            token, activated_at=at, expires_at=at + timedelta(hours=token.duration_hours)
        )
        self._t.tokens[token_id] = activated
        return activated

    def revoke(self, token_id: UUID, at: datetime) -> bool:
        token = self._t.tokens.get(token_id)
        if token is None or token.activated_at is not None or token.revoked_at is not None:
            return False
        self._t.tokens[token_id] = dataclasses.replace(token, revoked_at=at)
        return True

    def count_running(self, now: datetime) -> int:
        return sum(
            1 for t in self._t.tokens.values() if t.expires_at is not None and t.expires_at > now
        )


class _BundleRepository:
    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    def add(self, bundle: TokenBundle) -> None:
        self._t.bundles[bundle.id] = bundle

    def get(self, bundle_id: UUID) -> TokenBundle | None:
        return self._t.bundles.get(bundle_id)

    def get_for_update(self, bundle_id: UUID) -> TokenBundle | None:
        # The store lock already keeps every other unit of work out.
        return self._t.bundles.get(bundle_id)

    def update(self, bundle: TokenBundle) -> None:
        current = self._t.bundles.get(bundle.id)
        if current is not None:
            self._t.bundles[bundle.id] = dataclasses.replace(bundle, created_at=current.created_at)

    def catalogue(self, *, active_only: bool) -> list[TokenBundle]:
        bundles = [b for b in self._t.bundles.values() if b.is_active or not active_only]
        return sorted(bundles, key=lambda b: (b.total_price, b.name, b.id))

    def count(self) -> int:
        return len(self._t.bundles)

    def lock_catalogue(self) -> None:
        """Nothing to do: the store lock already serialises units of work."""

    def add_purchase(self, purchase: BundlePurchase) -> None:
        self._t.bundle_purchases[purchase.id] = purchase

    def get_purchase(self, purchase_id: UUID) -> BundlePurchase | None:
        return self._t.bundle_purchases.get(purchase_id)


class _ReferralRepository:
    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    def add(self, bonus: ReferralBonus) -> None:
        if any(b.purchase_id == bonus.purchase_id for b in self._t.referral_bonuses.values()):
            raise Conflict("This purchase already earned a bonus")
        self._t.referral_bonuses[bonus.id] = bonus

    def for_purchase(self, purchase_id: UUID) -> ReferralBonus | None:
        for bonus in self._t.referral_bonuses.values():
            if bonus.purchase_id == purchase_id:
                return bonus
        return None

    def record_clawback(self, bonus_id: UUID, *, taken: Decimal, shortfall: Decimal) -> bool:
        bonus = self._t.referral_bonuses.get(bonus_id)
        if bonus is None or taken + shortfall > bonus.outstanding:
            return False
        self._t.referral_bonuses[bonus_id] = dataclasses.replace(
            bonus, clawed_back=bonus.clawed_back + taken, shortfall=bonus.shortfall + shortfall
        )
        return True

    def add_shares(self, shares: Sequence[ReferralShare]) -> None:
        if any(share.token_id in self._t.referral_shares for share in shares):
            raise Conflict("This token already has a referral share")
        for share in shares:
            self._t.referral_shares[share.token_id] = share

    def share_for_token(self, token_id: UUID) -> ReferralShare | None:
        return self._t.referral_shares.get(token_id)

    def settle_share(
        self,
        token_id: UUID,
        state: ShareState,
        at: datetime,
        *,
        credited: Decimal = ZERO,
        transaction_id: UUID | None = None,
    ) -> bool:
        share = self._t.referral_shares.get(token_id)
        if share is None or share.state is not ShareState.PENDING:
            return False
        self._t.referral_shares[token_id] = dataclasses.replace(
            share, state=state, credited=credited, transaction_id=transaction_id, settled_at=at
        )
        return True

    def pending_total(self, referrer_id: UUID) -> Decimal:
        return sum(
            (
                s.amount
                for s in self._t.referral_shares.values()
                if s.referrer_id == referrer_id and s.state is ShareState.PENDING
            ),
            ZERO,
        )

    def kept_between(self, referrer_id: UUID, start: datetime, end: datetime) -> Decimal:
        credited = sum(
            (
                s.credited
                for s in self._t.referral_shares.values()
                if s.referrer_id == referrer_id
                and s.settled_at is not None
                and start <= s.settled_at < end
            ),
            ZERO,
        )
        return credited + sum(
            (
                b.amount - b.clawed_back
                for b in self._t.referral_bonuses.values()
                if b.referrer_id == referrer_id and start <= b.created_at < end
            ),
            ZERO,
        )

    def lock_referrer(self, referrer_id: UUID) -> None:
        """Nothing to do: the store lock already serialises units of work."""


#: `token_notices` kind of the "expires soon" notice, as in the SQL adapter.
_EXPIRING = "expiring"


class _NotificationPreferenceRepository:
    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    def for_user(self, user_id: UUID) -> dict[NotificationKind, bool]:
        return {
            kind: enabled
            for (owner, kind), enabled in self._t.notification_preferences.items()
            if owner == user_id
        }

    def set(self, user_id: UUID, kind: NotificationKind, enabled: bool, at: datetime) -> None:
        self._t.notification_preferences[(user_id, kind)] = enabled


class _NotificationLogRepository:
    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    def add(self, notification: Notification) -> bool:
        if self.get_by_dedup_key(notification.dedup_key) is not None:
            return False
        self._t.notifications[notification.id] = notification
        return True

    def get(self, notification_id: UUID) -> Notification | None:
        return self._t.notifications.get(notification_id)

    def get_by_dedup_key(self, key: str) -> Notification | None:
        for notification in self._t.notifications.values():
            if notification.dedup_key == key:
                return notification
        return None

    def count_since(self, user_id: UUID, kind: NotificationKind, since: datetime) -> int:
        return sum(
            1
            for n in self._t.notifications.values()
            if n.user_id == user_id and n.kind == kind and n.created_at > since
        )

    def claim(
        self, notification_id: UUID, now: datetime, lease_until: datetime
    ) -> Notification | None:
        current = self._t.notifications.get(notification_id)
        if (
            current is None
            or current.state is not NotificationState.QUEUED
            or current.next_attempt_at > now
            or (current.locked_until is not None and current.locked_until > now)
        ):
            return None
        claimed = dataclasses.replace(
            current, attempts=current.attempts + 1, locked_until=lease_until, updated_at=now
        )
        self._t.notifications[notification_id] = claimed
        return claimed

    def mark_sent(self, notification_id: UUID, at: datetime) -> None:
        current = self._t.notifications.get(notification_id)
        if current is not None:
            self._t.notifications[notification_id] = dataclasses.replace(
                current,
                state=NotificationState.SENT,
                sent_at=at,
                updated_at=at,
                locked_until=None,
                last_error=None,
            )

    def record_failure(
        self, notification_id: UUID, *, error: str, at: datetime, retry_at: datetime | None
    ) -> None:
        current = self._t.notifications.get(notification_id)
        if current is None:
            return
        self._t.notifications[notification_id] = dataclasses.replace(
            current,
            state=NotificationState.FAILED if retry_at is None else NotificationState.QUEUED,
            last_error=error,
            updated_at=at,
            locked_until=None,
            next_attempt_at=current.next_attempt_at if retry_at is None else retry_at,
        )

    def due(self, *, before: datetime, now: datetime, limit: int) -> list[UUID]:
        waiting = [
            n
            for n in self._t.notifications.values()
            if n.state is NotificationState.QUEUED
            and n.next_attempt_at <= before
            and (n.locked_until is None or n.locked_until <= now)
        ]
        waiting.sort(key=lambda n: (n.next_attempt_at, n.id))
        return [n.id for n in waiting[:limit]]

    def list_entries(
        self,
        *,
        limit: int,
        offset: int,
        user_id: UUID | None = None,
        state: NotificationState | None = None,
    ) -> Page[Notification]:
        matching = [
            n
            for n in self._t.notifications.values()
            if (user_id is None or n.user_id == user_id) and (state is None or n.state == state)
        ]
        matching.sort(key=lambda n: (n.created_at, n.id), reverse=True)
        return Page(
            items=matching[offset : offset + limit], total=len(matching), limit=limit, offset=offset
        )


class _TokenNoticeRepository:
    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    def claim_expiring(
        self,
        now: datetime,
        until: datetime,
        *,
        limit: int,
        after: datetime | None = None,
    ) -> list[AccessToken]:
        candidates = [
            t
            for t in self._t.tokens.values()
            if t.revoked_at is None
            and t.expires_at is not None
            and now < t.expires_at <= until
            and (after is None or t.expires_at >= after)
            and (t.id, _EXPIRING) not in self._t.token_notices
        ]
        candidates.sort(key=lambda t: (t.expires_at, t.id))
        claimed = candidates[:limit]
        for token in claimed:
            self._t.token_notices[(token.id, _EXPIRING)] = now
        return claimed


class _ProxySessionRepository:
    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    def get(self, session_id: UUID) -> ProxySession | None:
        return self._t.proxy_sessions.get(session_id)

    def open_for_token(self, token_id: UUID) -> ProxySession | None:
        for session in self._t.proxy_sessions.values():
            if session.token_id == token_id and session.ended_at is None:
                return session
        return None

    def start(self, session: ProxySession) -> bool:
        if self.open_for_token(session.token_id) is not None:
            return False
        self._t.proxy_sessions[session.id] = session
        return True

    def end(self, session_id: UUID, at: datetime, *, idle_before: datetime | None = None) -> bool:
        session = self._t.proxy_sessions.get(session_id)
        if session is None or session.ended_at is not None:
            return False
        if idle_before is not None and session.last_activity >= idle_before:
            return False
        self._t.proxy_sessions[session_id] = dataclasses.replace(session, ended_at=at)
        return True

    def add_usage(self, deltas: Sequence[UsageDelta]) -> None:
        for delta in deltas:
            session = self._t.proxy_sessions.get(delta.session_id)
            if session is None:
                continue
            self._t.proxy_sessions[session.id] = dataclasses.replace(
                session,
                request_count=session.request_count + delta.requests,
                bytes_in=session.bytes_in + delta.bytes_in,
                bytes_out=session.bytes_out + delta.bytes_out,
                last_activity=max(session.last_activity, delta.last_activity),
            )

    def close_idle(self, idle_before: datetime) -> int:
        idle = [
            s
            for s in self._t.proxy_sessions.values()
            if s.ended_at is None and s.last_activity < idle_before
        ]
        for session in idle:
            self._t.proxy_sessions[session.id] = dataclasses.replace(
                session, ended_at=session.last_activity
            )
        return len(idle)

    def list_for_token(self, token_id: UUID) -> list[ProxySession]:
        sessions = [s for s in self._t.proxy_sessions.values() if s.token_id == token_id]
        return sorted(sessions, key=lambda s: (s.started_at, s.id))

    def count_open(self) -> int:
        return sum(1 for s in self._t.proxy_sessions.values() if s.ended_at is None)


class _TokenExpiryRepository:
    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    def claim_expired(self, now: datetime, *, limit: int) -> list[AccessToken]:
        candidates = [
            t
            for t in self._t.tokens.values()
            if t.revoked_at is None
            and t.expires_at is not None
            and t.expires_at <= now
            and t.id not in self._t.token_expiries
        ]
        candidates.sort(key=lambda t: (t.expires_at, t.id))
        claimed = candidates[:limit]
        for token in claimed:
            self._t.token_expiries[token.id] = now
        return claimed


class _WebhookRepository:
    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    def add_endpoint(self, endpoint: WebhookEndpoint) -> None:
        self._t.webhook_endpoints[endpoint.id] = endpoint

    def get_endpoint(self, endpoint_id: UUID) -> WebhookEndpoint | None:
        return self._t.webhook_endpoints.get(endpoint_id)

    def endpoints_for_user(self, user_id: UUID) -> list[WebhookEndpoint]:
        found = [e for e in self._t.webhook_endpoints.values() if e.user_id == user_id]
        return sorted(found, key=lambda e: (e.created_at, e.id))

    def active_endpoints(self, user_id: UUID) -> list[WebhookEndpoint]:
        found = [
            e for e in self._t.webhook_endpoints.values() if e.is_active and e.user_id == user_id
        ]
        return sorted(found, key=lambda e: (e.created_at, e.id))

    def _set(self, endpoint_id: UUID, **changes: object) -> WebhookEndpoint | None:
        current = self._t.webhook_endpoints.get(endpoint_id)
        if current is None:
            return None
        updated = dataclasses.replace(current, **changes)  # type: ignore[arg-type]
        self._t.webhook_endpoints[endpoint_id] = updated
        return updated

    def change_endpoint(
        self,
        endpoint_id: UUID,
        *,
        at: datetime,
        url: str | None = None,
        events: tuple[str, ...] | None = None,
        is_active: bool | None = None,
    ) -> WebhookEndpoint | None:
        current = self._t.webhook_endpoints.get(endpoint_id)
        if current is None:
            return None
        changes: dict[str, object] = {"updated_at": at}
        if url is not None:
            changes["url"] = url
        if events is not None:
            changes["events"] = tuple(events)
        if is_active is not None:
            changes["is_active"] = is_active
        if is_active is True and not current.is_active:
            changes.update(failing_since=None, disabled_at=None)
        return self._set(endpoint_id, **changes)

    def rotate_secret(
        self, endpoint_id: UUID, secret_encrypted: str, *, previous_until: datetime, at: datetime
    ) -> WebhookEndpoint | None:
        current = self._t.webhook_endpoints.get(endpoint_id)
        if current is None:
            return None
        return self._set(
            endpoint_id,
            secret_encrypted=secret_encrypted,
            previous_secret_encrypted=current.secret_encrypted,
            previous_secret_until=previous_until,
            updated_at=at,
        )

    def mark_failing(self, endpoint_id: UUID, at: datetime) -> None:
        current = self._t.webhook_endpoints.get(endpoint_id)
        if current is not None and current.is_active and current.failing_since is None:
            self._set(endpoint_id, failing_since=at, updated_at=at)

    def clear_failing(self, endpoint_id: UUID, at: datetime) -> None:
        current = self._t.webhook_endpoints.get(endpoint_id)
        if current is not None and current.failing_since is not None:
            self._set(endpoint_id, failing_since=None, updated_at=at)

    def disable_failing(
        self, endpoint_id: UUID, *, failing_since_before: datetime, at: datetime
    ) -> WebhookEndpoint | None:
        current = self._t.webhook_endpoints.get(endpoint_id)
        if (
            current is None
            or not current.is_active
            or current.failing_since is None
            or current.failing_since > failing_since_before
        ):
            return None
        return self._set(endpoint_id, is_active=False, disabled_at=at, updated_at=at)

    def delete_endpoint(self, endpoint_id: UUID) -> None:
        self._t.webhook_endpoints.pop(endpoint_id, None)
        gone = {d.id for d in self._t.webhook_deliveries.values() if d.endpoint_id == endpoint_id}
        for delivery_id in gone:
            del self._t.webhook_deliveries[delivery_id]
        self._t.webhook_attempts[:] = [
            a for a in self._t.webhook_attempts if a.delivery_id not in gone
        ]

    def add_delivery(self, delivery: WebhookDelivery) -> bool:
        for existing in self._t.webhook_deliveries.values():
            if (existing.event_id, existing.endpoint_id) == (
                delivery.event_id,
                delivery.endpoint_id,
            ):
                return False
        self._t.webhook_deliveries[delivery.id] = delivery
        return True

    def get_delivery(self, delivery_id: UUID) -> WebhookDelivery | None:
        return self._t.webhook_deliveries.get(delivery_id)

    def delivery_for(self, event_id: UUID, endpoint_id: UUID) -> WebhookDelivery | None:
        for delivery in self._t.webhook_deliveries.values():
            if (delivery.event_id, delivery.endpoint_id) == (event_id, endpoint_id):
                return delivery
        return None

    def deliveries_for_endpoint(self, endpoint_id: UUID, *, limit: int) -> list[WebhookDelivery]:
        found = [d for d in self._t.webhook_deliveries.values() if d.endpoint_id == endpoint_id]
        found.sort(key=lambda d: (d.created_at, d.id), reverse=True)
        return found[:limit]

    def claim_delivery(
        self, delivery_id: UUID, now: datetime, lease_until: datetime
    ) -> WebhookDelivery | None:
        current = self._t.webhook_deliveries.get(delivery_id)
        if (
            current is None
            or current.state is not DeliveryState.PENDING
            or current.next_attempt_at is None
            or current.next_attempt_at > now
            or (current.locked_until is not None and current.locked_until > now)
        ):
            return None
        claimed = dataclasses.replace(
            current, attempts=current.attempts + 1, locked_until=lease_until, updated_at=now
        )
        self._t.webhook_deliveries[delivery_id] = claimed
        return claimed

    def record_attempt(
        self,
        attempt: DeliveryAttempt,
        *,
        state: DeliveryState,
        next_attempt_at: datetime | None,
    ) -> None:
        self._t.webhook_attempts.append(attempt)
        current = self._t.webhook_deliveries.get(attempt.delivery_id)
        if current is not None:
            self._t.webhook_deliveries[attempt.delivery_id] = dataclasses.replace(
                current,
                state=state,
                next_attempt_at=next_attempt_at,
                last_status_code=attempt.status_code,
                locked_until=None,
                updated_at=attempt.attempted_at,
            )

    def attempts(self, delivery_id: UUID) -> list[DeliveryAttempt]:
        found = [a for a in self._t.webhook_attempts if a.delivery_id == delivery_id]
        return sorted(found, key=lambda a: (a.attempted_at, a.id))

    def requeue_delivery(self, delivery_id: UUID, now: datetime) -> None:
        current = self._t.webhook_deliveries.get(delivery_id)
        if current is not None:
            self._t.webhook_deliveries[delivery_id] = dataclasses.replace(
                current, state=DeliveryState.PENDING, next_attempt_at=now, updated_at=now
            )

    def due_deliveries(self, *, before: datetime, now: datetime, limit: int) -> list[UUID]:
        found = [
            d
            for d in self._t.webhook_deliveries.values()
            if d.state is DeliveryState.PENDING
            and d.next_attempt_at is not None
            and d.next_attempt_at <= before
            and (d.locked_until is None or d.locked_until <= now)
        ]
        found.sort(key=lambda d: (d.next_attempt_at or now, d.id))
        return [d.id for d in found[:limit]]


class _AnalyticsQueries:
    """The analytics port by plain iteration: the reference the SQL aggregates must match."""

    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    def _sessions(self, start: datetime, end: datetime) -> list[ProxySession]:
        return [s for s in self._t.proxy_sessions.values() if start <= s.started_at < end]

    def usage(self, user_id: UUID, window: Window) -> tuple[list[UsageBucketRow], LiveUsage]:
        return self._usage_by_bucket(user_id, window), self._live_usage(user_id, window.end)

    def _usage_by_bucket(self, user_id: UUID, window: Window) -> list[UsageBucketRow]:
        sums: dict[int, list[int]] = {}
        for session in self._sessions(window.start, window.end):
            if session.user_id != user_id:
                continue
            row = sums.setdefault(window.bucket_index(session.started_at), [0, 0, 0, 0])
            row[0] += session.request_count
            row[1] += session.bytes_in + session.bytes_out
            row[2] += 1
            row[3] += session_microseconds(session.started_at, session.ended_at, window.end)
        return [UsageBucketRow(index, *values) for index, values in sorted(sums.items())]

    def _live_usage(self, user_id: UUID, now: datetime) -> LiveUsage:
        return LiveUsage(
            active_sessions=sum(
                1
                for s in self._t.proxy_sessions.values()
                if s.user_id == user_id and s.ended_at is None
            ),
            active_tokens=sum(
                1 for t in self._t.tokens.values() if t.user_id == user_id and t.is_active_at(now)
            ),
        )

    def activity(self, window: Window, *, limit: int) -> Activity:
        return Activity(
            buckets=self._activity(window),
            top_users=self._top_users(window, limit),
            active_users=self._active_users(window.start, window.end),
            daily_active_users=self._active_users(window.end - DAU_SPAN, window.end),
        )

    def _activity(self, window: Window) -> list[ActivityBucketRow]:
        rows: dict[int, ActivityBucketRow] = {}

        def add(moment: datetime, name: str, amount: int | Decimal) -> None:
            index = window.bucket_index(moment)
            row = rows.get(index) or ActivityBucketRow(index)
            rows[index] = dataclasses.replace(row, **{name: getattr(row, name) + amount})

        for user in self._t.users.values():
            if window.contains(user.created_at):
                add(user.created_at, "new_users", 1)
        for entry in self._t.ledger:
            if not window.contains(entry.created_at):
                continue
            kind, at = entry.transaction_type, entry.created_at
            if kind == TransactionType.PURCHASE:
                add(at, "revenue", -entry.amount)
                if entry.reference_type == TOKEN_REFERENCE:
                    add(at, "token_purchases", 1)
                elif entry.reference_type == BUNDLE_PURCHASE_REFERENCE:
                    add(at, "bundle_purchases", 1)
            elif kind == TransactionType.REFUND:
                add(at, "refunds", entry.amount)
            elif kind == TransactionType.REFERRAL_BONUS:
                add(at, "referral_bonuses", entry.amount)
        users: dict[int, set[UUID]] = {}
        for session in self._sessions(window.start, window.end):
            add(session.started_at, "proxy_requests", session.request_count)
            add(session.started_at, "bytes_transferred", session.bytes_in + session.bytes_out)
            users.setdefault(window.bucket_index(session.started_at), set()).add(session.user_id)
        for index, seen in users.items():
            rows[index] = dataclasses.replace(rows[index], active_users=len(seen))
        return [rows[index] for index in sorted(rows)]

    def _active_users(self, start: datetime, end: datetime) -> int:
        return len({s.user_id for s in self._sessions(start, end)})

    def _top_users(self, window: Window, limit: int) -> list[TopUser]:
        sums: dict[UUID, list[int]] = {}
        for session in self._sessions(window.start, window.end):
            row = sums.setdefault(session.user_id, [0, 0])
            row[0] += session.request_count
            row[1] += session.bytes_in + session.bytes_out
        ranked = sorted(sums.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))
        return [
            TopUser(
                user_id=user_id,
                email=self._t.users[user_id].email,
                requests=requests,
                bytes_transferred=transferred,
            )
            for user_id, (requests, transferred) in ranked[:limit]
        ]


class InMemoryUnitOfWork:
    users: _UserRepository
    ledger: _LedgerRepository
    outbox: _OutboxRepository
    idempotency: _IdempotencyRepository
    payments: _PaymentRepository
    audit: _AuditLogRepository
    tokens: _TokenRepository
    bundles: _BundleRepository
    referrals: _ReferralRepository
    notification_preferences: _NotificationPreferenceRepository
    notifications: _NotificationLogRepository
    token_notices: _TokenNoticeRepository
    proxy_sessions: _ProxySessionRepository
    token_expiries: _TokenExpiryRepository
    webhooks: _WebhookRepository
    analytics: _AnalyticsQueries

    def __init__(
        self,
        store: MemoryStore,
        after_commit: AfterCommit | None = None,
        on_ledger: LedgerObserver | None = None,
        worker_events: frozenset[str] | None = None,
    ) -> None:
        self._store = store
        self._worker_events = worker_events
        self._working: _Tables | None = None
        self.committed = False
        self._after_commit = after_commit
        self._on_ledger = on_ledger
        self._committed_events: list[OutboxEvent] = []
        self._committed_entries: list[LedgerEntry] = []

    def __enter__(self) -> Self:
        self._store.lock.acquire()
        self._working = self._store.tables.copy()
        self._rebind(self._working)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._working = None
        self._store.lock.release()
        # Outside the store lock, like the SQL adapter's hook runs outside its transaction.
        entries, self._committed_entries = self._committed_entries, []
        if entries and self._on_ledger is not None:
            self._on_ledger(entries)
        events, self._committed_events = self._committed_events, []
        if events and self._after_commit is not None:
            self._after_commit(events)

    def commit(self) -> None:
        if self._working is None:
            raise RuntimeError("commit() outside the unit of work's `with` block")
        self._store.tables = self._working
        self._committed_events.extend(self.outbox.added)
        self._committed_entries.extend(self.ledger.added)
        # Later work in the same block starts from what was just committed.
        self._working = self._working.copy()
        self._rebind(self._working)
        self.committed = True

    def rollback(self) -> None:
        if self._working is None:
            raise RuntimeError("rollback() outside the unit of work's `with` block")
        self._working = self._store.tables.copy()
        self._rebind(self._working)

    def _rebind(self, tables: _Tables) -> None:
        self.users = _UserRepository(tables)
        self.ledger = _LedgerRepository(tables)
        self.outbox = _OutboxRepository(tables, self._worker_events)
        self.idempotency = _IdempotencyRepository(tables)
        self.payments = _PaymentRepository(tables)
        self.audit = _AuditLogRepository(tables)
        self.tokens = _TokenRepository(tables)
        self.bundles = _BundleRepository(tables)
        self.referrals = _ReferralRepository(tables)
        self.notification_preferences = _NotificationPreferenceRepository(tables)
        self.notifications = _NotificationLogRepository(tables)
        self.token_notices = _TokenNoticeRepository(tables)
        self.proxy_sessions = _ProxySessionRepository(tables)
        self.token_expiries = _TokenExpiryRepository(tables)
        self.webhooks = _WebhookRepository(tables)
        self.analytics = _AnalyticsQueries(tables)
