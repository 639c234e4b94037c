"""The notification use cases on the in-memory adapter: which events become emails, once, how
failures are retried and recorded, preferences and unsubscribing, the relay and the scan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest

from tests.notifications import FlakyMailer, Notifier, start_clock
from tests.shop import Shop, deposit, open_account
from zenzefi_core.adapters.memory import MemoryStore
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import OutboxEvent, TransactionType, User
from zenzefi_core.domain.notifications import NotificationKind, NotificationState
from zenzefi_core.errors import BrokerUnavailable, InvalidSignature, UserNotFound
from zenzefi_core.ids import new_id
from zenzefi_core.notifications import NotificationPolicy
from zenzefi_core.policy import ShopPolicy
from zenzefi_core.services.notifications import ReadUnsubscribeLink, UnsubscribeLink
from zenzefi_core.services.outbox import PublishCommittedEvents, RelayOutbox
from zenzefi_core.services.token_expiry import ScanExpiringTokens
from zenzefi_core.services.tokens import TokenOrder
from zenzefi_core.services.wallet import DebitWallet, WalletChange

K = NotificationKind
S = NotificationState


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 26, 10, 0, tzinfo=UTC))


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def notifier(store: MemoryStore, clock: FixedClock) -> Notifier:
    return Notifier(store.unit_of_work, clock)


def debit(store: MemoryStore, clock: FixedClock, user_id: UUID, amount: str) -> None:
    DebitWallet(store.unit_of_work, clock)(
        WalletChange(
            user_id=user_id,
            amount=Decimal(amount),
            transaction_type=TransactionType.ADJUSTMENT,
            description="test debit",
            reference_type="test",
            reference_id=str(new_id()),
        )
    )


def user_of(store: MemoryStore, event: OutboxEvent) -> User:
    assert event.user_id is not None
    with store.unit_of_work() as uow:
        user = uow.users.get(event.user_id)
    assert user is not None
    return user


def low_balance_event(store: MemoryStore, clock: FixedClock, notifier: Notifier) -> OutboxEvent:
    alice = open_account(store.unit_of_work, clock, "alice", balance="15.00")
    debit(store, clock, alice.id, "8.00")
    (event,) = notifier.events("balance.low")
    return event


# --- balance low -----------------------------------------------------------------------------


def test_a_low_balance_event_sends_one_alert(
    store: MemoryStore, clock: FixedClock, notifier: Notifier
) -> None:
    event = low_balance_event(store, clock, notifier)
    notification = notifier.deliver(event)

    assert notification is not None
    assert notification.state is S.SENT
    assert notification.attempts == 1
    assert notification.sent_at == clock.now()
    (email,) = notifier.mailer.sent
    assert email.recipient == "alice@example.com"
    assert email.subject == "Low balance alert"
    assert "Your balance is low: 7.00 ZNC (below 10.00 ZNC)" in email.text
    assert "https://zenzefi.example/currency/purchase" in email.text
    assert email.message_id == f"<{notification.id}@zenzefi.example>"
    assert email.unsubscribe_url is not None
    assert email.unsubscribe_url in email.text


def test_handling_an_event_twice_sends_one_email(
    store: MemoryStore, clock: FixedClock, notifier: Notifier
) -> None:
    event = low_balance_event(store, clock, notifier)
    first = notifier.queue(event.id)
    again_before_sending = notifier.queue(event.id)
    assert again_before_sending.notification_id == first.notification_id

    assert first.notification_id is not None
    notifier.send(first.notification_id)
    assert notifier.send(first.notification_id).state is None
    assert notifier.queue(event.id).notification_id is None
    assert notifier.queue(event.id).skipped == "duplicate"
    assert len(notifier.mailer.sent) == 1
    assert len(notifier.log()) == 1


def test_no_alert_when_the_balance_is_back_above_the_line(
    store: MemoryStore, clock: FixedClock, notifier: Notifier
) -> None:
    event = low_balance_event(store, clock, notifier)
    deposit(store.unit_of_work, clock, user_of(store, event), "50.00")

    assert notifier.queue(event.id).skipped == "no longer true"
    assert notifier.mailer.sent == []


def test_events_that_are_not_emails_are_ignored(
    store: MemoryStore, clock: FixedClock, notifier: Notifier
) -> None:
    alice = open_account(store.unit_of_work, clock, "alice", balance="5.00")
    with store.unit_of_work() as uow:
        event = OutboxEvent(new_id(), "token.purchased", {}, clock.now(), user_id=alice.id)
        uow.outbox.add(event)
        uow.commit()
    assert notifier.queue(event.id).skipped == "not an email event"
    assert notifier.queue(new_id()).skipped == "not an email event"


def test_a_disabled_user_gets_no_email(
    store: MemoryStore, clock: FixedClock, notifier: Notifier
) -> None:
    event = low_balance_event(store, clock, notifier)
    with store.unit_of_work() as uow:
        uow.users.set_active(user_of(store, event).id, False)
        uow.commit()
    assert notifier.queue(event.id).skipped == "no active user"


# --- referral bonus --------------------------------------------------------------------------


def test_a_referral_bonus_email_names_amount_balance_and_code(
    store: MemoryStore, clock: FixedClock, notifier: Notifier
) -> None:
    shop = Shop(store.unit_of_work, clock, ShopPolicy())
    referrer = open_account(store.unit_of_work, clock, "ref", balance="100.00")
    buyer = open_account(store.unit_of_work, clock, "buyer", balance="50.00", referrer=referrer)
    shop.use(shop.purchase_token(TokenOrder(user_id=buyer.id, duration_hours=24)).token)

    (event,) = notifier.events("referral.bonus")
    notification = notifier.deliver(event)

    assert notification is not None
    assert notification.state is S.SENT
    (email,) = notifier.mailer.sent
    assert email.recipient == "ref@example.com"
    assert email.subject == "You earned a referral bonus!"
    assert "referral bonus of 1.80 ZNC" in email.text
    assert "Your new balance: 101.80 ZNC" in email.text
    assert "buyer used an access token they bought for the first time" in email.text
    assert "cancelled if the token is refunded" in email.html
    assert f"Keep sharing your referral code: {referrer.referral_code}" in email.text
    assert referrer.referral_code in email.html


def test_at_most_the_daily_limit_of_one_kind_per_user(
    store: MemoryStore, clock: FixedClock, notifier: Notifier
) -> None:
    shop = Shop(store.unit_of_work, clock, ShopPolicy())
    referrer = open_account(store.unit_of_work, clock, "ref")
    buyer = open_account(store.unit_of_work, clock, "buyer", balance="100.00", referrer=referrer)
    for _ in range(4):
        shop.use(shop.purchase_token(TokenOrder(user_id=buyer.id, duration_hours=1)).token)
    events = notifier.events("referral.bonus")
    assert len(events) == 4

    outcomes = [notifier.queue(event.id) for event in events[:3]]
    assert [o.notification_id is not None for o in outcomes] == [True, True, False]
    assert outcomes[2].skipped == "daily limit reached"

    # A day later the window has moved on.
    clock.advance(timedelta(hours=24))
    assert notifier.queue(events[3].id).notification_id is not None


def test_the_limit_counts_each_kind_on_its_own(
    store: MemoryStore, clock: FixedClock, notifier: Notifier
) -> None:
    policy = NotificationPolicy(daily_limit=1)
    one_a_day = Notifier(store.unit_of_work, clock, policy=policy)
    shop = Shop(store.unit_of_work, clock, ShopPolicy())
    alice = open_account(store.unit_of_work, clock, "alice", balance="11.00")
    buyer = open_account(store.unit_of_work, clock, "buyer", balance="100.00", referrer=alice)
    shop.use(shop.purchase_token(TokenOrder(user_id=buyer.id, duration_hours=12)).token)
    debit(store, clock, alice.id, "5.00")  # 12.00 -> 7.00: low balance

    (bonus,) = notifier.events("referral.bonus")
    (low,) = notifier.events("balance.low")
    assert one_a_day.queue(bonus.id).notification_id is not None
    assert one_a_day.queue(low.id).notification_id is not None


# --- preferences and unsubscribing -----------------------------------------------------------


def test_every_kind_is_on_until_turned_off(
    store: MemoryStore, clock: FixedClock, notifier: Notifier
) -> None:
    alice = open_account(store.unit_of_work, clock, "alice")
    assert notifier.preferences(alice.id) == dict.fromkeys(K, True)

    updated = notifier.update_preferences(alice.id, {K.REFERRAL_BONUS: False})
    assert updated == {K.TOKEN_EXPIRING: True, K.BALANCE_LOW: True, K.REFERRAL_BONUS: False}
    assert notifier.preferences(alice.id) == updated

    assert notifier.update_preferences(alice.id, {K.REFERRAL_BONUS: True})[K.REFERRAL_BONUS]


def test_preferences_of_an_unknown_user(notifier: Notifier) -> None:
    with pytest.raises(UserNotFound):
        notifier.preferences(new_id())
    with pytest.raises(UserNotFound):
        notifier.update_preferences(new_id(), {K.BALANCE_LOW: False})


def test_a_kind_turned_off_sends_nothing(
    store: MemoryStore, clock: FixedClock, notifier: Notifier
) -> None:
    event = low_balance_event(store, clock, notifier)
    assert event.user_id is not None
    notifier.update_preferences(event.user_id, {K.BALANCE_LOW: False})
    assert notifier.queue(event.id).skipped == "turned off"
    assert notifier.log() == []


def test_the_unsubscribe_link_turns_its_kind_off(
    store: MemoryStore, clock: FixedClock, notifier: Notifier
) -> None:
    event = low_balance_event(store, clock, notifier)
    notifier.deliver(event)
    (email,) = notifier.mailer.sent
    assert email.unsubscribe_url is not None
    token = email.unsubscribe_url.split("token=", 1)[1]

    done = notifier.unsubscribe(token)
    assert (done.user_id, done.kind) == (event.user_id, K.BALANCE_LOW)
    assert notifier.preferences(done.user_id) == {
        K.TOKEN_EXPIRING: True,
        K.BALANCE_LOW: False,
        K.REFERRAL_BONUS: True,
    }
    # Following it again is harmless.
    assert notifier.unsubscribe(token) == done


def test_reading_an_unsubscribe_link_changes_nothing(
    store: MemoryStore, clock: FixedClock, notifier: Notifier
) -> None:
    alice = open_account(store.unit_of_work, clock, "alice")
    token = notifier.links.token(alice.id, K.REFERRAL_BONUS)
    read = ReadUnsubscribeLink(store.unit_of_work, notifier.links)
    for _ in range(3):  # a scanner may open it many times
        assert read(token) == UnsubscribeLink(alice.id, K.REFERRAL_BONUS, enabled=True)
    assert all(notifier.preferences(alice.id).values())
    notifier.unsubscribe(token)
    assert read(token) == UnsubscribeLink(alice.id, K.REFERRAL_BONUS, enabled=False)
    user, _, signature = token.split(".")
    with pytest.raises(InvalidSignature):
        read(f"{user}.{K.BALANCE_LOW.value}.{signature}")


def test_a_forged_unsubscribe_link_changes_nothing(
    store: MemoryStore, clock: FixedClock, notifier: Notifier
) -> None:
    alice = open_account(store.unit_of_work, clock, "alice")
    genuine = notifier.links.token(alice.id, K.BALANCE_LOW)
    user, kind, signature = genuine.split(".")
    for forged in (
        f"{user}.{K.REFERRAL_BONUS.value}.{signature}",
        f"{user}.{kind}.{signature[:-2]}AA",
        f"{user}.{kind}.",
    ):
        with pytest.raises(InvalidSignature):
            notifier.unsubscribe(forged)
    assert notifier.preferences(alice.id) == dict.fromkeys(K, True)


def test_a_genuine_link_of_a_user_who_is_gone(notifier: Notifier) -> None:
    with pytest.raises(UserNotFound):
        notifier.unsubscribe(notifier.links.token(new_id(), K.BALANCE_LOW))


# --- sending: retries, failures, leases ------------------------------------------------------


def test_a_failed_attempt_is_retried_later_with_a_growing_delay(
    store: MemoryStore, clock: FixedClock
) -> None:
    mailer = FlakyMailer(failures=2)
    notifier = Notifier(store.unit_of_work, clock, mailer=mailer)
    event = low_balance_event(store, clock, notifier)
    queued = notifier.queue(event.id).notification_id
    assert queued is not None

    first = notifier.send(queued)
    assert (first.state, first.retry_in) == (S.QUEUED, timedelta(seconds=30))
    logged = notifier.notification(queued)
    assert (logged.state, logged.attempts, logged.last_error) == (
        S.QUEUED,
        1,
        "451 try again later",
    )
    assert logged.next_attempt_at == clock.now() + timedelta(seconds=30)
    assert logged.locked_until is None

    # Not due yet: a message arriving early does nothing.
    assert notifier.send(queued).state is None

    clock.advance(timedelta(seconds=30))
    assert notifier.send(queued).retry_in == timedelta(seconds=60)
    clock.advance(timedelta(seconds=60))
    assert notifier.send(queued).state is S.SENT

    logged = notifier.notification(queued)
    assert (logged.state, logged.attempts, logged.last_error) == (S.SENT, 3, None)
    assert len(mailer.sent) == 1


def test_after_the_last_attempt_the_email_is_recorded_as_failed(
    store: MemoryStore, clock: FixedClock
) -> None:
    mailer = FlakyMailer(failures=100)
    notifier = Notifier(store.unit_of_work, clock, mailer=mailer)
    event = low_balance_event(store, clock, notifier)
    queued = notifier.queue(event.id).notification_id
    assert queued is not None

    outcomes = []
    for _ in range(notifier.policy.max_attempts):
        outcomes.append(notifier.send(queued))
        clock.advance(timedelta(hours=1))
    assert [o.state for o in outcomes] == [S.QUEUED, S.QUEUED, S.FAILED]
    assert outcomes[-1].retry_in is None

    logged = notifier.notification(queued)
    assert (logged.state, logged.attempts) == (S.FAILED, 3)
    assert logged.last_error == "451 try again later"
    # Given up: no more attempts, and the sweep no longer offers it.
    assert notifier.send(queued).state is None
    assert notifier.due(limit=10) == []
    assert mailer.attempts == 3


def test_a_refused_recipient_fails_at_once(store: MemoryStore, clock: FixedClock) -> None:
    mailer = FlakyMailer(failures=1, permanent=True)
    notifier = Notifier(store.unit_of_work, clock, mailer=mailer)
    event = low_balance_event(store, clock, notifier)
    queued = notifier.queue(event.id).notification_id
    assert queued is not None
    assert notifier.send(queued).state is S.FAILED
    assert notifier.notification(queued).attempts == 1


def test_only_one_worker_holds_an_email_at_a_time(
    store: MemoryStore, clock: FixedClock, notifier: Notifier
) -> None:
    event = low_balance_event(store, clock, notifier)
    queued = notifier.queue(event.id).notification_id
    assert queued is not None
    lease = notifier.policy.lease
    with store.unit_of_work() as uow:
        assert uow.notifications.claim(queued, clock.now(), clock.now() + lease) is not None
        uow.commit()
    # Another worker with the same message finds it taken.
    assert notifier.send(queued).state is None
    assert notifier.due(limit=10) == []

    # The first one died: once its lease ran out, the sweep offers it and it is sent.
    clock.advance(lease + notifier.policy.sweep_grace)
    assert notifier.due(limit=10) == [queued]
    assert notifier.send(queued).state is S.SENT
    assert len(notifier.mailer.sent) == 1


def test_the_sweep_offers_only_overdue_queued_emails(store: MemoryStore, clock: FixedClock) -> None:
    notifier = Notifier(store.unit_of_work, clock, mailer=FlakyMailer(failures=1))
    event = low_balance_event(store, clock, notifier)
    queued = notifier.queue(event.id).notification_id
    # Just queued: its own message is on the way, the sweep leaves it alone for a while.
    assert notifier.due(limit=10) == []
    clock.advance(notifier.policy.sweep_grace)
    assert notifier.due(limit=10) == [queued]


# --- the token expiry scan -------------------------------------------------------------------


def test_the_scan_tells_about_each_token_once(
    store: MemoryStore, clock: FixedClock, notifier: Notifier
) -> None:
    shop = Shop(store.unit_of_work, clock, ShopPolicy())
    alice = open_account(store.unit_of_work, clock, "alice", balance="500.00")
    day = shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=24)).token
    week = shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=168)).token
    never_used = shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=1)).token
    revoked = shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=1)).token
    start_clock(store.unit_of_work, day, clock.now())
    start_clock(store.unit_of_work, week, clock.now())
    with store.unit_of_work() as uow:
        assert uow.tokens.revoke(revoked.id, clock.now())
        uow.commit()
    scan = ScanExpiringTokens(store.unit_of_work, clock)

    assert scan() == 1
    assert scan() == 0
    (event,) = notifier.events("token.expiring")
    assert event.payload["token_id"] == str(day.id)
    assert event.user_id == alice.id

    # Six days later the week token enters its last day.
    clock.advance(timedelta(days=6, minutes=1))
    assert scan() == 1
    assert scan() == 0
    assert {e.payload["token_id"] for e in notifier.events("token.expiring")} == {
        str(day.id),
        str(week.id),
    }
    assert never_used.id not in {e.payload["token_id"] for e in notifier.events("token.expiring")}


def test_the_scan_works_in_batches(store: MemoryStore, clock: FixedClock) -> None:
    shop = Shop(store.unit_of_work, clock, ShopPolicy())
    alice = open_account(store.unit_of_work, clock, "alice", balance="500.00")
    for _ in range(5):
        token = shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=12)).token
        start_clock(store.unit_of_work, token, clock.now())
    scan = ScanExpiringTokens(store.unit_of_work, clock, batch_size=2)
    assert [scan(), scan(), scan(), scan()] == [2, 2, 1, 0]


def test_a_token_expiring_email_names_the_token(
    store: MemoryStore, clock: FixedClock, notifier: Notifier
) -> None:
    shop = Shop(store.unit_of_work, clock, ShopPolicy())
    alice = open_account(store.unit_of_work, clock, "alice", balance="500.00")
    token = shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=168)).token
    start_clock(store.unit_of_work, token, clock.now() - timedelta(days=6, hours=1))
    ScanExpiringTokens(store.unit_of_work, clock)()

    (event,) = notifier.events("token.expiring")
    notification = notifier.deliver(event)
    assert notification is not None
    assert notification.state is S.SENT
    (email,) = notifier.mailer.sent
    assert email.subject == "Your access token expires soon"
    assert f"Your access token {token.token_prefix}..." in email.text
    assert "at 2026-11-27 09:00 UTC, in about 23 hours" in email.text
    assert "Duration: 168 hours" in email.text
    assert "https://zenzefi.example/tokens/purchase" in email.text
    # The same token's event handled again (or a second event for it) sends nothing new.
    assert notifier.queue(event.id).notification_id is None


def test_no_expiry_email_for_a_token_that_ended_before_the_event_was_handled(
    store: MemoryStore, clock: FixedClock, notifier: Notifier
) -> None:
    shop = Shop(store.unit_of_work, clock, ShopPolicy())
    alice = open_account(store.unit_of_work, clock, "alice", balance="500.00")
    token = shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=1)).token
    start_clock(store.unit_of_work, token, clock.now())
    ScanExpiringTokens(store.unit_of_work, clock)()
    clock.advance(timedelta(hours=2))

    (event,) = notifier.events("token.expiring")
    assert notifier.queue(event.id).skipped == "no longer true"


# --- the outbox relay and the after-commit hand-over -----------------------------------------


class RecordingPublisher:
    def __init__(self, *, refuse_after: int | None = None) -> None:
        self.published: list[OutboxEvent] = []
        self.refuse_after = refuse_after

    def publish(self, event: OutboxEvent) -> None:
        if self.refuse_after is not None and len(self.published) >= self.refuse_after:
            raise BrokerUnavailable("connection refused")
        self.published.append(event)


def make_events(store: MemoryStore, clock: FixedClock, count: int) -> list[OutboxEvent]:
    events = [OutboxEvent(new_id(), "test.event", {"n": n}, clock.now()) for n in range(count)]
    with store.unit_of_work() as uow:
        uow.outbox.add_all(events)
        uow.commit()
    return events


def pending_ids(store: MemoryStore) -> list[UUID]:
    with store.unit_of_work() as uow:
        return [e.id for e in uow.outbox.pending(limit=100)]


def test_the_relay_marks_dispatched_only_what_the_broker_accepted(
    store: MemoryStore, clock: FixedClock
) -> None:
    events = make_events(store, clock, 5)
    down = RecordingPublisher(refuse_after=2)
    report = RelayOutbox(store.unit_of_work, clock, down)()
    assert (report.dispatched, report.left) == (2, 3)
    assert pending_ids(store) == [e.id for e in events[2:]]

    up = RecordingPublisher()
    assert RelayOutbox(store.unit_of_work, clock, up)().dispatched == 3
    assert [e.id for e in up.published] == [e.id for e in events[2:]]
    assert pending_ids(store) == []
    assert RelayOutbox(store.unit_of_work, clock, up)().batch == 0


def test_the_relay_takes_a_batch_at_a_time(store: MemoryStore, clock: FixedClock) -> None:
    make_events(store, clock, 5)
    relay = RelayOutbox(store.unit_of_work, clock, RecordingPublisher(), batch_size=2)
    assert [relay().dispatched for _ in range(4)] == [2, 2, 1, 0]


def test_committed_events_are_handed_over_right_after_the_unit_of_work(
    store: MemoryStore, clock: FixedClock
) -> None:
    publisher = RecordingPublisher()
    hand_over = PublishCommittedEvents(store.unit_of_work, clock, publisher)
    alice = open_account(store.unit_of_work, clock, "alice", balance="15.00")

    DebitWallet(lambda: store.unit_of_work(after_commit=hand_over), clock)(
        WalletChange(alice.id, Decimal("8.00"), TransactionType.ADJUSTMENT, "x", "test", "1")
    )
    (event,) = publisher.published
    assert event.event_type == "balance.low"
    assert pending_ids(store) == []


def test_a_broker_down_at_commit_leaves_the_events_for_the_relay(
    store: MemoryStore, clock: FixedClock
) -> None:
    down = PublishCommittedEvents(store.unit_of_work, clock, RecordingPublisher(refuse_after=0))
    alice = open_account(store.unit_of_work, clock, "alice", balance="15.00")

    # The use case succeeds all the same: its transaction is committed.
    entry = DebitWallet(lambda: store.unit_of_work(after_commit=down), clock)(
        WalletChange(alice.id, Decimal("8.00"), TransactionType.ADJUSTMENT, "x", "test", "1")
    )
    assert entry.balance_after == Decimal("7.00")
    (waiting,) = pending_ids(store)

    up = RecordingPublisher()
    RelayOutbox(store.unit_of_work, clock, up)()
    assert [e.id for e in up.published] == [waiting]


def test_rolled_back_events_are_never_handed_over(store: MemoryStore, clock: FixedClock) -> None:
    publisher = RecordingPublisher()
    hand_over = PublishCommittedEvents(store.unit_of_work, clock, publisher)
    with store.unit_of_work(after_commit=hand_over) as uow:
        uow.outbox.add(OutboxEvent(new_id(), "test.event", {}, clock.now()))
        uow.rollback()
        kept = OutboxEvent(new_id(), "test.event", {}, clock.now())
        uow.outbox.add(kept)
        uow.commit()
        uow.outbox.add(OutboxEvent(new_id(), "test.event", {}, clock.now()))
    assert [e.id for e in publisher.published] == [kept.id]


def test_the_scan_walks_on_and_starts_over_once_it_reaches_the_end(
    store: MemoryStore, clock: FixedClock
) -> None:
    shop = Shop(store.unit_of_work, clock, ShopPolicy())
    alice = open_account(store.unit_of_work, clock, "alice", balance="500.00")
    for _ in range(4):
        token = shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=12)).token
        start_clock(store.unit_of_work, token, clock.now())
    scan = ScanExpiringTokens(store.unit_of_work, clock, batch_size=2)
    assert [scan(), scan()] == [2, 2]
    # Mid-walk, a token that expires sooner than those already claimed becomes due: the walk
    # reaches its end first, then starts over and finds it.
    early = shop.purchase_token(TokenOrder(user_id=alice.id, duration_hours=1)).token
    start_clock(store.unit_of_work, early, clock.now())
    assert [scan(), scan(), scan()] == [0, 1, 0]
