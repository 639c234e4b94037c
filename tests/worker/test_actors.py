"""The actors and jobs end to end on Dramatiq's in-process broker with a worker thread, a real
database (SQLite and PostgreSQL) and a real SMTP server on loopback: each email arrives once,
with the right recipient, subject and content; failures are retried and, in the end, recorded."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from dramatiq.brokers.stub import StubBroker

from tests.api.conftest import running as serving
from tests.notifications import Notifier, SmtpServer, eventually, first_use, start_clock
from tests.worker.conftest import Running, account, debit
from zenzefi_api.app import create_app
from zenzefi_core.bootstrap import Core
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import OutboxEvent
from zenzefi_core.domain.notifications import Notification, NotificationKind, NotificationState
from zenzefi_core.errors import BrokerUnavailable
from zenzefi_core.services.tokens import PurchaseToken, TokenOrder
from zenzefi_core.settings import Settings
from zenzefi_worker.app import WorkerApp
from zenzefi_worker.embedded import EmbeddedWorker

S = NotificationState


def notification_log(core: Core) -> list[Notification]:
    with core.uow() as uow:
        return list(uow.notifications.list_entries(limit=100, offset=0).items)


def pending_events(core: Core) -> list[OutboxEvent]:
    with core.uow() as uow:
        return uow.outbox.pending(limit=100)


class RefusingPublisher:
    """A broker that is down."""

    def publish(self, event: OutboxEvent) -> None:
        raise BrokerUnavailable("connection refused")


def test_the_one_click_unsubscribe_of_a_delivered_email_works_without_a_login(
    running: Running, core: Core, smtp: SmtpServer
) -> None:
    alice = account(core, "alice", balance="15.00")
    debit(core, alice, "8.00")
    running.settle()
    (received,) = smtp.wait_for(1)
    # RFC 8058: both headers, the link in angle brackets.
    header = str(received.message["List-Unsubscribe"])
    assert header.startswith("<")
    assert header.endswith(">")
    assert received.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = urlsplit(header[1:-1])
    assert link.path == "/api/v1/notifications/unsubscribe"

    with serving(create_app(core.settings, core)) as client:
        # What a mail client's unsubscribe button sends: no cookie, no login, this body.
        answer = client.post(
            f"{link.path}?{link.query}",
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert answer.status_code == 200, answer.text
    with core.uow() as uow:
        assert uow.notification_preferences.for_user(alice.id) == {
            NotificationKind.BALANCE_LOW: False
        }


def test_a_low_balance_alert_arrives_once(running: Running, core: Core, smtp: SmtpServer) -> None:
    alice = account(core, "alice", balance="15.00")
    debit(core, alice, "8.00")
    running.settle()

    (received,) = smtp.wait_for(1)
    assert received.rcpt_tos == ["alice@example.com"]
    assert received.mail_from == "no-reply@zenzefi.example"
    assert received.message["Subject"] == "Low balance alert"
    assert received.message["To"] == "alice@example.com"
    assert "Your balance is low: 7.00 ZNC (below 10.00 ZNC)" in received.text
    assert "<strong>7.00 ZNC</strong>" in received.html
    assert "/api/v1/notifications/unsubscribe?token=" in received.message["List-Unsubscribe"]
    (logged,) = notification_log(core)
    assert (logged.state, logged.attempts) == (S.SENT, 1)
    assert received.message["Message-ID"] == f"<{logged.id}@zenzefi.example>"
    # Handed over right after the commit and marked dispatched with the process's next batch
    # of marks: nothing was left for the relay.
    eventually(lambda: pending_events(core) == [], what="the event to be marked dispatched")

    # The same event handled again (a second delivery of its message) sends nothing new.
    event_id = logged.dedup_key.rsplit(":", 1)[1]
    running.app.handle_event.send(event_id)
    running.app.run_job("outbox-relay")
    running.settle()
    assert len(smtp.messages()) == 1
    assert len(notification_log(core)) == 1


def test_a_referral_bonus_email_arrives_once(
    running: Running, core: Core, smtp: SmtpServer
) -> None:
    referrer = account(core, "ref", balance="100.00")
    buyer = account(core, "buyer", balance="50.00", referrer=referrer)
    bought = PurchaseToken(core.uow, core.clock, core.policy)(
        TokenOrder(user_id=buyer.id, duration_hours=24)
    )
    first_use(core, bought.token)  # the bonus is paid, and told, at the token's first use
    running.settle()

    (received,) = smtp.wait_for(1)
    assert received.rcpt_tos == ["ref@example.com"]
    assert received.message["Subject"] == "You earned a referral bonus!"
    assert "You earned a referral bonus of 1.80 ZNC." in received.text
    assert "Your new balance: 101.80 ZNC" in received.text
    assert f"Keep sharing your referral code: {referrer.referral_code}" in received.text


def test_the_expiry_scan_twice_sends_one_email_per_token(
    running: Running, core: Core, smtp: SmtpServer
) -> None:
    alice = account(core, "alice", balance="500.00")
    bob = account(core, "bob", balance="500.00")
    buy = PurchaseToken(core.uow, core.clock, core.policy)
    now = core.clock.now()
    ending = start_clock(core.uow, buy(TokenOrder(user_id=alice.id, duration_hours=24)).token, now)
    start_clock(core.uow, buy(TokenOrder(user_id=bob.id, duration_hours=168)).token, now)
    buy(TokenOrder(user_id=bob.id, duration_hours=1))  # never used: no end yet

    assert running.app.run_job("token-expiry-scan").startswith("token-expiry-scan: 1 token")
    running.settle()
    assert running.app.run_job("token-expiry-scan").startswith("token-expiry-scan: 0 token")
    running.app.run_job("outbox-relay")
    running.settle()

    (received,) = smtp.wait_for(1)
    assert received.rcpt_tos == ["alice@example.com"]
    assert received.message["Subject"] == "Your access token expires soon"
    assert f"Your access token {ending.token_prefix}..." in received.text
    assert "Duration: 24 hours" in received.text
    assert len(smtp.messages()) == 1


def test_an_smtp_server_down_at_first_gets_the_email_after_a_retry(
    running: Running, core: Core, smtp: SmtpServer
) -> None:
    smtp.stop()
    alice = account(core, "alice", balance="15.00")
    debit(core, alice, "8.00")

    def failed_once() -> Notification | None:
        log = notification_log(core)
        return log[0] if log and log[0].attempts >= 1 and log[0].last_error else None

    failure = eventually(failed_once, what="a failed first attempt in the log")
    assert failure.state is S.QUEUED
    assert "127.0.0.1" in (failure.last_error or "")

    smtp.start()
    running.settle()
    (received,) = smtp.wait_for(1)
    assert received.message["Subject"] == "Low balance alert"
    (logged,) = notification_log(core)
    assert logged.state is S.SENT
    assert logged.attempts >= 2
    assert len(smtp.messages()) == 1


def test_an_smtp_server_that_never_answers_leaves_a_failed_email_in_the_log(
    running: Running, core: Core, smtp: SmtpServer
) -> None:
    smtp.stop()
    alice = account(core, "alice", balance="15.00")
    debit(core, alice, "8.00")
    running.settle()

    (logged,) = notification_log(core)
    assert logged.state is S.FAILED
    assert logged.attempts == core.settings.notifications.max_attempts
    assert logged.last_error
    # Dramatiq did not drop it either: no message failed, the log holds the outcome.
    assert running.app.broker.dead_letters == []  # type: ignore[attr-defined]


def test_a_refused_recipient_is_not_retried(running: Running, core: Core, smtp: SmtpServer) -> None:
    smtp.refused.add("alice@example.com")
    alice = account(core, "alice", balance="15.00")
    debit(core, alice, "8.00")
    running.settle()

    (logged,) = notification_log(core)
    assert (logged.state, logged.attempts) == (S.FAILED, 1)
    assert "550" in (logged.last_error or "")


def test_events_the_broker_refused_at_commit_go_out_with_the_relay(
    running: Running, core: Core, smtp: SmtpServer
) -> None:
    core.publisher = RefusingPublisher()
    alice = account(core, "alice", balance="15.00")
    debit(core, alice, "8.00")
    running.settle()
    assert smtp.messages() == []
    (waiting,) = pending_events(core)
    assert waiting.event_type == "balance.low"

    summary = running.app.run_job("outbox-relay")
    assert summary.startswith("outbox-relay: 1 event(s) handed to the broker")
    running.settle()
    (received,) = smtp.wait_for(1)
    assert received.message["Subject"] == "Low balance alert"
    assert pending_events(core) == []


def test_the_relay_sends_an_email_whose_message_was_lost(
    running: Running, core: Core, smtp: SmtpServer
) -> None:
    """An email queued in the log whose message vanished (an in-process queue that died with
    its process) is found by the relay's sweep once overdue, and sent."""
    app = running.app
    alice = account(core, "alice", balance="15.00")
    core.publisher = RefusingPublisher()
    debit(core, alice, "8.00")
    (event,) = pending_events(core)
    # The event was relayed and handled, but the message sending its email was lost.
    with core.uow() as uow:
        uow.outbox.mark_dispatched([event.id], core.clock.now())
        uow.commit()
    lost = Notifier(core.uow, FixedClock(core.clock.now())).queue(event.id)
    assert lost.notification_id is not None
    core.publisher = app.publisher

    eventually(
        lambda: "1 overdue email(s) queued again" in app.run_job("outbox-relay"),
        what="the relay to find the overdue email",
    )
    running.settle()
    (received,) = smtp.wait_for(1)
    assert received.rcpt_tos == ["alice@example.com"]
    assert len(smtp.messages()) == 1


