"""The composition root for the core: settings in, wired adapters out.

The API, the worker and the command line all start from `Core.from_settings`, so every process
opens the database, hashes passwords and tells time the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from zenzefi_core.adapters.cache import InProcessCache
from zenzefi_core.adapters.payments import HmacPaymentProvider
from zenzefi_core.adapters.sqlalchemy import Database
from zenzefi_core.clock import SystemClock
from zenzefi_core.policy import ShopPolicy
from zenzefi_core.ports import (
    AccessCache,
    Clock,
    EventPublisher,
    LedgerObserver,
    PasswordHasher,
    PaymentProvider,
    UnitOfWork,
)
from zenzefi_core.security import (
    REPLAY_SECRETS,
    Argon2PasswordHasher,
    BoundedPasswordHasher,
    SecretCipher,
)
from zenzefi_core.services.bundles import SeedDefaultBundles
from zenzefi_core.services.events import WORKER_EVENTS
from zenzefi_core.services.idempotency import ReplaySecrets
from zenzefi_core.services.outbox import DispatchMarks, PublishCommittedEvents
from zenzefi_core.settings import Settings


@dataclass
class Core:
    settings: Settings
    database: Database
    clock: Clock = field(default_factory=SystemClock)
    hasher: PasswordHasher = field(default_factory=Argon2PasswordHasher)
    #: The proxy's token cache; the API puts Redis here when `REDIS_URL` is set.
    access_cache: AccessCache = field(default_factory=InProcessCache)
    #: Set by the worker wiring (`zenzefi_worker.WorkerApp`): units of work then hand the events
    #: they committed to the broker at once. Unset, events wait for the periodic relay.
    publisher: EventPublisher | None = None
    #: Set by the API's metrics: told of every ledger entry a unit of work committed.
    ledger_observer: LedgerObserver | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        hasher: PasswordHasher | None = None,
        access_cache: AccessCache | None = None,
    ) -> Core:
        """Wire the adapters the settings name; `hasher` (also bounded) replaces Argon2id."""
        return cls(
            settings=settings,
            database=Database(settings.database_url),
            clock=clock or SystemClock(),
            hasher=BoundedPasswordHasher(
                hasher or Argon2PasswordHasher(), settings.security.password_hash_limit()
            ),
            access_cache=access_cache or InProcessCache(),
        )

    def uow(self) -> UnitOfWork:
        """A unit of work whose events nothing consumes (see `WORKER_EVENTS`) are stored already
        dispatched, and which hands the others to the broker after commit when there is one."""
        hand_over = None
        if self.publisher is not None:
            hand_over = PublishCommittedEvents(
                self.database.unit_of_work, self.clock, self.publisher, self.dispatch_marks
            )
        return self.database.unit_of_work(
            after_commit=hand_over, on_ledger=self.ledger_observer, worker_events=WORKER_EVENTS
        )

    @cached_property
    def dispatch_marks(self) -> DispatchMarks:
        """The process's events handed to the broker after commit and waiting to be marked
        dispatched, a batch at a time (one transaction per batch, not per use case)."""
        return DispatchMarks(self.database.unit_of_work, self.clock)

    def reader(self) -> UnitOfWork:
        """A unit of work for a use case that only reads, with one statement: no transaction,
        so one database round trip (see `SqlAlchemyUnitOfWork`)."""
        return self.database.reader()

    @cached_property
    def payment_provider(self) -> PaymentProvider:
        """The provider that takes top-ups and signs its callbacks, as configured."""
        return HmacPaymentProvider(
            secret=self.settings.payment_secret(),
            checkout_url=self.settings.checkout_url(),
            clock=self.clock,
            tolerance_seconds=self.settings.payments.callback_tolerance_seconds,
        )

    @cached_property
    def policy(self) -> ShopPolicy:
        """Prices, the referral programme and the low-balance line, as configured."""
        return ShopPolicy.from_settings(self.settings)

    @cached_property
    def replay_secrets(self) -> ReplaySecrets:
        """Encrypts the access tokens' secrets kept with an Idempotency-Key for its replays."""
        return ReplaySecrets(SecretCipher(self.settings.resolved_secret_key(), REPLAY_SECRETS))

    def migrate(self) -> None:
        """Apply the migrations, then seed the default bundles if the catalogue is empty.

        Seeding checks for an empty catalogue under a lock, so running this at every start (as
        `zenzefi serve` does) or from several processes at once adds the defaults only once.
        """
        self.database.migrate()
        SeedDefaultBundles(self.uow, self.clock, self.policy.prices)()

    def close(self) -> None:
        if "dispatch_marks" in self.__dict__:
            self.dispatch_marks.flush()
        self.database.dispose()
