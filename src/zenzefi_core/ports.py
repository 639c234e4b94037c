"""The ports: what the use cases need from the outside world, as small Protocols.

Two adapters implement the persistence ports (in-memory and SQLAlchemy) and one contract test
suite runs against both, so the fake cannot drift from the real thing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Generic, Protocol, Self, TypeVar
from uuid import UUID

from zenzefi_core.analytics import (
    Activity,
    LiveUsage,
    UsageBucketRow,
    Window,
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
from zenzefi_core.domain.notifications import (
    Notification,
    NotificationKind,
    NotificationState,
)
from zenzefi_core.domain.proxy import ProxySession, UsageDelta
from zenzefi_core.domain.referrals import ReferralBonus, ReferralShare, ShareState
from zenzefi_core.domain.tokens import AccessToken
from zenzefi_core.domain.webhooks import (
    DeliveryAttempt,
    DeliveryState,
    WebhookDelivery,
    WebhookEndpoint,
)
from zenzefi_core.money import ZERO
from zenzefi_core.money_audit import MoneyFacts

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list, with the total the filter matches."""

    items: Sequence[T]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    """Events written but not yet handed to the broker, and when the oldest was written."""

    pending: int
    oldest_created_at: datetime | None


@dataclass(frozen=True, slots=True)
class LedgerDiscrepancy:
    """A user whose wallet breaks an invariant: balance ≠ sum of entries, or balance < 0."""

    user_id: UUID
    username: str
    balance: Decimal
    ledger_total: Decimal


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class PasswordHasher(Protocol):
    def hash(self, password: str) -> str: ...

    def verify(self, password_hash: str, password: str) -> bool: ...


class UserRepository(Protocol):
    def add(self, user: User) -> None:
        """Store a new user; raises `DuplicateUser` when the email, username or code is taken."""
        ...

    def get(self, user_id: UUID) -> User | None: ...

    def get_by_email(self, email: str) -> User | None:
        """Look up by email, case-insensitively."""
        ...

    def get_by_username(self, username: str) -> User | None:
        """Look up by username, case-insensitively."""
        ...

    def get_by_referral_code(self, code: str) -> User | None: ...

    # Each change below writes only its own column(s), in one statement, so two use cases
    # changing one account at once cannot undo each other (a profile change read before a ban
    # never writes `is_active` back). Each returns the account as it is now, None when there
    # is no such account. None of them touches `balance`: only `change_balance` does.

    def set_full_name(self, user_id: UUID, full_name: str | None) -> User | None: ...

    def set_password(self, user_id: UUID, password_hash: str) -> User | None: ...

    def set_active(self, user_id: UUID, active: bool) -> User | None: ...

    def set_superuser(self, user_id: UUID, superuser: bool) -> User | None: ...

    def end_sessions(self, user_id: UUID) -> User | None:
        """Raise `session_version` by one (`SET v = v + 1`, never a value read earlier), so
        every login token issued before is refused from now on."""
        ...

    def change_balance(self, user_id: UUID, delta: Decimal) -> Decimal | None:
        """Add `delta` (signed) to the balance unless that would take it below zero.

        One conditional statement, so concurrent debits can never overspend. Returns the new
        balance, or None when the user does not exist or the balance is too small.
        """
        ...

    def search(
        self,
        *,
        limit: int,
        offset: int,
        query: str | None = None,
        is_active: bool | None = None,
        is_superuser: bool | None = None,
    ) -> Page[User]:
        """Users whose email or username contains `query` (case-insensitively), newest first."""
        ...

    def referrals(self, referrer_id: UUID, *, limit: int, offset: int) -> Page[User]:
        """The users `referrer_id` brought in, in the order they joined."""
        ...


