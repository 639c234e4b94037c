"""The notification ports, held to one contract on memory, SQLite and PostgreSQL: preferences,
the notification log (dedup, claim and lease, retries, the sweep), the scans' token notices,
the outbox additions and the after-commit hand-over, and the races that must have one winner."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from uuid import UUID

import pytest
from sqlalchemy import Engine, update

from tests.conftest import BACKENDS, _sqlite_engine, _truncate
from tests.notifications import start_clock
from tests.shop import Shop, open_account
from zenzefi_core.adapters.memory import InMemoryUnitOfWork, MemoryStore
from zenzefi_core.adapters.sqlalchemy import SqlAlchemyUnitOfWork
from zenzefi_core.adapters.sqlalchemy.tables import access_tokens
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import OutboxEvent, User
from zenzefi_core.domain.notifications import Notification, NotificationKind, NotificationState
from zenzefi_core.domain.tokens import AccessToken
from zenzefi_core.ids import new_id
from zenzefi_core.policy import ShopPolicy
from zenzefi_core.ports import AfterCommit, UnitOfWork, UnitOfWorkFactory
from zenzefi_core.services.tokens import TokenOrder

K = NotificationKind
S = NotificationState
MOMENT = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(MOMENT)


@pytest.fixture
def alice(uow_factory: UnitOfWorkFactory, clock: FixedClock) -> User:
    return open_account(uow_factory, clock, "alice", balance="500.00")


def a_notification(
    user: User,
    *,
    key: str | None = None,
    kind: NotificationKind = K.BALANCE_LOW,
    at: datetime = MOMENT,
) -> Notification:
    return Notification(
        id=new_id(),
        user_id=user.id,
        kind=kind,
        dedup_key=key or f"{kind.value}:{user.id}:{new_id()}",
        recipient=user.email,
        subject="Low balance alert",
        body_text="Hello\n",
        body_html="<p>Hello</p>",
        created_at=at,
        next_attempt_at=at,
        updated_at=at,
    )


def logged(uow_factory: UnitOfWorkFactory, *notifications: Notification) -> None:
    with uow_factory() as uow:
        for notification in notifications:
            assert uow.notifications.add(notification)
        uow.commit()


def fetch(uow_factory: UnitOfWorkFactory, notification_id: UUID) -> Notification:
    with uow_factory() as uow:
        found = uow.notifications.get(notification_id)
    assert found is not None
    return found


# --- preferences -----------------------------------------------------------------------------


def test_preferences_are_set_and_replaced(uow_factory: UnitOfWorkFactory, alice: User) -> None:
    bob = open_account(uow_factory, FixedClock(MOMENT), "bob")
    with uow_factory() as uow:
        assert uow.notification_preferences.for_user(alice.id) == {}
        uow.notification_preferences.set(alice.id, K.BALANCE_LOW, False, MOMENT)
        uow.notification_preferences.set(alice.id, K.REFERRAL_BONUS, True, MOMENT)
        uow.commit()
    with uow_factory() as uow:
        uow.notification_preferences.set(alice.id, K.BALANCE_LOW, True, MOMENT)
        uow.notification_preferences.set(alice.id, K.REFERRAL_BONUS, False, MOMENT)
        uow.commit()
    with uow_factory() as uow:
        assert uow.notification_preferences.for_user(alice.id) == {
            K.BALANCE_LOW: True,
            K.REFERRAL_BONUS: False,
        }
        assert uow.notification_preferences.for_user(bob.id) == {}


def test_preferences_not_committed_are_forgotten(
    uow_factory: UnitOfWorkFactory, alice: User
) -> None:
    with uow_factory() as uow:
        uow.notification_preferences.set(alice.id, K.BALANCE_LOW, False, MOMENT)
    with uow_factory() as uow:
        assert uow.notification_preferences.for_user(alice.id) == {}


# --- the notification log --------------------------------------------------------------------


def test_a_notification_round_trips(uow_factory: UnitOfWorkFactory, alice: User) -> None:
    notification = a_notification(alice)
    logged(uow_factory, notification)
    with uow_factory() as uow:
        assert uow.notifications.get(notification.id) == notification
        assert uow.notifications.get_by_dedup_key(notification.dedup_key) == notification
        assert uow.notifications.get(new_id()) is None
        assert uow.notifications.get_by_dedup_key("nothing") is None


def test_a_dedup_key_is_logged_once(uow_factory: UnitOfWorkFactory, alice: User) -> None:
    first = a_notification(alice, key="balance_low:x")
    logged(uow_factory, first)
    with uow_factory() as uow:
        assert not uow.notifications.add(a_notification(alice, key="balance_low:x"))
        # The transaction is still usable after the refused insert.
        other = a_notification(alice, key="balance_low:y")
        assert uow.notifications.add(other)
        uow.commit()
    with uow_factory() as uow:
        assert uow.notifications.get_by_dedup_key("balance_low:x") == first
        assert uow.notifications.list_entries(limit=10, offset=0).total == 2


def test_counting_one_users_emails_of_one_kind_in_a_window(
    uow_factory: UnitOfWorkFactory, alice: User
) -> None:
    bob = open_account(uow_factory, FixedClock(MOMENT), "bob")
    logged(
        uow_factory,
        a_notification(alice, at=MOMENT - timedelta(hours=30)),
        a_notification(alice, at=MOMENT - timedelta(hours=24)),
        a_notification(alice, at=MOMENT - timedelta(hours=23)),
        a_notification(alice, at=MOMENT),
        a_notification(alice, kind=K.REFERRAL_BONUS, at=MOMENT),
        a_notification(bob, at=MOMENT),
    )
    with uow_factory() as uow:
        since = MOMENT - timedelta(hours=24)
        assert uow.notifications.count_since(alice.id, K.BALANCE_LOW, since) == 2
        assert uow.notifications.count_since(alice.id, K.REFERRAL_BONUS, since) == 1
        assert uow.notifications.count_since(alice.id, K.TOKEN_EXPIRING, since) == 0
        assert uow.notifications.count_since(bob.id, K.BALANCE_LOW, since) == 1


def test_a_claim_counts_the_attempt_and_holds_a_lease(
    uow_factory: UnitOfWorkFactory, alice: User
) -> None:
    notification = a_notification(alice)
    logged(uow_factory, notification)
    with uow_factory() as uow:
        claimed = uow.notifications.claim(notification.id, MOMENT, MOMENT + LEASE)
        assert claimed is not None
        assert (claimed.attempts, claimed.locked_until, claimed.updated_at) == (
            1,
            MOMENT + LEASE,
            MOMENT,
        )
        # Held: nobody else gets it until the lease runs out.
        assert uow.notifications.claim(notification.id, MOMENT, MOMENT + LEASE) is None
        later = MOMENT + LEASE - timedelta(seconds=1)
        assert uow.notifications.claim(notification.id, later, later + LEASE) is None
        uow.commit()
    with uow_factory() as uow:
        again = uow.notifications.claim(notification.id, MOMENT + LEASE, MOMENT + 2 * LEASE)
        assert again is not None
        assert again.attempts == 2
        assert uow.notifications.claim(new_id(), MOMENT, MOMENT + LEASE) is None


def test_nothing_to_claim_before_the_next_attempt_or_after_the_end(
    uow_factory: UnitOfWorkFactory, alice: User
) -> None:
    waiting, sent, failed = a_notification(alice), a_notification(alice), a_notification(alice)
    logged(uow_factory, waiting, sent, failed)
    retry_at = MOMENT + timedelta(minutes=1)
    with uow_factory() as uow:
        uow.notifications.record_failure(waiting.id, error="busy", at=MOMENT, retry_at=retry_at)
        uow.notifications.mark_sent(sent.id, MOMENT)
        uow.notifications.record_failure(failed.id, error="gone", at=MOMENT, retry_at=None)
        uow.commit()
    with uow_factory() as uow:
        too_early = retry_at - timedelta(seconds=1)
        assert uow.notifications.claim(waiting.id, too_early, too_early + LEASE) is None
        assert uow.notifications.claim(waiting.id, retry_at, retry_at + LEASE) is not None
        assert uow.notifications.claim(sent.id, retry_at, retry_at + LEASE) is None
        assert uow.notifications.claim(failed.id, retry_at, retry_at + LEASE) is None


def test_outcomes_are_recorded(uow_factory: UnitOfWorkFactory, alice: User) -> None:
    to_send, to_retry, to_fail = a_notification(alice), a_notification(alice), a_notification(alice)
    logged(uow_factory, to_send, to_retry, to_fail)
    done = MOMENT + timedelta(seconds=5)
    with uow_factory() as uow:
        for notification in (to_send, to_retry, to_fail):
            assert uow.notifications.claim(notification.id, MOMENT, MOMENT + LEASE)
        uow.notifications.mark_sent(to_send.id, done)
        uow.notifications.record_failure(
            to_retry.id, error="421 busy", at=done, retry_at=done + timedelta(seconds=30)
        )
        uow.notifications.record_failure(
            to_fail.id, error="550 no such user", at=done, retry_at=None
        )
        uow.commit()

    sent = fetch(uow_factory, to_send.id)
    assert (sent.state, sent.sent_at, sent.locked_until, sent.attempts) == (S.SENT, done, None, 1)
    retry = fetch(uow_factory, to_retry.id)
    assert (retry.state, retry.last_error, retry.locked_until) == (S.QUEUED, "421 busy", None)
    assert retry.next_attempt_at == done + timedelta(seconds=30)
    assert retry.updated_at == done
    failed = fetch(uow_factory, to_fail.id)
    assert (failed.state, failed.last_error, failed.locked_until) == (
        S.FAILED,
        "550 no such user",
        None,
    )
    assert failed.sent_at is None


def test_due_lists_queued_emails_nobody_holds_oldest_first(
    uow_factory: UnitOfWorkFactory, alice: User
) -> None:
    old = a_notification(alice, at=MOMENT - timedelta(minutes=10))
    older = a_notification(alice, at=MOMENT - timedelta(minutes=20))
    fresh = a_notification(alice, at=MOMENT)
    held = a_notification(alice, at=MOMENT - timedelta(minutes=30))
    sent = a_notification(alice, at=MOMENT - timedelta(minutes=40))
    logged(uow_factory, old, older, fresh, held, sent)
    with uow_factory() as uow:
        assert uow.notifications.claim(held.id, MOMENT, MOMENT + LEASE)
        assert uow.notifications.claim(sent.id, MOMENT, MOMENT + LEASE)
        uow.notifications.mark_sent(sent.id, MOMENT)
        uow.commit()
    with uow_factory() as uow:
        before = MOMENT - timedelta(minutes=1)
        assert uow.notifications.due(before=before, now=MOMENT, limit=10) == [older.id, old.id]
        assert uow.notifications.due(before=before, now=MOMENT, limit=1) == [older.id]
        # Once the lease has run out, the held one is offered again.
        after_lease = MOMENT + LEASE
        assert uow.notifications.due(before=MOMENT, now=after_lease, limit=10) == [
            held.id,
            older.id,
            old.id,
            fresh.id,
        ]


def test_the_log_lists_newest_first_by_user_and_state(
    uow_factory: UnitOfWorkFactory, alice: User
) -> None:
    bob = open_account(uow_factory, FixedClock(MOMENT), "bob")
    first = a_notification(alice, at=MOMENT)
    second = a_notification(alice, at=MOMENT + timedelta(minutes=1))
    bobs = a_notification(bob, at=MOMENT + timedelta(minutes=2))
    logged(uow_factory, first, second, bobs)
    with uow_factory() as uow:
        uow.notifications.record_failure(first.id, error="x", at=MOMENT, retry_at=None)
        uow.commit()
    with uow_factory() as uow:
        everything = uow.notifications.list_entries(limit=10, offset=0)
        assert [n.id for n in everything.items] == [bobs.id, second.id, first.id]
        assert everything.total == 3
        page = uow.notifications.list_entries(limit=1, offset=1, user_id=alice.id)
        assert ([n.id for n in page.items], page.total) == ([first.id], 2)
        failed = uow.notifications.list_entries(limit=10, offset=0, state=S.FAILED)
        assert [n.id for n in failed.items] == [first.id]


# --- token notices ---------------------------------------------------------------------------


def started_tokens(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, user: User, hours: Sequence[int]
) -> list[AccessToken]:
    shop = Shop(uow_factory, clock, ShopPolicy())
    tokens = []
    for duration in hours:
        token = shop.purchase_token(TokenOrder(user_id=user.id, duration_hours=duration)).token
        tokens.append(start_clock(uow_factory, token, clock.now()))
    return tokens


def test_expiring_tokens_are_claimed_once_soonest_first(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, alice: User
) -> None:
    week, day, hour, twelve = started_tokens(uow_factory, clock, alice, [168, 24, 1, 12])
    shop = Shop(uow_factory, clock, ShopPolicy())
    unused = shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=1)).token
    revoked = started_tokens(uow_factory, clock, alice, [1])[0]
    with uow_factory() as uow:
        # Revoking a started token is the operator's business; here it is set directly.
        uow.tokens.revoke(unused.id, MOMENT)
        uow.commit()
    _revoke_started(uow_factory, revoked)

    now = MOMENT
    with uow_factory() as uow:
        claimed = uow.token_notices.claim_expiring(now, now + timedelta(hours=24), limit=2)
        assert [t.id for t in claimed] == [hour.id, twelve.id]
        assert claimed[0] == hour
        rest = uow.token_notices.claim_expiring(now, now + timedelta(hours=24), limit=10)
        # The end of the window is included.
        assert [t.id for t in rest] == [day.id]
        uow.commit()
    with uow_factory() as uow:
        assert uow.token_notices.claim_expiring(now, now + timedelta(hours=24), limit=10) == []
        later = now + timedelta(days=6)
        last_day = uow.token_notices.claim_expiring(later, later + timedelta(hours=24), limit=10)
        assert [t.id for t in last_day] == [week.id]


def test_a_token_that_has_already_expired_is_not_expiring(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, alice: User
) -> None:
    started_tokens(uow_factory, clock, alice, [1])
    end = MOMENT + timedelta(hours=1)
    with uow_factory() as uow:
        assert uow.token_notices.claim_expiring(end, end + timedelta(hours=24), limit=10) == []


def test_claims_not_committed_are_forgotten(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, alice: User
) -> None:
    (hour,) = started_tokens(uow_factory, clock, alice, [1])
    window = (MOMENT, MOMENT + timedelta(hours=24))
    with uow_factory() as uow:
        assert [t.id for t in uow.token_notices.claim_expiring(*window, limit=10)] == [hour.id]
    with uow_factory() as uow:
        assert [t.id for t in uow.token_notices.claim_expiring(*window, limit=10)] == [hour.id]


def _revoke_started(uow_factory: UnitOfWorkFactory, token: AccessToken) -> None:
    """Mark a started token revoked behind the repository's back (revoke() refuses it)."""
    uow = uow_factory()
    if isinstance(uow, InMemoryUnitOfWork):
        store = uow._store
        with store.lock:
            store.tables.tokens[token.id] = dataclasses.replace(token, revoked_at=MOMENT)
    else:
        assert isinstance(uow, SqlAlchemyUnitOfWork)
        with uow._engine.begin() as connection:
            connection.execute(
                update(access_tokens)
                .where(access_tokens.c.id == token.id)
                .values(revoked_at=MOMENT)
            )


