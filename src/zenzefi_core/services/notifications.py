"""Email notifications: preferences, unsubscribing, and the life of one email.

An email starts as an outbox event (`balance.low`, `referral.bonus`, `token.expiring`).
`QueueEventEmail` turns the event into a rendered email in the notification log, unless the
user turned that kind off, already had the day's share of it, or the news is stale. The log's
unique dedup key makes this idempotent: the same event handled twice queues one email.
`SendNotification` then makes one attempt at handing it to the mail server; a failed attempt is
recorded and scheduled again with a growing delay, and after the last one the email is marked
failed, so no email disappears without a trace.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit
from uuid import UUID

from zenzefi_core.domain import OutboxEvent, User
from zenzefi_core.domain.notifications import Notification, NotificationKind, NotificationState
from zenzefi_core.emails import render_email
from zenzefi_core.errors import MailDeliveryFailed, UserNotFound
from zenzefi_core.ids import new_id
from zenzefi_core.money import format_amount
from zenzefi_core.notifications import (
    DAILY_WINDOW,
    KIND_FOR_EVENT,
    NotificationPolicy,
    UnsubscribeLinks,
    dedup_key,
)
from zenzefi_core.ports import Clock, EmailMessage, Mailer, UnitOfWork, UnitOfWorkFactory

logger = logging.getLogger("zenzefi.notifications")

#: How much of a mail server's error the log keeps.
_ERROR_LENGTH = 1000


def _preferences(uow: UnitOfWork, user_id: UUID) -> dict[NotificationKind, bool]:
    stored = uow.notification_preferences.for_user(user_id)
    return {kind: stored.get(kind, True) for kind in NotificationKind}


def _existing_user(uow: UnitOfWork, user_id: UUID) -> User:
    user = uow.users.get(user_id)
    if user is None:
        raise UserNotFound(user_id)
    return user


class GetNotificationPreferences:
    """Every kind with whether the user gets it; kinds never set are on."""

    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(self, user_id: UUID) -> dict[NotificationKind, bool]:
        with self._uow_factory() as uow:
            _existing_user(uow, user_id)
            return _preferences(uow, user_id)


class UpdateNotificationPreferences:
    """Turn kinds on or off; kinds not named keep their setting."""

    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow_factory = uow_factory
        self._clock = clock

    def __call__(
        self, user_id: UUID, changes: Mapping[NotificationKind, bool]
    ) -> dict[NotificationKind, bool]:
        now = self._clock.now()
        with self._uow_factory() as uow:
            _existing_user(uow, user_id)
            for kind, enabled in changes.items():
                uow.notification_preferences.set(user_id, NotificationKind(kind), enabled, now)
            result = _preferences(uow, user_id)
            uow.commit()
        return result


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    user_id: UUID
    kind: NotificationKind


@dataclass(frozen=True, slots=True)
class UnsubscribeLink:
    user_id: UUID
    kind: NotificationKind
    #: Whether the user gets this kind of email now.
    enabled: bool


class ReadUnsubscribeLink:
    """What a genuine unsubscribe link would turn off, and whether it is on now. Changes
    nothing: mail scanners and link previews open every link in an email, so opening one must
    not unsubscribe anyone (`Unsubscribe` does, on the confirming POST). A forged or altered
    link raises `InvalidSignature`."""

    def __init__(self, uow_factory: UnitOfWorkFactory, links: UnsubscribeLinks) -> None:
        self._uow_factory = uow_factory
        self._links = links

    def __call__(self, token: str) -> UnsubscribeLink:
        user_id, kind = self._links.verify(token)
        with self._uow_factory() as uow:
            _existing_user(uow, user_id)
            enabled = _preferences(uow, user_id)[kind]
        return UnsubscribeLink(user_id=user_id, kind=kind, enabled=enabled)


class Unsubscribe:
    """The one-click link in every email: turns its kind off for its user, without a login.

    The link's signature is the only credential, so a forged or altered link raises
    `InvalidSignature` and changes nothing. Following a link twice is harmless.
    """

    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock, links: UnsubscribeLinks):
        self._uow_factory = uow_factory
        self._clock = clock
        self._links = links

    def __call__(self, token: str) -> Unsubscribed:
        user_id, kind = self._links.verify(token)
        with self._uow_factory() as uow:
            _existing_user(uow, user_id)
            uow.notification_preferences.set(user_id, kind, False, self._clock.now())
            uow.commit()
        return Unsubscribed(user_id=user_id, kind=kind)


@dataclass(frozen=True, slots=True)
class QueuedEmail:
    """The email to send for an event, or why there is none."""

    #: Set when there is an email waiting to be sent (just queued, or queued by an earlier run).
    notification_id: UUID | None
    skipped: str | None = None


def _moment(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _time_left(delta: timedelta) -> str:
    minutes = max(int(delta.total_seconds() // 60), 0)
    if minutes < 60:
        return "less than an hour" if minutes > 1 else "a minute or so"
    hours = round(minutes / 60)
    return "about 1 hour" if hours == 1 else f"about {hours} hours"


class QueueEventEmail:
    """Turn one outbox event into a queued email, if it calls for one.

    One transaction. Returns the email to send: a new one, or the one an earlier run of the same
    event queued and that is still waiting. No email when the event is not an email event, the
    user is gone or disabled, turned the kind off, already got `daily_limit` emails of this kind
    in the last 24 hours, or the news no longer holds (the token was revoked or has expired, the
    balance is back above the line). The daily limit is counted without locking, so two emails
    racing for a user's last slot of the day may both get it.
    """

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        links: UnsubscribeLinks,
        public_url: str,
        policy: NotificationPolicy,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._links = links
        self._public_url = public_url.rstrip("/")
        self._policy = policy

    def __call__(self, event_id: UUID) -> QueuedEmail:
        with self._uow_factory() as uow:
            event = uow.outbox.get(event_id)
            kind = None if event is None else KIND_FOR_EVENT.get(event.event_type)
            if event is None or kind is None or event.user_id is None:
                return QueuedEmail(None, "not an email event")
            result = self._queue(uow, event, kind, event.user_id)
            uow.commit()
        return result

    def _queue(
        self, uow: UnitOfWork, event: OutboxEvent, kind: NotificationKind, user_id: UUID
    ) -> QueuedEmail:
        reference = (
            str(event.payload["token_id"])
            if kind is NotificationKind.TOKEN_EXPIRING
            else str(event.id)
        )
        key = dedup_key(kind, user_id, reference)
        earlier = uow.notifications.get_by_dedup_key(key)
        if earlier is not None:
            return self._earlier(earlier)
        user = uow.users.get(user_id)
        if user is None or not user.is_active:
            return QueuedEmail(None, "no active user")
        if not _preferences(uow, user_id)[kind]:
            return QueuedEmail(None, "turned off")
        now = self._clock.now()
        sent_today = uow.notifications.count_since(user_id, kind, now - DAILY_WINDOW)
        if sent_today >= self._policy.daily_limit:
            return QueuedEmail(None, "daily limit reached")
        values = self._values(uow, kind, event, user, now)
        if values is None:
            return QueuedEmail(None, "no longer true")
        rendered = render_email(
            kind, values, username=user.username, unsubscribe_url=self._links.url(user.id, kind)
        )
        notification = Notification(
            id=new_id(),
            user_id=user.id,
            kind=kind,
            dedup_key=key,
            recipient=user.email,
            subject=rendered.subject,
            body_text=rendered.text,
            body_html=rendered.html,
            created_at=now,
            next_attempt_at=now,
            updated_at=now,
        )
        if not uow.notifications.add(notification):
            # A concurrent run of the same event logged it between our look and our insert.
            concurrent = uow.notifications.get_by_dedup_key(key)
            if concurrent is None:
                return QueuedEmail(None, "duplicate")
            return self._earlier(concurrent)
        return QueuedEmail(notification.id)

    @staticmethod
    def _earlier(notification: Notification) -> QueuedEmail:
        if notification.state is NotificationState.QUEUED:
            return QueuedEmail(notification.id)
        return QueuedEmail(None, "duplicate")

    def _values(
        self,
        uow: UnitOfWork,
        kind: NotificationKind,
        event: OutboxEvent,
        user: User,
        now: datetime,
    ) -> dict[str, str] | None:
        payload = event.payload
        if kind is NotificationKind.TOKEN_EXPIRING:
            token = uow.tokens.get(UUID(str(payload["token_id"])))
            if token is None or token.expires_at is None or not token.is_active_at(now):
                return None
            return {
                "token_prefix": token.token_prefix,
                "duration_hours": str(token.duration_hours),
                "expires_at": _moment(token.expires_at),
                "time_left": _time_left(token.expires_at - now),
                "purchase_url": f"{self._public_url}/tokens/purchase",
            }
        if kind is NotificationKind.BALANCE_LOW:
            threshold = Decimal(str(payload["threshold"]))
            if user.balance >= threshold:
                return None
            return {
                "balance": format_amount(user.balance),
                "threshold": format_amount(threshold),
                "topup_url": f"{self._public_url}/currency/purchase",
            }
        return {
            "amount": format_amount(Decimal(str(payload["amount"]))),
            "new_balance": format_amount(Decimal(str(payload["new_balance"]))),
            "referral_code": user.referral_code,
            "referee_username": str(payload.get("referee_username") or "Someone you referred"),
        }


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What one attempt did. `state` is None when there was nothing to do: the email was sent
    or given up already, its next attempt is not due, or another worker is sending it."""

    state: NotificationState | None
    #: Set when the attempt failed and another is scheduled this much later.
    retry_in: timedelta | None = None
    error: str | None = None