class LedgerRepository(Protocol):
    def add(self, entry: LedgerEntry) -> None: ...

    def list_for_user(
        self,
        user_id: UUID,
        *,
        limit: int,
        offset: int,
        transaction_type: TransactionType | None = None,
    ) -> Page[LedgerEntry]:
        """The user's entries, newest first."""
        ...

    def total_for_user(self, user_id: UUID) -> Decimal:
        """The sum of the user's entries (what the balance must equal)."""
        ...

    def referral_earnings(self, user_id: UUID) -> Decimal:
        """Referral bonuses minus clawbacks on the user's ledger, summed by the store."""
        ...

    def discrepancies(self) -> list[LedgerDiscrepancy]:
        """Every user whose balance differs from the sum of their entries or is negative."""
        ...

    def count_users(self) -> int:
        """How many wallets `discrepancies` examined."""
        ...

    def money_facts(self) -> MoneyFacts:
        """What `zenzefi check-ledger` needs to trace every entry to its cause and every
        referral bonus to a purchase that stayed paid: the users' referral links, the entries
        that name one of the product's own records, and those records (tokens, bundle
        purchases, payments; the adjustments are the audit log's). Called first in its unit of
        work, they are one snapshot of the store, so an entry and the record it names agree
        even while the shop runs."""
        ...


class OutboxRepository(Protocol):
    def add(self, event: OutboxEvent) -> None: ...

    def add_all(self, events: Sequence[OutboxEvent]) -> None:
        """Store many events in one statement (a scan's whole batch)."""
        ...

    def get(self, event_id: UUID) -> OutboxEvent | None: ...

    def pending(self, *, limit: int) -> list[OutboxEvent]:
        """Undispatched events, oldest first.

        On PostgreSQL the rows are locked until the transaction ends and rows another transaction
        holds are skipped, so two relays running at once take different events.
        """
        ...

    def mark_dispatched(self, event_ids: Sequence[UUID], at: datetime) -> None: ...

    def backlog(self) -> OutboxBacklog:
        """How many events wait for the broker and the oldest one's `created_at`; one indexed
        aggregate, cheap enough for every metrics scrape."""
        ...


class IdempotencyRepository(Protocol):
    def get(self, user_id: UUID, key: str) -> IdempotencyRecord | None: ...

    def add(self, record: IdempotencyRecord) -> None:
        """Store a first result; raises `IdempotencyConflict` when the key is already used."""
        ...

    def remove(self, user_id: UUID, key: str) -> None:
        """Forget one key (it outlived its lifetime)."""
        ...

    def purge(self, *, created_up_to: datetime) -> int:
        """Delete every key created at or before `created_up_to`, in one statement; how
        many."""
        ...


class PaymentRepository(Protocol):
    def add(self, intent: PaymentIntent) -> None: ...

    def get(self, payment_id: UUID) -> PaymentIntent | None: ...

    def list_for_user(self, user_id: UUID, *, limit: int, offset: int) -> Page[PaymentIntent]:
        """The user's payment intents, newest first."""
        ...

    def complete(self, payment_id: UUID, status: PaymentStatus, at: datetime) -> bool:
        """Move a pending intent to a final status; False when it was no longer pending.

        One conditional statement, so two callbacks racing for the same intent cannot both win.
        """
        ...

    def record_event(self, event: ProviderEvent) -> bool:
        """Remember a processed provider event; False when its id was seen before."""
        ...


class AuditLogRepository(Protocol):
    def add(self, entry: AuditEntry) -> None: ...

    def list_entries(
        self,
        *,
        limit: int,
        offset: int,
        action: AuditAction | None = None,
        target_id: str | None = None,
    ) -> Page[AuditEntry]:
        """Operator actions, newest first."""
        ...


class TokenRepository(Protocol):
    def add_all(self, tokens: Sequence[AccessToken]) -> None:
        """Store newly issued tokens (one statement for a whole bundle)."""
        ...

    def get(self, token_id: UUID) -> AccessToken | None: ...

    def get_by_hash(self, token_hash: str) -> AccessToken | None: ...

    def list_for_user(
        self, user_id: UUID, *, now: datetime, active_only: bool, limit: int, offset: int
    ) -> Page[AccessToken]:
        """The user's tokens, newest first; `active_only`: neither revoked nor expired at `now`."""
        ...

    def list_for_purchase(self, bundle_purchase_id: UUID) -> list[AccessToken]:
        """The tokens of one bundle purchase, in the order they were issued."""
        ...

    def activate(self, token_id: UUID, at: datetime) -> AccessToken | None:
        """Start the token's clock at `at` unless it has started or the token is revoked.

        One conditional statement (`... WHERE activated_at IS NULL`), so of two first requests
        racing, exactly one activates. Returns the activated token, or None when nothing changed.
        """
        ...

    def revoke(self, token_id: UUID, at: datetime) -> bool:
        """Revoke a token never activated; one conditional statement, so a revocation racing an
        activation (or another revocation) cannot both win. False when nothing changed."""
        ...

    def count_running(self, now: datetime) -> int:
        """Tokens activated and not yet expired at `now` (an activated token cannot be
        revoked); one indexed count on `expires_at`."""
        ...