# --- the outbox and the after-commit hand-over ----------------------------------------------


def an_event(n: int = 0) -> OutboxEvent:
    return OutboxEvent(new_id(), "test.event", {"n": n, "amount": "1.50"}, MOMENT)


def test_outbox_events_are_added_in_bulk_and_read_back(uow_factory: UnitOfWorkFactory) -> None:
    events = [an_event(n) for n in range(3)]
    with uow_factory() as uow:
        uow.outbox.add_all(events)
        uow.outbox.add_all([])
        uow.commit()
    with uow_factory() as uow:
        assert [uow.outbox.get(e.id) for e in events] == events
        assert uow.outbox.get(new_id()) is None
        assert uow.outbox.pending(limit=10) == events


HookedFactory = Callable[[AfterCommit], UnitOfWorkFactory]


@pytest.fixture(params=BACKENDS)
def hooked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HookedFactory]:
    """Makes units of work that call a given after-commit hook, on each backend."""
    if request.param == "memory":
        store = MemoryStore()
        yield lambda hook: lambda: store.unit_of_work(after_commit=hook)
        return
    if request.param == "sqlite":
        engine = _sqlite_engine(tmp_path)
    else:
        engine = request.getfixturevalue("postgres_engine")
        _truncate(engine)
    yield lambda hook: lambda: SqlAlchemyUnitOfWork(engine, after_commit=hook)
    if request.param == "sqlite":
        engine.dispose()
    else:
        _truncate(engine)