def test_every_job_has_a_name_and_runs(running: Running) -> None:
    assert running.app.run_job("session-cleanup") == "session-cleanup: nothing to clean up"
    assert running.app.run_job("idempotency-purge") == (
        "idempotency-purge: 0 expired Idempotency-Key(s) deleted"
    )
    assert set(running.app.jobs) == {
        "outbox-relay",
        "token-expiry-scan",
        "session-cleanup",
        "idempotency-purge",
    }
    with pytest.raises(KeyError):
        running.app.run_job("no-such-job")


def test_the_job_actors_run_the_jobs_on_a_worker(
    running: Running, core: Core, smtp: SmtpServer
) -> None:
    core.publisher = RefusingPublisher()
    alice = account(core, "alice", balance="15.00")
    debit(core, alice, "8.00")
    core.publisher = running.app.publisher

    running.app.job_actors["outbox-relay"].send()
    running.settle()
    assert smtp.wait_for(1)[0].rcpt_tos == ["alice@example.com"]


def test_the_embedded_worker_and_scheduler_deliver_what_the_broker_missed(
    core: Core, settings: Settings, smtp: SmtpServer
) -> None:
    """`zenzefi serve` on the embedded default: worker threads and the scheduler in-process."""
    quick = settings.scheduler.model_copy(update={"outbox_relay_seconds": 0.2})
    core.settings = settings.model_copy(update={"scheduler": quick})
    app = WorkerApp(core, StubBroker())
    embedded = EmbeddedWorker(app)
    core.publisher = RefusingPublisher()
    alice = account(core, "alice", balance="15.00")
    debit(core, alice, "8.00")
    core.publisher = app.publisher
    embedded.start()
    try:
        (received,) = smtp.wait_for(1)
        assert received.message["Subject"] == "Low balance alert"
    finally:
        embedded.stop(drain_seconds=5)
    assert pending_events(core) == []