class BundleRepository(Protocol):
    def add(self, bundle: TokenBundle) -> None: ...

    def get(self, bundle_id: UUID) -> TokenBundle | None: ...

    def get_for_update(self, bundle_id: UUID) -> TokenBundle | None:
        """Read a bundle and hold its row until the transaction ends: a change derives the
        prices from several fields at once, so it must start from the current row and no
        other change may come in between (on PostgreSQL a row lock; SQLite and the memory
        adapter serialise writers anyway)."""
        ...

    def update(self, bundle: TokenBundle) -> None:
        """Save every field but `id` and `created_at`, of a bundle read with `get_for_update`
        in the same transaction (anything else could write back a stale field)."""
        ...

    def catalogue(self, *, active_only: bool) -> list[TokenBundle]:
        """Bundles ordered by total price (then name and id, so the order is stable)."""
        ...

    def count(self) -> int: ...

    def lock_catalogue(self) -> None:
        """Keep other writers of the catalogue out until this transaction ends, so two
        processes seeding an empty database at once cannot both add the defaults."""
        ...

    def add_purchase(self, purchase: BundlePurchase) -> None: ...

    def get_purchase(self, purchase_id: UUID) -> BundlePurchase | None: ...


class ReferralRepository(Protocol):
    def add(self, bonus: ReferralBonus) -> None:
        """Store a bonus credited at purchase (kept for tests of databases from before shares;
        the shop itself now records `ReferralShare`s)."""
        ...

    def for_purchase(self, purchase_id: UUID) -> ReferralBonus | None:
        """The bonus credited at purchase for a purchase (a token or a bundle purchase), on a
        database from before shares."""
        ...

    def add_shares(self, shares: Sequence[ReferralShare]) -> None:
        """Store the pending shares of one purchase's bonus (one statement for a bundle)."""
        ...

    def share_for_token(self, token_id: UUID) -> ReferralShare | None: ...

    def settle_share(
        self,
        token_id: UUID,
        state: ShareState,
        at: datetime,
        *,
        credited: Decimal = ZERO,
        transaction_id: UUID | None = None,
    ) -> bool:
        """Move a pending share to its final state; one conditional statement, so a share is
        settled once. False when it was no longer pending."""
        ...

    def pending_total(self, referrer_id: UUID) -> Decimal:
        """The referrer's shares still pending, summed by the store."""
        ...

    def record_clawback(self, bonus_id: UUID, *, taken: Decimal, shortfall: Decimal) -> bool:
        """Add to what refunds reversed of a bonus, never beyond the bonus itself (one
        conditional statement); False when that would reverse more than is outstanding."""
        ...

    def kept_between(self, referrer_id: UUID, start: datetime, end: datetime) -> Decimal:
        """What the referrer was paid in [start, end) and still holds: the shares credited in
        it, plus bonuses credited at purchase in it minus what refunds took back of them;
        summed by the store."""
        ...

    def lock_referrer(self, referrer_id: UUID) -> None:
        """Hold the referrer's account row until the transaction ends, so that concurrent
        payments respect the monthly cap and a clawback sees the balance it takes from."""
        ...


class NotificationPreferenceRepository(Protocol):
    def for_user(self, user_id: UUID) -> dict[NotificationKind, bool]:
        """The kinds the user has set; a kind missing here is on (the default)."""
        ...

    def set(self, user_id: UUID, kind: NotificationKind, enabled: bool, at: datetime) -> None:
        """Insert or replace one preference, in one statement."""
        ...


