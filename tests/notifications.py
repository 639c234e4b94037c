"""Helpers for the email tests: wired notification use cases, mailers that fail on purpose, a
real SMTP server on loopback (aiosmtpd), and tokens whose clock has started."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage as MimeMessage
from typing import Any, TypeVar
from uuid import UUID

from aiosmtpd.controller import Controller

from zenzefi_core.adapters.mail import MemoryMailer
from zenzefi_core.bootstrap import Core
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import OutboxEvent
from zenzefi_core.domain.notifications import Notification
from zenzefi_core.domain.tokens import AccessToken
from zenzefi_core.errors import MailDeliveryFailed
from zenzefi_core.notifications import NotificationPolicy, UnsubscribeLinks
from zenzefi_core.ports import EmailMessage, UnitOfWorkFactory
from zenzefi_core.services.notifications import (
    DueNotifications,
    GetNotificationPreferences,
    QueueEventEmail,
    SendNotification,
    Unsubscribe,
    UpdateNotificationPreferences,
)
from zenzefi_core.services.proxy import ProxyAccess, ProxyRequest

PUBLIC_URL = "https://zenzefi.example"
SECRET_KEY = "notification-tests-secret-" + "s" * 40
T = TypeVar("T")


def eventually(
    probe: Callable[[], T | None], *, timeout: float = 15.0, what: str = "the condition"
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class FlakyMailer:
    """Fails the first `failures` emails (transiently, or for good), then delivers."""

    def __init__(self, failures: int, *, permanent: bool = False) -> None:
        self.failures = failures
        self.permanent = permanent
        self.attempts = 0
        self.delivered = MemoryMailer()

    @property
    def sent(self) -> list[EmailMessage]:
        return self.delivered.sent

    def send(self, message: EmailMessage) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise MailDeliveryFailed("451 try again later", permanent=self.permanent)
        self.delivered.send(message)


@dataclass
class Notifier:
    """The notification use cases wired to one store, clock, mailer and policy."""

    uow_factory: UnitOfWorkFactory
    clock: FixedClock
    mailer: Any = field(default_factory=MemoryMailer)
    policy: NotificationPolicy = field(
        default_factory=lambda: NotificationPolicy(
            max_attempts=3, retry_base=timedelta(seconds=30), retry_max=timedelta(minutes=10)
        )
    )

    def __post_init__(self) -> None:
        f, c = self.uow_factory, self.clock
        self.links = UnsubscribeLinks(SECRET_KEY, PUBLIC_URL)
        self.queue = QueueEventEmail(f, c, self.links, PUBLIC_URL, self.policy)
        self.send = SendNotification(f, c, self.mailer, self.links, PUBLIC_URL, self.policy)
        self.due = DueNotifications(f, c, self.policy)
        self.preferences = GetNotificationPreferences(f)
        self.update_preferences = UpdateNotificationPreferences(f, c)
        self.unsubscribe = Unsubscribe(f, c, self.links)

    def events(self, event_type: str) -> list[OutboxEvent]:
        with self.uow_factory() as uow:
            return [e for e in uow.outbox.pending(limit=10_000) if e.event_type == event_type]

    def deliver(self, event: OutboxEvent) -> Notification | None:
        """Queue the event's email and make one attempt at sending it."""
        queued = self.queue(event.id)
        if queued.notification_id is None:
            return None
        self.send(queued.notification_id)
        return self.notification(queued.notification_id)

    def notification(self, notification_id: UUID) -> Notification:
        with self.uow_factory() as uow:
            found = uow.notifications.get(notification_id)
        assert found is not None
        return found

    def log(self) -> list[Notification]:
        with self.uow_factory() as uow:
            return list(uow.notifications.list_entries(limit=100, offset=0).items)


def start_clock(uow_factory: UnitOfWorkFactory, token: AccessToken, at: Any) -> AccessToken:
    """Start a token's clock at `at`, straight in the store: no session, and no referral share
    paid (a real first request goes through `ProxyAccess`, as `first_use` does)."""
    with uow_factory() as uow:
        activated = uow.tokens.activate(token.id, at)
        uow.commit()
    assert activated is not None
    return activated


def first_use(core: Core, token: AccessToken) -> None:
    """The token's first proxied request, now: it starts the clock and pays the referrer."""
    access = ProxyAccess(core.uow, core.clock, core.access_cache, referrals=core.policy.referrals)
    access.authorize(ProxyRequest(token_hash=token.token_hash, device_id="desk-0001"))


# --- a real SMTP server ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: MimeMessage
    #: Whether the conversation was encrypted (STARTTLS) and logged in.
    tls: bool = False
    login: str | None = None

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None
        # SMTP carries CRLF line ends; compare with what was written.
        return str(part.get_content()).replace("\r\n", "\n")

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None
        return str(part.get_content()).replace("\r\n", "\n")


class _Collector:
    def __init__(self, inbox: SmtpServer) -> None:
        self._inbox = inbox

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self._inbox.refused:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.content, policy=email_policy.default)
        auth = session.auth_data if session.authenticated else None
        login = auth.login.decode() if auth is not None else None
        received = Received(
            envelope.mail_from,
            list(envelope.rcpt_tos),
            message,
            tls=session.ssl is not None,
            login=login,
        )
        with self._inbox.lock:
            self._inbox.received.append(received)
        return "250 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd on 127.0.0.1, keeping what it receives; `stop()` and `start()` again on the
    same port to simulate an outage."""

    def __init__(self, port: int | None = None, **smtp_options: Any) -> None:
        self.port = port or free_port()
        self.received: list[Received] = []
        self.refused: set[str] = set()
        self.lock = threading.Lock()
        self._options = smtp_options
        self._controller: Controller | None = None

    def start(self) -> SmtpServer:
        self._controller = Controller(
            _Collector(self),
            hostname="127.0.0.1",
            port=self.port,
            ready_timeout=10,
            **self._options,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def wait_for(self, count: int, *, timeout: float = 15.0) -> list[Received]:
        """The emails received, once there are at least `count` of them."""

        def enough() -> list[Received] | None:
            got = self.messages()
            return got if len(got) >= count else None

        return eventually(enough, timeout=timeout, what=f"{count} email(s) at the SMTP server")
