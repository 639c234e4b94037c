"""No lost updates on the real engines: a change that read a row before another transaction
committed never writes that other change back.

Each test runs a use case whose transaction is stopped right after its read, while another
thread runs the competing use case on its own connection. On PostgreSQL the competitor commits
in between (nothing it needs is locked), which is exactly the interleaving in which a whole-row
write would undo it. On SQLite the first transaction already holds the database's write lock,
so the competitor waits its turn: the two simply take turns, and both changes must still be
there at the end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any, cast

from sqlalchemy import Engine

from tests.conftest import UserMaker
from zenzefi_core.adapters.cache import InProcessCache
from zenzefi_core.adapters.sqlalchemy import SqlAlchemyUnitOfWork
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import User
from zenzefi_core.domain.webhooks import DeliveryState, WebhookEndpoint
from zenzefi_core.errors import WebhookSendFailed
from zenzefi_core.ports import UnitOfWork, UnitOfWorkFactory
from zenzefi_core.pricing import PriceTable
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.admin import AccountChange, SetSuperuser, SetUserActive
from zenzefi_core.services.bundles import (
    BundleChange,
    BundleDraft,
    BundleRef,
    CreateBundle,
    DeactivateBundle,
    UpdateBundle,
)
from zenzefi_core.services.users import ProfileChange, UpdateProfile
from zenzefi_core.services.webhooks import (
    CacheSlots,
    CreateWebhook,
    DeliverWebhook,
    RotateWebhookSecret,
    SendTestWebhook,
    UpdateWebhook,
    WebhookPolicy,
)
from zenzefi_core.webhooks import SecretCipher

HASHER = fast_password_hasher()
CIPHER = SecretCipher("lost update tests")
POLICY = WebhookPolicy(
    retry_delays=(timedelta(seconds=1),),
    rotation_overlap=timedelta(hours=24),
    disable_after=timedelta(hours=1),
    allow_private=True,
    concurrency=4,
    timeout=timedelta(seconds=10),
)


class _Public:
    """Every host resolves to one public address."""

    def resolve(self, host: str) -> list[str]:
        return ["93.184.216.34"]


_public = _Public()


@dataclass
class Competitor:
    """Runs one use case in a thread of its own while another transaction is open."""

    call: Callable[[], object]
    #: How long to wait for it before letting the stopped transaction go on.
    patience: float
    thread: threading.Thread | None = None
    errors: list[BaseException] = field(default_factory=list)

    def start_and_wait(self) -> None:
        def run() -> None:
            try:
                self.call()
            except BaseException as error:
                self.errors.append(error)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self.thread.join(self.patience)

    @property
    def finished_first(self) -> bool:
        return self.thread is not None and not self.thread.is_alive()

    def finish(self) -> None:
        assert self.thread is not None, "the competitor never ran"
        self.thread.join(60)
        assert not self.thread.is_alive()
        if self.errors:
            raise self.errors[0]


class _Stopped:
    """A unit of work that runs `then` once, with its transaction still open: right after the
    `nth` call of any of `repository`'s `methods` returns, or, with `before`, just before it
    runs. Methods the repository does not have are left out, so one list can name the reads
    and writes of several versions of a use case."""

    def __init__(
        self,
        inner: SqlAlchemyUnitOfWork,
        repository: str,
        methods: tuple[str, ...],
        then: Callable[[], None],
        *,
        nth: int,
        before: bool,
    ) -> None:
        self._inner = inner
        self._repository = repository
        self._methods = methods
        self._then = then
        self._nth = nth
        self._before = before

    def __enter__(self) -> SqlAlchemyUnitOfWork:
        uow = self._inner.__enter__()
        repository = getattr(uow, self._repository)
        calls = 0

        def stop_on(real: Callable[..., Any]) -> Callable[..., Any]:
            def stopped(*args: Any, **kwargs: Any) -> Any:
                nonlocal calls
                calls += 1
                if self._before and calls == self._nth:
                    self._then()
                result = real(*args, **kwargs)
                if not self._before and calls == self._nth:
                    self._then()
                return result

            return stopped

        for method in self._methods:
            real = getattr(repository, method, None)
            if real is not None:
                setattr(repository, method, stop_on(real))
        return uow

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._inner.__exit__(exc_type, exc, tb)


def stopped_at(
    engine: Engine,
    repository: str,
    methods: tuple[str, ...],
    competitor: Competitor,
    *,
    nth: int = 1,
    before: bool = False,
) -> UnitOfWorkFactory:
    """Units of work on `engine` that let the competitor run at the `nth` call of one of
    `repository.methods` (once, in the first unit of work that gets that far)."""
    ran = threading.Event()

    def then() -> None:
        if not ran.is_set():
            ran.set()
            competitor.start_and_wait()

    def factory() -> UnitOfWork:
        stopped = _Stopped(
            SqlAlchemyUnitOfWork(engine), repository, methods, then, nth=nth, before=before
        )
        return cast(UnitOfWork, stopped)

    return factory


#: The worker's failure tracking, in this and earlier versions: the competitor runs before its
#: first write, after any read it made of the endpoint in the same transaction.
ENDPOINT_WRITES = ("update_endpoint", "mark_failing", "clear_failing", "disable_failing")


def patience(engine: Engine) -> float:
    """PostgreSQL: the competitor needs no lock the stopped transaction holds, so it commits
    in between (waited for in full). SQLite: it waits for the write lock, so there is no point
    waiting for it long."""
    return 60.0 if engine.dialect.name == "postgresql" else 0.5


def plain(engine: Engine) -> UnitOfWorkFactory:
    return lambda: SqlAlchemyUnitOfWork(engine)


def read_user(engine: Engine, user_id: Any) -> User:
    with SqlAlchemyUnitOfWork(engine) as uow:
        user = uow.users.get(user_id)
    assert user is not None
    return user


def operator(engine: Engine, make_user: UserMaker) -> User:
    admin = make_user(plain(engine), "operator")
    with SqlAlchemyUnitOfWork(engine) as uow:
        promoted = uow.users.set_superuser(admin.id, True)
        uow.commit()
    assert promoted is not None
    return promoted


# --- accounts ----------------------------------------------------------------------------------


def test_a_ban_survives_a_concurrent_profile_change(
    engine: Engine, clock: FixedClock, make_user: UserMaker
) -> None:
    alice = make_user(plain(engine), "alice")
    admin = operator(engine, make_user)
    ban = Competitor(
        lambda: SetUserActive(plain(engine), clock)(
            AccountChange(actor_id=admin.id, user_id=alice.id, enable=False)
        ),
        patience(engine),
    )
    profile = UpdateProfile(stopped_at(engine, "users", ("get",), ban), HASHER)

    profile(ProfileChange(alice.id, full_name="Alice Liddell"))
    ban.finish()

    if engine.dialect.name == "postgresql":
        assert ban.finished_first, "the ban committed while the profile change was open"
    after = read_user(engine, alice.id)
    assert after.full_name == "Alice Liddell"
    assert after.is_active is False
    assert after.session_version == alice.session_version + 1


def test_a_password_change_racing_a_ban_keeps_both_and_ends_sessions_twice(
    engine: Engine, clock: FixedClock, make_user: UserMaker
) -> None:
    alice = make_user(plain(engine), "alice")
    admin = operator(engine, make_user)
    ban = Competitor(
        lambda: SetUserActive(plain(engine), clock)(
            AccountChange(actor_id=admin.id, user_id=alice.id, enable=False)
        ),
        patience(engine),
    )
    profile = UpdateProfile(stopped_at(engine, "users", ("get",), ban), HASHER)

    profile(
        ProfileChange(alice.id, new_password="a new password", current_password="correct horse")
    )
    ban.finish()

    after = read_user(engine, alice.id)
    assert after.is_active is False
    assert HASHER.verify(after.password_hash, "a new password")
    # Each raised the stored version, neither wrote back one it had read.
    assert after.session_version == alice.session_version + 2


def test_a_promotion_survives_a_concurrent_ban(
    engine: Engine, clock: FixedClock, make_user: UserMaker
) -> None:
    alice = make_user(plain(engine), "alice")
    admin = operator(engine, make_user)
    ban = Competitor(
        lambda: SetUserActive(plain(engine), clock)(
            AccountChange(actor_id=admin.id, user_id=alice.id, enable=False)
        ),
        patience(engine),
    )
    # The promotion reads the operator first, then alice: stop after the second read.
    promote = SetSuperuser(stopped_at(engine, "users", ("get",), ban, nth=2), clock)
    promote(AccountChange(actor_id=admin.id, user_id=alice.id, enable=True))
    ban.finish()

    after = read_user(engine, alice.id)
    assert after.is_superuser is True
    assert after.is_active is False


# --- webhook endpoints -------------------------------------------------------------------------


class FailingSender:
    """A receiver that is down."""

    def post(
        self, url: str, headers: Any, body: bytes, *, addresses: Sequence[str]
    ) -> tuple[int, bytes]:
        raise WebhookSendFailed("connection refused")


def an_endpoint(engine: Engine, clock: FixedClock, owner: User) -> WebhookEndpoint:
    created = CreateWebhook(plain(engine), clock, CIPHER, _public, POLICY)(
        owner.id, "https://hooks.example.com/in", ["token.purchased"]
    )
    return created.endpoint


def deliver(engine: Engine, clock: FixedClock, uow_factory: UnitOfWorkFactory) -> DeliverWebhook:
    return DeliverWebhook(
        uow_factory,
        clock,
        CIPHER,
        FailingSender(),
        _public,
        CacheSlots(InProcessCache(), POLICY.concurrency, POLICY.lease),
        POLICY,
    )


def endpoint_now(engine: Engine, endpoint_id: Any) -> WebhookEndpoint:
    with SqlAlchemyUnitOfWork(engine) as uow:
        endpoint = uow.webhooks.get_endpoint(endpoint_id)
    assert endpoint is not None
    return endpoint


def test_a_rotation_survives_a_concurrent_delivery_failure(
    engine: Engine, clock: FixedClock, make_user: UserMaker
) -> None:
    owner = make_user(plain(engine), "owner")
    endpoint = an_endpoint(engine, clock, owner)
    delivery = SendTestWebhook(plain(engine), clock)(owner.id, endpoint.id)
    rotated: list[str] = []
    rotation = Competitor(
        lambda: rotated.append(
            RotateWebhookSecret(plain(engine), clock, CIPHER, POLICY)(owner.id, endpoint.id).secret
        ),
        patience(engine),
    )
    # The worker records the failed attempt; the owner rotates while that transaction is open.
    worker = deliver(
        engine, clock, stopped_at(engine, "webhooks", ENDPOINT_WRITES, rotation, before=True)
    )

    outcome = worker(delivery.id)
    rotation.finish()

    assert outcome.state is DeliveryState.PENDING
    if engine.dialect.name == "postgresql":
        assert rotation.finished_first
    after = endpoint_now(engine, endpoint.id)
    assert CIPHER.decrypt(after.secret_encrypted) == rotated[0]
    assert after.previous_secret_encrypted == endpoint.secret_encrypted
    assert after.failing_since == clock.now()
    assert after.is_active


def test_a_disable_survives_a_concurrent_delivery_failure(
    engine: Engine, clock: FixedClock, make_user: UserMaker
) -> None:
    owner = make_user(plain(engine), "owner")
    endpoint = an_endpoint(engine, clock, owner)
    delivery = SendTestWebhook(plain(engine), clock)(owner.id, endpoint.id)
    switch_off = Competitor(
        lambda: UpdateWebhook(plain(engine), clock, _public, POLICY)(
            owner.id, endpoint.id, is_active=False
        ),
        patience(engine),
    )
    worker = deliver(
        engine, clock, stopped_at(engine, "webhooks", ENDPOINT_WRITES, switch_off, before=True)
    )

    worker(delivery.id)
    switch_off.finish()

    after = endpoint_now(engine, endpoint.id)
    assert after.is_active is False
    assert after.url == endpoint.url
    assert after.secret_encrypted == endpoint.secret_encrypted


def test_the_workers_disable_survives_a_concurrent_url_change(
    engine: Engine, clock: FixedClock, make_user: UserMaker
) -> None:
    owner = make_user(plain(engine), "owner")
    endpoint = an_endpoint(engine, clock, owner)
    first = SendTestWebhook(plain(engine), clock)(owner.id, endpoint.id)
    deliver(engine, clock, plain(engine))(first.id)
    assert endpoint_now(engine, endpoint.id).failing_since == clock.now()
    clock.advance(POLICY.disable_after)
    second = SendTestWebhook(plain(engine), clock)(owner.id, endpoint.id)
    # The owner changes the URL while the worker's last allowed failure is being recorded.
    new_url = Competitor(
        lambda: UpdateWebhook(plain(engine), clock, _public, POLICY)(
            owner.id, endpoint.id, url="https://hooks.example.com/v2"
        ),
        patience(engine),
    )
    worker = deliver(
        engine, clock, stopped_at(engine, "webhooks", ENDPOINT_WRITES, new_url, before=True)
    )

    outcome = worker(second.id)
    new_url.finish()

    assert outcome.disabled is not None
    after = endpoint_now(engine, endpoint.id)
    assert after.is_active is False
    assert after.disabled_at == clock.now()
    assert after.url == "https://hooks.example.com/v2"


def test_turning_an_endpoint_back_on_clears_its_failures_only_if_it_was_off(
    engine: Engine, clock: FixedClock, make_user: UserMaker
) -> None:
    owner = make_user(plain(engine), "owner")
    endpoint = an_endpoint(engine, clock, owner)
    update = UpdateWebhook(plain(engine), clock, _public, POLICY)
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.webhooks.mark_failing(endpoint.id, clock.now())
        uow.commit()
    # Already on: "on" again leaves the run of failures alone.
    assert update(owner.id, endpoint.id, is_active=True).failing_since == clock.now()
    with SqlAlchemyUnitOfWork(engine) as uow:
        assert uow.webhooks.disable_failing(
            endpoint.id, failing_since_before=clock.now(), at=clock.now()
        )
        uow.commit()
    back_on = update(owner.id, endpoint.id, is_active=True)
    assert back_on.is_active
    assert back_on.failing_since is None
    assert back_on.disabled_at is None


# --- bundles -----------------------------------------------------------------------------------


def test_a_withdrawal_survives_a_concurrent_bundle_change(
    engine: Engine, clock: FixedClock, make_user: UserMaker
) -> None:
    admin = operator(engine, make_user)
    prices = PriceTable()
    bundle = CreateBundle(plain(engine), clock, prices)(
        BundleDraft(
            actor_id=admin.id,
            name="Team Pack",
            token_count=5,
            duration_hours=24,
            discount_percent=Decimal("10.00"),
        )
    )
    # The change reads the bundle locked, so on PostgreSQL the withdrawal waits for it rather
    # than committing in between; on SQLite it waits for the write lock. Either way: turns.
    withdrawal = Competitor(
        lambda: DeactivateBundle(plain(engine))(BundleRef(admin.id, bundle.id)), 0.5
    )
    change = UpdateBundle(
        stopped_at(engine, "bundles", ("get", "get_for_update"), withdrawal), prices
    )

    changed = change(
        BundleChange(actor_id=admin.id, bundle_id=bundle.id, discount_percent=Decimal("20.00"))
    )
    assert not withdrawal.finished_first, "the withdrawal waited for the locked row"
    withdrawal.finish()

    with SqlAlchemyUnitOfWork(engine) as uow:
        after = uow.bundles.get(bundle.id)
    assert after is not None
    assert after.is_active is False
    assert after.discount_percent == Decimal("20.00")
    assert after.total_price == changed.total_price == Decimal("72.00")
