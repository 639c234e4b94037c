"""The actors and periodic jobs of one process, bound to one broker and one core.

Actors receive ids, never objects, and are idempotent: the notification log's dedup key and the
lease on each email make a message handled twice send one email. Every process that touches the
broker builds a `WorkerApp`: the API (to enqueue after commit), `zenzefi worker` (to consume),
`zenzefi scheduler` and `zenzefi jobs run` (to run the jobs), and `zenzefi serve` on the embedded
default (all of it).

Actors, by queue:
- `events`: `handle_event(event_id)` turns an outbox event into a queued email (if it calls for
  one) and enqueues it.
- `emails`: `send_notification(notification_id)` makes one attempt at sending; a failure is
  retried after the delay the notification policy sets (`dramatiq.Retry(delay=...)`), and after
  the last attempt the email is recorded as failed.
- `webhooks`: `deliver_webhook(delivery_id)` makes one attempt at one webhook delivery
  (`handle_event` fans each event out to the subscribed endpoints first); a failure is retried
  after the next delay of the webhook schedule, an endpoint with every slot busy is tried again
  200 ms later, and an endpoint disabled by its failures has its owner emailed.
- `jobs`: one actor per periodic job, so a job can also be run by a worker on demand.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import dramatiq
import redis

from zenzefi_core.adapters.mail import mailer_from_settings
from zenzefi_core.adapters.resolver import SocketResolver
from zenzefi_core.bootstrap import Core
from zenzefi_core.domain import OutboxEvent
from zenzefi_core.errors import BrokerUnavailable, MailDeliveryFailed
from zenzefi_core.notifications import NotificationPolicy, UnsubscribeLinks
from zenzefi_core.ports import AccessCache, EmailMessage, Mailer, WebhookSender
from zenzefi_core.services.idempotency import PurgeExpiredKeys
from zenzefi_core.services.notifications import (
    DueNotifications,
    QueueEventEmail,
    SendNotification,
)
from zenzefi_core.services.outbox import DEFAULT_RELAY_BATCH, RelayOutbox
from zenzefi_core.services.proxy import CloseIdleSessions, ReportExpiredTokens
from zenzefi_core.services.token_expiry import ScanExpiringTokens
from zenzefi_core.services.webhooks import (
    CacheSlots,
    DeliverWebhook,
    DisabledEndpoint,
    DueWebhookDeliveries,
    FanOutEvent,
    WebhookPolicy,
)
from zenzefi_core.webhooks import Resolver, SecretCipher
from zenzefi_worker.metrics import (
    EMAILS,
    WEBHOOK_DELIVERIES,
    ActorMetrics,
    email_outcome,
    webhook_outcome,
)
from zenzefi_worker.webhooks import HttpxWebhookSender, RedisSlotCache

logger = logging.getLogger("zenzefi.worker")

EVENTS_QUEUE = "events"
EMAILS_QUEUE = "emails"
JOBS_QUEUE = "jobs"
WEBHOOKS_QUEUE = "webhooks"
QUEUES = (EVENTS_QUEUE, EMAILS_QUEUE, WEBHOOKS_QUEUE, JOBS_QUEUE)

#: One run of a job handles at most this many batches, so a huge backlog cannot keep the
#: scheduler from its other jobs; the next run continues where this one stopped.
MAX_BATCHES_PER_RUN = 50
#: Overdue emails one relay run hands to the worker again.
SWEEP_LIMIT = 500

#: Retries of a message when the database or broker fails under it: 1 s, 2 s, 4 s, ... up to 5
#: minutes, ten times (about 20 minutes in all) before Dramatiq gives the message up.
RETRIES = 10
MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 300_000

_BROKER_ERRORS = (dramatiq.errors.BrokerError, redis.RedisError, OSError)


class DramatiqEventPublisher:
    """The core's `EventPublisher`: one `handle_event` message per outbox event."""

    def __init__(self, actor: dramatiq.Actor[[str], None]) -> None:
        self._actor = actor

    def publish(self, event: OutboxEvent) -> None:
        try:
            self._actor.send(str(event.id))
        except _BROKER_ERRORS as error:
            raise BrokerUnavailable(f"{type(error).__name__}: {error}") from error


@dataclass(frozen=True, slots=True)
class Job:
    """A periodic job: its command-line name, how often the scheduler runs it, and the work,
    which returns a one-line summary for the log and the command line."""

    name: str
    interval_seconds: float
    run: Callable[[], str]
    #: The level the scheduler logs the summary at; a job run every second logs below INFO.
    log_level: int = logging.INFO