def test_the_hook_gets_exactly_the_committed_events_after_the_block(
    hooked: HookedFactory,
) -> None:
    calls: list[list[UUID]] = []
    inside = threading.Event()

    def hook(events: Sequence[OutboxEvent]) -> None:
        assert not inside.is_set(), "the hook ran before the unit of work ended"
        calls.append([e.id for e in events])

    factory = hooked(hook)
    rolled_back, first, second, uncommitted = an_event(1), an_event(2), an_event(3), an_event(4)
    with factory() as uow:
        inside.set()
        uow.outbox.add(rolled_back)
        uow.rollback()
        uow.outbox.add(first)
        uow.commit()
        uow.outbox.add_all([second])
        uow.commit()
        uow.outbox.add(uncommitted)
        inside.clear()
    assert calls == [[first.id, second.id]]

    with factory() as uow:
        uow.outbox.add(an_event())
    with factory() as uow:
        uow.commit()
    assert calls == [[first.id, second.id]], "no hook call without committed events"


def test_the_hook_can_write_in_its_own_transaction(hooked: HookedFactory) -> None:
    marked: list[UUID] = []
    factories: list[UnitOfWorkFactory] = []

    def mark(events: Sequence[OutboxEvent]) -> None:
        plain = hooked(lambda _: None)
        with plain() as uow:
            uow.outbox.mark_dispatched([e.id for e in events], MOMENT)
            uow.commit()
        marked.extend(e.id for e in events)

    factories.append(hooked(mark))
    event = an_event()
    with factories[0]() as uow:
        uow.outbox.add(event)
        uow.commit()
    assert marked == [event.id]
    with factories[0]() as uow:
        assert uow.outbox.pending(limit=10) == []