class NotificationLogRepository(Protocol):
    """The notification log: every email, its state and its attempts."""

    def add(self, notification: Notification) -> bool:
        """Store a new email; False, and nothing stored, when its dedup key is already logged."""
        ...

    def get(self, notification_id: UUID) -> Notification | None: ...

    def get_by_dedup_key(self, key: str) -> Notification | None: ...

    def count_since(self, user_id: UUID, kind: NotificationKind, since: datetime) -> int:
        """Emails of this kind logged for the user after `since`, in any state."""
        ...

    def claim(
        self, notification_id: UUID, now: datetime, lease_until: datetime
    ) -> Notification | None:
        """Take a queued email for one attempt at sending it, and count the attempt.

        One conditional statement: it succeeds only while the email is queued, its next attempt
        is due and no other worker holds a lease on it, so of two workers holding the same
        message exactly one sends. None when there is nothing to do.
        """
        ...

    def mark_sent(self, notification_id: UUID, at: datetime) -> None: ...

    def record_failure(
        self, notification_id: UUID, *, error: str, at: datetime, retry_at: datetime | None
    ) -> None:
        """Release the lease after a failed attempt: queued again until `retry_at`, or failed
        for good when `retry_at` is None."""
        ...

    def due(self, *, before: datetime, now: datetime, limit: int) -> list[UUID]:
        """Queued emails nobody holds whose next attempt was due before `before`, oldest first."""
        ...

    def list_entries(
        self,
        *,
        limit: int,
        offset: int,
        user_id: UUID | None = None,
        state: NotificationState | None = None,
    ) -> Page[Notification]:
        """The log, newest first."""
        ...


class TokenNoticeRepository(Protocol):
    def claim_expiring(
        self,
        now: datetime,
        until: datetime,
        *,
        limit: int,
        after: datetime | None = None,
    ) -> list[AccessToken]:
        """Tokens not revoked that expire after `now` and no later than `until`, and that no
        earlier scan has claimed: records each one as told and returns them, soonest first.

        `after` (the last `expires_at` the previous batch returned) lets a scan walk the window
        instead of skipping past every token it already claimed at each batch.

        The same two statements however many tokens there are: one select, one insert that
        skips any token a concurrent scan claimed in the meantime (and leaves it out of the
        result).
        """
        ...


@dataclass(frozen=True, slots=True)
class EmailMessage:
    recipient: str
    subject: str
    text: str
    html: str
    #: The same on every attempt for one notification, so a receiver can drop a duplicate.
    message_id: str
    unsubscribe_url: str | None = None


class Mailer(Protocol):
    def send(self, message: EmailMessage) -> None:
        """Hand one email over for delivery; raises `MailDeliveryFailed`, with `permanent` set
        when trying again cannot help (the server refused the recipient)."""
        ...


class EventPublisher(Protocol):
    def publish(self, event: OutboxEvent) -> None:
        """Hand one event to the message broker. Returns only once the broker has accepted it,
        and raises `BrokerUnavailable` otherwise, so an event is marked dispatched only when it
        really left."""
        ...


@dataclass(frozen=True, slots=True)
class ProviderCallback:
    """A verified provider notification about one payment."""

    event_id: str
    payment_id: UUID
    status: PaymentStatus
    amount_rub: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Checkout:
    """Where the provider will take the user's money."""

    payment_url: str


class PaymentProvider(Protocol):
    """The payment service: starts a checkout, and proves its callbacks are genuine."""

    @property
    def name(self) -> str: ...

    def start_checkout(
        self, payment_id: UUID, amount_rub: Decimal, description: str
    ) -> Checkout: ...

    def verify_callback(self, headers: Mapping[str, str], body: bytes) -> ProviderCallback:
        """Check the signature and freshness and parse the body; raises `InvalidSignature`
        for a forged or stale callback and `PaymentMismatch` for an unreadable one."""
        ...


class ProxySessionRepository(Protocol):
    def get(self, session_id: UUID) -> ProxySession | None: ...

    def open_for_token(self, token_id: UUID) -> ProxySession | None:
        """The token's open session (`ended_at` null), if it has one."""
        ...

    def start(self, session: ProxySession) -> bool:
        """Open a session unless the token already has an open one; False then, and nothing
        stored. One conditional insert against a unique index on the open sessions, so of two
        devices racing for an idle token exactly one gets it."""
        ...

    def end(self, session_id: UUID, at: datetime, *, idle_before: datetime | None = None) -> bool:
        """Close an open session (only if its last activity is before `idle_before`, when
        given); one conditional statement. False when nothing changed."""
        ...

    def add_usage(self, deltas: Sequence[UsageDelta]) -> None:
        """Add each delta to its session's counters and move `last_activity` forward (never
        back); one batch of statements for the whole flush."""
        ...

    def close_idle(self, idle_before: datetime) -> int:
        """End every open session whose last activity is before `idle_before`, at that last
        activity (its real end, not the moment the cleanup noticed); how many."""
        ...

    def list_for_token(self, token_id: UUID) -> list[ProxySession]:
        """The token's sessions, oldest first."""
        ...

    def count_open(self) -> int:
        """Sessions not ended (one device holding each token); one indexed count."""
        ...