class WorkerApp:
    """The broker, the actors declared on it, and the periodic jobs, for one core.

    Building one also sets `core.publisher`, so from then on every use case run through this
    core hands its events to the broker right after it commits.
    """

    def __init__(
        self,
        core: Core,
        broker: dramatiq.Broker,
        *,
        mailer: Mailer | None = None,
        webhook_sender: WebhookSender | None = None,
        resolver: Resolver | None = None,
    ):
        settings = core.settings
        self.core = core
        self.broker = broker
        if not any(isinstance(m, ActorMetrics) for m in broker.middleware):
            broker.add_middleware(ActorMetrics())
        self.mailer = mailer or mailer_from_settings(settings)
        self.policy = NotificationPolicy.from_settings(settings)
        links = UnsubscribeLinks.from_settings(settings)
        self._queue_email = QueueEventEmail(
            core.uow, core.clock, links, settings.public_url, self.policy
        )
        self._send = SendNotification(
            core.uow, core.clock, self.mailer, links, settings.public_url, self.policy
        )
        self._due = DueNotifications(core.uow, core.clock, self.policy)
        self.webhook_policy = WebhookPolicy.from_settings(settings)
        self.webhook_sender = webhook_sender or HttpxWebhookSender(settings.webhooks)
        self._fan_out = FanOutEvent(core.uow, core.clock)
        self._deliver = DeliverWebhook(
            core.uow,
            core.clock,
            SecretCipher(settings.resolved_secret_key()),
            self.webhook_sender,
            resolver or SocketResolver(),
            CacheSlots(
                self._slot_cache(), self.webhook_policy.concurrency, self.webhook_policy.lease
            ),
            self.webhook_policy,
        )
        self._due_webhooks = DueWebhookDeliveries(core.uow, core.clock, self.policy.sweep_grace)

        self.handle_event = self._actor(self._handle_event, EVENTS_QUEUE, max_retries=RETRIES)
        # Our own attempt count decides when an email has failed; Dramatiq's limit only stops
        # a message that keeps failing for another reason (the database is down).
        self.send_notification = self._actor(
            self._send_notification, EMAILS_QUEUE, max_retries=self.policy.max_attempts + RETRIES
        )
        self.deliver_webhook = self._actor(
            self._deliver_webhook,
            WEBHOOKS_QUEUE,
            max_retries=self.webhook_policy.max_attempts + RETRIES,
        )
        self.publisher = DramatiqEventPublisher(self.handle_event)
        core.publisher = self.publisher

        scheduler = settings.scheduler
        self.jobs: dict[str, Job] = {
            job.name: job
            for job in (
                Job("outbox-relay", scheduler.outbox_relay_seconds, self.relay_outbox),
                Job("token-expiry-scan", scheduler.token_expiry_scan_seconds, self.scan_tokens),
                Job("session-cleanup", scheduler.session_cleanup_seconds, self.clean_up_sessions),
                Job(
                    "idempotency-purge",
                    scheduler.idempotency_purge_seconds,
                    self.purge_idempotency_keys,
                ),
            )
        }
        self.job_actors = {
            name: self._actor(job.run, JOBS_QUEUE, name=name.replace("-", "_"), max_retries=0)
            for name, job in self.jobs.items()
        }

    def _slot_cache(self) -> AccessCache:
        """Redis when the broker is Redis, so the slots hold across worker processes."""
        client = getattr(self.broker, "client", None)
        if isinstance(client, redis.Redis):
            return RedisSlotCache(client, self.core.settings.redis.namespace)
        return self.core.access_cache

    def _actor(
        self, fn: Callable[..., Any], queue: str, *, max_retries: int, name: str | None = None
    ) -> dramatiq.Actor[Any, Any]:
        declare = dramatiq.actor(
            broker=self.broker,
            actor_name=name or fn.__name__.lstrip("_"),
            queue_name=queue,
            max_retries=max_retries,
            min_backoff=MIN_BACKOFF_MS,
            max_backoff=MAX_BACKOFF_MS,
        )
        return declare(fn)

    # --- actors ------------------------------------------------------------------------------

    def _handle_event(self, event_id: str) -> None:
        queued = self._queue_email(UUID(event_id))
        if queued.notification_id is not None:
            self.send_notification.send(str(queued.notification_id))
        for delivery_id in self._fan_out(UUID(event_id)):
            self.deliver_webhook.send(str(delivery_id))

    def _deliver_webhook(self, delivery_id: str) -> None:
        outcome = self._deliver(UUID(delivery_id))
        WEBHOOK_DELIVERIES.labels(webhook_outcome(outcome)).inc()
        if outcome.disabled is not None:
            self._tell_disabled(outcome.disabled)
        if outcome.retry_in is None:
            return
        delay = max(int(outcome.retry_in.total_seconds() * 1000), 1)
        if outcome.state is None:
            # Every slot of the endpoint is busy: wait for one without using up a retry.
            self.deliver_webhook.send_with_options(args=(delivery_id,), delay=delay)
            return
        raise dramatiq.Retry(f"webhook receiver failed: {outcome.error}", delay=delay)

    def _tell_disabled(self, disabled: DisabledEndpoint) -> None:
        """Email the owner once, right away; a mail server that is down loses this notice
        (the endpoint's `disabled_at` still records it)."""
        text = (
            f"Hello {disabled.owner_name},\n\nYour webhook endpoint {disabled.url} failed "
            "every delivery for too long and has been disabled. Fix the receiver, then turn it "
            f"back on: PATCH /api/v1/webhooks/{disabled.endpoint_id} with is_active true.\n"
        )
        message = EmailMessage(
            recipient=disabled.owner_email,
            subject="Webhook endpoint disabled",
            text=text,
            html="<p>" + html.escape(text).replace("\n\n", "</p><p>").replace("\n", "") + "</p>",
            message_id=f"<webhook-disabled-{disabled.endpoint_id}@zenzefi>",
        )
        try:
            self.mailer.send(message)
        except MailDeliveryFailed as error:
            logger.error(
                "could not tell %s about disabled webhook: %s", disabled.owner_email, error
            )

    def _send_notification(self, notification_id: str) -> None:
        outcome = self._send(UUID(notification_id))
        EMAILS.labels(email_outcome(outcome.state)).inc()
        if outcome.retry_in is not None:
            delay = max(int(outcome.retry_in.total_seconds() * 1000), 1)
            raise dramatiq.Retry(f"mail server refused: {outcome.error}", delay=delay)

    # --- periodic jobs -----------------------------------------------------------------------

    def relay_outbox(self) -> str:
        """Hand pending outbox events to the broker, then re-send overdue emails."""
        relay = RelayOutbox(
            self.core.uow,
            self.core.clock,
            self.publisher,
            batch_size=DEFAULT_RELAY_BATCH,
            marks=self.core.dispatch_marks,
        )
        dispatched = left = 0
        for _ in range(MAX_BATCHES_PER_RUN):
            report = relay()
            dispatched += report.dispatched
            left = report.left
            if report.left or report.batch < DEFAULT_RELAY_BATCH:
                break
        overdue = self._due(limit=SWEEP_LIMIT)
        for notification_id in overdue:
            self.send_notification.send(str(notification_id))
        for delivery_id in self._due_webhooks(limit=SWEEP_LIMIT):
            self.deliver_webhook.send(str(delivery_id))
        summary = f"outbox-relay: {dispatched} event(s) handed to the broker"
        if left:
            summary += f", {left} left pending (broker unavailable)"
        return f"{summary}; {len(overdue)} overdue email(s) queued again"

    def scan_tokens(self) -> str:
        """Record a `token.expiring` event for each token that expires within the notice
        window and was not told about yet."""
        scan = ScanExpiringTokens(self.core.uow, self.core.clock, notice=self.policy.expiry_notice)
        total = 0
        for _ in range(MAX_BATCHES_PER_RUN):
            claimed = scan()
            total += claimed
            if claimed < scan.batch_size:
                break
        return f"token-expiry-scan: {total} token(s) expire within {self.policy.expiry_notice}"

    def clean_up_sessions(self) -> str:
        """Close proxy sessions idle for the configured timeout (their tokens are then free for
        another device), and write one `token.expired` event for each token that has run out.
        Both are idempotent: a second run finds nothing left to do."""
        settings = self.core.settings
        closed = CloseIdleSessions(
            self.core.uow, self.core.clock, settings.proxy.session_idle_seconds
        )()
        expired = ReportExpiredTokens(self.core.uow, self.core.clock)()
        if not closed and not expired:
            return "session-cleanup: nothing to clean up"
        return f"session-cleanup: {closed} idle session(s) closed, {expired} token(s) expired"

    def purge_idempotency_keys(self) -> str:
        """Delete the Idempotency-Keys past their lifetime, and the token secrets kept with
        them for replays: nothing is kept longer than a retry could need it."""
        purged = PurgeExpiredKeys(self.core.uow, self.core.clock)()
        return f"idempotency-purge: {purged} expired Idempotency-Key(s) deleted"

    def run_job(self, name: str) -> str:
        job = self.jobs.get(name)
        if job is None:
            raise KeyError(name)
        return job.run()

    def close(self) -> None:
        """Let go of the broker's connections (the core stays its owner's to close)."""
        self.broker.close()
        if isinstance(self.webhook_sender, HttpxWebhookSender):
            self.webhook_sender.close()
        client = getattr(self.broker, "client", None)
        if isinstance(client, redis.Redis):
            client.close()