class SendNotification:
    """One attempt at handing a queued email to the mail server.

    Two short transactions around the mail server's conversation, on purpose: holding one open
    while a server answers (or times out) would hold SQLite's write lock, or a PostgreSQL
    connection, for all that time. The first claims the email with a lease (a conditional
    update), so two workers holding the same message never both send it; the second records
    the outcome. A worker that dies in between leaves the lease to run out, after which the
    email is tried again. A mail server that accepted the email just before such a death may
    thus receive it twice: the same `Message-ID` lets it (or the reader's client) tell.
    """

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        mailer: Mailer,
        links: UnsubscribeLinks,
        public_url: str,
        policy: NotificationPolicy,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._mailer = mailer
        self._links = links
        self._domain = urlsplit(public_url).hostname or "zenzefi"
        self._policy = policy

    def __call__(self, notification_id: UUID) -> DeliveryOutcome:
        now = self._clock.now()
        with self._uow_factory() as uow:
            claimed = uow.notifications.claim(notification_id, now, now + self._policy.lease)
            uow.commit()
        if claimed is None:
            return DeliveryOutcome(None)
        try:
            self._mailer.send(self._message(claimed))
        except MailDeliveryFailed as error:
            return self._failed(claimed, error)
        with self._uow_factory() as uow:
            uow.notifications.mark_sent(claimed.id, self._clock.now())
            uow.commit()
        return DeliveryOutcome(NotificationState.SENT)

    def _message(self, notification: Notification) -> EmailMessage:
        return EmailMessage(
            recipient=notification.recipient,
            subject=notification.subject,
            text=notification.body_text,
            html=notification.body_html,
            message_id=f"<{notification.id}@{self._domain}>",
            unsubscribe_url=self._links.url(notification.user_id, notification.kind),
        )

    def _failed(self, notification: Notification, error: MailDeliveryFailed) -> DeliveryOutcome:
        reason = str(error)[:_ERROR_LENGTH]
        now = self._clock.now()
        last = error.permanent or notification.attempts >= self._policy.max_attempts
        retry_in = None if last else self._policy.retry_delay(notification.attempts)
        with self._uow_factory() as uow:
            uow.notifications.record_failure(
                notification.id,
                error=reason,
                at=now,
                retry_at=None if retry_in is None else now + retry_in,
            )
            uow.commit()
        if retry_in is None:
            logger.error(
                "email %s to %s failed for good after %d attempt(s): %s",
                notification.id,
                notification.recipient,
                notification.attempts,
                reason,
            )
            return DeliveryOutcome(NotificationState.FAILED, error=reason)
        logger.warning(
            "email %s attempt %d failed, next in %s: %s",
            notification.id,
            notification.attempts,
            retry_in,
            reason,
        )
        return DeliveryOutcome(NotificationState.QUEUED, retry_in=retry_in, error=reason)


class DueNotifications:
    """Queued emails whose next attempt is overdue and that nobody is sending: the safety net
    for a retry message the broker lost (the in-process broker loses its queue with its
    process). The relay job hands each one to the worker again."""

    def __init__(
        self, uow_factory: UnitOfWorkFactory, clock: Clock, policy: NotificationPolicy
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._policy = policy

    def __call__(self, *, limit: int) -> list[UUID]:
        now = self._clock.now()
        overdue = now - self._policy.sweep_grace
        with self._uow_factory() as uow:
            return uow.notifications.due(before=overdue, now=now, limit=limit)