class TokenExpiryRepository(Protocol):
    def claim_expired(self, now: datetime, *, limit: int) -> list[AccessToken]:
        """Tokens that expired by `now` (not revoked) and no earlier scan reported: records
        each as reported and returns them, oldest expiry first. A token a concurrent scan
        claimed in the meantime is left out, so each is reported once."""
        ...


class WebhookRepository(Protocol):
    """Webhook endpoints, their deliveries and each delivery's attempts."""

    def add_endpoint(self, endpoint: WebhookEndpoint) -> None: ...

    def get_endpoint(self, endpoint_id: UUID) -> WebhookEndpoint | None: ...

    def endpoints_for_user(self, user_id: UUID) -> list[WebhookEndpoint]:
        """The user's endpoints, oldest first."""
        ...

    def active_endpoints(self, user_id: UUID) -> list[WebhookEndpoint]:
        """The user's active endpoints (the fan-out filters them by event)."""
        ...

    # The owner's changes and the worker's failure tracking each write only their own
    # columns, in one statement, so neither can undo the other: a rotation or a disable racing
    # a delivery's failure both stay.

    def change_endpoint(
        self,
        endpoint_id: UUID,
        *,
        at: datetime,
        url: str | None = None,
        events: tuple[str, ...] | None = None,
        is_active: bool | None = None,
    ) -> WebhookEndpoint | None:
        """Set what is given (None leaves a field alone) and `updated_at`. Turning an inactive
        endpoint on also clears `failing_since` and `disabled_at`, judged on the row as it is
        when the statement runs. The endpoint as it is now; None when there is none."""
        ...

    def rotate_secret(
        self, endpoint_id: UUID, secret_encrypted: str, *, previous_until: datetime, at: datetime
    ) -> WebhookEndpoint | None:
        """Make `secret_encrypted` the secret, and the one stored until now (not one read
        earlier) the previous secret, valid until `previous_until`."""
        ...

    def mark_failing(self, endpoint_id: UUID, at: datetime) -> None:
        """Start the endpoint's run of failures at `at`, unless one has started or it is off."""
        ...

    def clear_failing(self, endpoint_id: UUID, at: datetime) -> None:
        """End the endpoint's run of failures (a delivery succeeded)."""
        ...

    def disable_failing(
        self, endpoint_id: UUID, *, failing_since_before: datetime, at: datetime
    ) -> WebhookEndpoint | None:
        """Switch off an active endpoint whose run of failures began at or before
        `failing_since_before`; the endpoint when this call disabled it, else None."""
        ...

    def delete_endpoint(self, endpoint_id: UUID) -> None:
        """Remove the endpoint with its deliveries and their attempts."""
        ...

    def add_delivery(self, delivery: WebhookDelivery) -> bool:
        """Store a new delivery; False, and nothing stored, when the endpoint already has one
        for this event."""
        ...

    def get_delivery(self, delivery_id: UUID) -> WebhookDelivery | None: ...

    def delivery_for(self, event_id: UUID, endpoint_id: UUID) -> WebhookDelivery | None:
        """The endpoint's delivery of this event, if the event was fanned out already."""
        ...

    def deliveries_for_endpoint(self, endpoint_id: UUID, *, limit: int) -> list[WebhookDelivery]:
        """The endpoint's deliveries, newest first."""
        ...

    def claim_delivery(
        self, delivery_id: UUID, now: datetime, lease_until: datetime
    ) -> WebhookDelivery | None:
        """Take a pending, due delivery nobody holds for one attempt and count the attempt; one
        conditional statement, so of two workers holding the same message one sends."""
        ...

    def record_attempt(
        self,
        attempt: DeliveryAttempt,
        *,
        state: DeliveryState,
        next_attempt_at: datetime | None,
    ) -> None:
        """Log an attempt and release the delivery's lease, with its new state."""
        ...

    def attempts(self, delivery_id: UUID) -> list[DeliveryAttempt]:
        """The delivery's attempts, oldest first."""
        ...

    def requeue_delivery(self, delivery_id: UUID, now: datetime) -> None:
        """Make a delivery pending and due now (a manual redelivery)."""
        ...

    def due_deliveries(self, *, before: datetime, now: datetime, limit: int) -> list[UUID]:
        """Pending deliveries nobody holds whose next attempt was due before `before`."""
        ...