def test_the_hook_runs_even_when_the_block_fails_after_a_commit(hooked: HookedFactory) -> None:
    calls: list[int] = []
    factory = hooked(lambda events: calls.append(len(events)))

    def fail_after_commit() -> None:
        with factory() as uow:
            uow.outbox.add(an_event())
            uow.commit()
            raise RuntimeError("after the commit")

    with pytest.raises(RuntimeError):
        fail_after_commit()
    assert calls == [1]


# --- races with one winner -------------------------------------------------------------------


R = TypeVar("R")


def race(workers: Sequence[Callable[[], R]]) -> list[R | None]:
    """Start every worker at the same moment, each in its own thread; their results."""
    barrier = threading.Barrier(len(workers))
    results: list[R | None] = [None] * len(workers)
    errors: list[BaseException] = []

    def run(index: int, work: Callable[[], R]) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = work()
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    return results


def test_of_two_workers_claiming_one_email_exactly_one_wins(
    engine: Engine, clock: FixedClock
) -> None:
    def factory() -> UnitOfWork:
        return SqlAlchemyUnitOfWork(engine)

    user = open_account(factory, clock, "alice")
    notification = a_notification(user)
    logged(factory, notification)

    def claim() -> Notification | None:
        with factory() as uow:
            claimed = uow.notifications.claim(notification.id, MOMENT, MOMENT + LEASE)
            uow.commit()
        return claimed

    for _ in range(3):
        results = race([claim] * 4)
        assert sum(result is not None for result in results) <= 1
    assert fetch(factory, notification.id).attempts == 1


def test_two_scans_at_once_claim_each_token_once(engine: Engine, clock: FixedClock) -> None:
    def factory() -> UnitOfWork:
        return SqlAlchemyUnitOfWork(engine)

    user = open_account(factory, clock, "alice", balance="500.00")
    tokens = started_tokens(factory, clock, user, [1] * 12)

    def scan() -> list[UUID]:
        claimed: list[UUID] = []
        for _ in range(12):
            with factory() as uow:
                batch = uow.token_notices.claim_expiring(
                    MOMENT, MOMENT + timedelta(hours=24), limit=3
                )
                uow.commit()
            claimed.extend(t.id for t in batch)
            if not batch:
                break
        return claimed

    results = race([scan, scan, scan])
    everything = [token_id for result in results for token_id in result or []]
    assert sorted(everything) == sorted(t.id for t in tokens)