class WebhookSender(Protocol):
    def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, addresses: Sequence[str]
    ) -> tuple[int, bytes]:
        """POST the body without following redirects; the status and at most the configured
        number of bytes of the answer. Connects only to one of `addresses` (the ones the URL's
        host resolved to when it was checked), never resolving the host again; the host name
        stays the `Host` header and the name TLS verifies. Raises `WebhookSendFailed` when the
        receiver cannot be reached or does not answer within the timeout."""
        ...


class AccessCache(Protocol):
    """A small shared key-value cache with expiry (in-process, or Redis across processes).

    Keys and values are short strings. Every method may be called from any thread.
    """

    def get(self, key: str) -> str | None: ...

    def add(self, key: str, value: str, ttl_seconds: float) -> bool:
        """Store unless the key is present (atomically); False when it was."""
        ...

    def set(self, key: str, value: str, ttl_seconds: float) -> None: ...

    def delete(self, key: str) -> None: ...


class AnalyticsQueries(Protocol):
    """Usage and business figures, aggregated by the store: one row per non-empty bucket (see
    `zenzefi_core.analytics` for the rules), never the rows themselves, so a month of a heavy
    user costs one grouped scan of an index."""

    def usage(self, user_id: UUID, window: Window) -> tuple[list[UsageBucketRow], LiveUsage]:
        """The user's sessions started in the window, summed per bucket of their start (the
        durations run to `window.end` for sessions still open, or ended after it); and what
        they have going at `window.end`: open sessions, tokens neither revoked nor expired.
        One call for both, so that a store can answer a user's report in one round trip."""
        ...

    def activity(self, window: Window, *, limit: int) -> Activity:
        """Per bucket: users created, purchases and their ledger amounts, refunds, referral
        bonuses credited, and the proxy use of sessions started in it; the `limit` users with
        the most requests in sessions started in the window; and the distinct users with a
        session started in the window, and in the `DAU_SPAN` before its end. One call for all
        of it: each part sums the window's sessions per user, which a store can do once (a
        busy month holds millions of sessions)."""
        ...


class UnitOfWork(Protocol):
    """One use case, one transaction.

    Leaving the `with` block without calling `commit()` rolls everything back: nothing is ever
    committed implicitly.
    """

    @property
    def users(self) -> UserRepository: ...

    @property
    def ledger(self) -> LedgerRepository: ...

    @property
    def outbox(self) -> OutboxRepository: ...

    @property
    def idempotency(self) -> IdempotencyRepository: ...

    @property
    def payments(self) -> PaymentRepository: ...

    @property
    def audit(self) -> AuditLogRepository: ...

    @property
    def tokens(self) -> TokenRepository: ...

    @property
    def bundles(self) -> BundleRepository: ...

    @property
    def referrals(self) -> ReferralRepository: ...

    @property
    def notification_preferences(self) -> NotificationPreferenceRepository: ...

    @property
    def notifications(self) -> NotificationLogRepository: ...

    @property
    def token_notices(self) -> TokenNoticeRepository: ...

    @property
    def proxy_sessions(self) -> ProxySessionRepository: ...

    @property
    def token_expiries(self) -> TokenExpiryRepository: ...

    @property
    def webhooks(self) -> WebhookRepository: ...

    @property
    def analytics(self) -> AnalyticsQueries: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


#: Use cases take a factory and open one unit of work per call, so one use-case object can serve
#: many threads at once.
UnitOfWorkFactory = Callable[[], UnitOfWork]

#: What a unit of work calls once its block has ended, with the outbox events it committed:
#: the process hands them to the broker at once instead of waiting for the relay. It must not
#: raise; whatever it cannot hand over stays pending for the relay.
AfterCommit = Callable[[Sequence[OutboxEvent]], None]

#: What a unit of work calls once its block has ended, with the ledger entries it committed
#: (the API counts purchases, revenue and bonuses from them for its metrics). Entries that were
#: rolled back never reach it. It must not raise.
LedgerObserver = Callable[[Sequence[LedgerEntry]], None]
