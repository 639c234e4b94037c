"""Outgoing webhooks: endpoints, the fan-out of events to them, and the life of one delivery.

An outbox event fans out (`FanOutEvent`) to one delivery per active endpoint of the event's
user that subscribed to its type; the (event, endpoint) pair is unique, so an event handled
twice is delivered once. `DeliverWebhook` makes one attempt, modelled on the email pipeline:
claim with a lease in a short transaction, talk to the receiver outside any transaction, then
record the attempt and either the success, the next retry (the configured schedule) or the
failure after the last one. An endpoint failing without a single success for the configured
window is disabled, and its owner is told.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from zenzefi_core.domain.webhooks import (
    DeliveryAttempt,
    DeliveryState,
    WebhookDelivery,
    WebhookEndpoint,
)
from zenzefi_core.errors import (
    InvalidWebhookUrl,
    WebhookDeliveryNotFound,
    WebhookNotFound,
    WebhookSendFailed,
)
from zenzefi_core.ids import new_id
from zenzefi_core.ports import AccessCache, Clock, UnitOfWork, UnitOfWorkFactory, WebhookSender
from zenzefi_core.services.events import record_event
from zenzefi_core.settings import Settings, WebhookSettings
from zenzefi_core.webhooks import (
    REDELIVERY_EVENT,
    TEST_EVENT,
    Resolver,
    SecretCipher,
    check_events,
    check_webhook_url,
    generate_secret,
    sign_webhook,
    webhook_target,
)

logger = logging.getLogger("zenzefi.webhooks")

#: How much of an error the attempt log keeps.
_ERROR_LENGTH = 1000
#: The most of a receiver's answer the attempt log keeps: enough to see why it failed, too
#: little to make the log a way of reading what some other server answers.
RESPONSE_EXCERPT_BYTES = 1024
#: Deliveries the log shows at most.
DELIVERY_LOG_LIMIT = 100


@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    """The delivery rules, from the settings."""

    retry_delays: tuple[timedelta, ...]
    rotation_overlap: timedelta
    disable_after: timedelta
    allow_private: bool
    concurrency: int
    timeout: timedelta

    @property
    def max_attempts(self) -> int:
        return len(self.retry_delays) + 1

    @property
    def lease(self) -> timedelta:
        return self.timeout + timedelta(seconds=30)

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookPolicy:
        hooks: WebhookSettings = settings.webhooks
        return cls(
            retry_delays=tuple(timedelta(seconds=s) for s in hooks.retry_delays_seconds),
            rotation_overlap=timedelta(hours=hooks.rotation_overlap_hours),
            disable_after=timedelta(hours=hooks.disable_after_hours),
            allow_private=settings.webhook_allow_private,
            concurrency=hooks.concurrency_per_endpoint,
            timeout=timedelta(seconds=hooks.timeout_seconds),
        )


def _owned(uow: UnitOfWork, user_id: UUID, endpoint_id: UUID) -> WebhookEndpoint:
    endpoint = uow.webhooks.get_endpoint(endpoint_id)
    if endpoint is None or endpoint.user_id != user_id:
        raise WebhookNotFound()
    return endpoint


def message_body(event_type: str, at: datetime, data: dict[str, Any]) -> str:
    """The JSON every attempt of a delivery sends: `type` and, as the product documents name
    it, `event`, the event's time and its data."""
    body = {"type": event_type, "event": event_type, "timestamp": at.isoformat(), "data": data}
    return json.dumps(body, separators=(",", ":"), sort_keys=True, default=str)


@dataclass(frozen=True, slots=True)
class CreatedWebhook:
    endpoint: WebhookEndpoint
    #: Shown once, in the creation (or rotation) response; stored only encrypted.
    secret: str


class CreateWebhook:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        cipher: SecretCipher,
        resolver: Resolver,
        policy: WebhookPolicy,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._cipher = cipher
        self._resolver = resolver
        self._policy = policy

    def __call__(self, user_id: UUID, url: str, events: list[str]) -> CreatedWebhook:
        subscribed = check_events(events)
        check_webhook_url(url, self._resolver, allow_private=self._policy.allow_private)
        secret = generate_secret()
        now = self._clock.now()
        endpoint = WebhookEndpoint(
            id=new_id(),
            user_id=user_id,
            url=url,
            events=subscribed,
            is_active=True,
            secret_encrypted=self._cipher.encrypt(secret),
            created_at=now,
            updated_at=now,
        )
        with self._uow_factory() as uow:
            uow.webhooks.add_endpoint(endpoint)
            uow.commit()
        return CreatedWebhook(endpoint, secret)


class ListWebhooks:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(self, user_id: UUID) -> list[WebhookEndpoint]:
        with self._uow_factory() as uow:
            return uow.webhooks.endpoints_for_user(user_id)


class GetWebhook:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(self, user_id: UUID, endpoint_id: UUID) -> WebhookEndpoint:
        with self._uow_factory() as uow:
            return _owned(uow, user_id, endpoint_id)


class UpdateWebhook:
    """Change the URL (checked like a new one), the events or whether it is active; turning a
    disabled endpoint back on starts its failure window afresh."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        resolver: Resolver,
        policy: WebhookPolicy,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._resolver = resolver
        self._policy = policy

    def __call__(
        self,
        user_id: UUID,
        endpoint_id: UUID,
        *,
        url: str | None = None,
        events: list[str] | None = None,
        is_active: bool | None = None,
    ) -> WebhookEndpoint:
        subscribed = None if events is None else check_events(events)
        if url is not None:
            check_webhook_url(url, self._resolver, allow_private=self._policy.allow_private)
        with self._uow_factory() as uow:
            endpoint = _owned(uow, user_id, endpoint_id)
            changed = uow.webhooks.change_endpoint(
                endpoint.id,
                at=self._clock.now(),
                url=url,
                events=subscribed,
                is_active=is_active,
            )
            if changed is None:
                raise WebhookNotFound()
            uow.commit()
        return changed


class DeleteWebhook:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(self, user_id: UUID, endpoint_id: UUID) -> None:
        with self._uow_factory() as uow:
            _owned(uow, user_id, endpoint_id)
            uow.webhooks.delete_endpoint(endpoint_id)
            uow.commit()


class RotateWebhookSecret:
    """A new secret, shown once; the old one keeps signing beside it for the overlap."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        cipher: SecretCipher,
        policy: WebhookPolicy,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._cipher = cipher
        self._policy = policy

    def __call__(self, user_id: UUID, endpoint_id: UUID) -> CreatedWebhook:
        secret = generate_secret()
        now = self._clock.now()
        with self._uow_factory() as uow:
            endpoint = _owned(uow, user_id, endpoint_id)
            rotated = uow.webhooks.rotate_secret(
                endpoint.id,
                self._cipher.encrypt(secret),
                previous_until=now + self._policy.rotation_overlap,
                at=now,
            )
            if rotated is None:
                raise WebhookNotFound()
            uow.commit()
        return CreatedWebhook(rotated, secret)


def _new_delivery(
    endpoint: WebhookEndpoint, event_id: UUID, event_type: str, body: str, now: datetime
) -> WebhookDelivery:
    return WebhookDelivery(
        id=new_id(),
        endpoint_id=endpoint.id,
        event_id=event_id,
        event_type=event_type,
        body=body,
        created_at=now,
        updated_at=now,
        next_attempt_at=now,
    )


class SendTestWebhook:
    """Queue a `webhook.test` delivery to one endpoint. Its outbox event takes it to the
    worker right after commit (or with the relay), like any other event."""

    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow_factory = uow_factory
        self._clock = clock

    def __call__(self, user_id: UUID, endpoint_id: UUID) -> WebhookDelivery:
        now = self._clock.now()
        with self._uow_factory() as uow:
            endpoint = _owned(uow, user_id, endpoint_id)
            data = {"webhook_id": str(endpoint.id)}
            event = record_event(uow, self._clock, TEST_EVENT, data, user_id=user_id)
            body = message_body(TEST_EVENT, now, data)
            delivery = _new_delivery(endpoint, event.id, TEST_EVENT, body, now)
            uow.webhooks.add_delivery(delivery)
            uow.commit()
        return delivery


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    delivery: WebhookDelivery
    attempts: list[DeliveryAttempt]


class ListDeliveries:
    """The endpoint's delivery log, newest first, each with its attempts."""

    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(
        self, user_id: UUID, endpoint_id: UUID, *, limit: int = DELIVERY_LOG_LIMIT
    ) -> list[DeliveryRecord]:
        with self._uow_factory() as uow:
            _owned(uow, user_id, endpoint_id)
            deliveries = uow.webhooks.deliveries_for_endpoint(endpoint_id, limit=limit)
            return [DeliveryRecord(d, uow.webhooks.attempts(d.id)) for d in deliveries]


class Redeliver:
    """Queue one delivery again, whatever its state; it keeps its id (the `webhook-id`)."""

    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow_factory = uow_factory
        self._clock = clock

    def __call__(self, user_id: UUID, endpoint_id: UUID, delivery_id: UUID) -> WebhookDelivery:
        now = self._clock.now()
        with self._uow_factory() as uow:
            _owned(uow, user_id, endpoint_id)
            delivery = uow.webhooks.get_delivery(delivery_id)
            if delivery is None or delivery.endpoint_id != endpoint_id:
                raise WebhookDeliveryNotFound()
            uow.webhooks.requeue_delivery(delivery_id, now)
            record_event(
                uow,
                self._clock,
                REDELIVERY_EVENT,
                {"delivery_id": str(delivery_id)},
                user_id=user_id,
            )
            uow.commit()
            requeued = uow.webhooks.get_delivery(delivery_id)
        return requeued or delivery


class FanOutEvent:
    """One delivery per subscribed active endpoint of the event's user; returns the deliveries
    waiting to be sent (new ones, or still pending ones an earlier run created).

    Two events of our own ride the same path, so the API needs nothing but the outbox to reach
    the worker: `webhook.test` goes to the one endpoint it names (subscribed or not), and
    `webhook.redelivery` hands an existing delivery over again.
    """

    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow_factory = uow_factory
        self._clock = clock

    def __call__(self, event_id: UUID) -> list[UUID]:
        now = self._clock.now()
        with self._uow_factory() as uow:
            event = uow.outbox.get(event_id)
            if event is None or event.user_id is None:
                return []
            if event.event_type == REDELIVERY_EVENT:
                delivery = uow.webhooks.get_delivery(UUID(str(event.payload["delivery_id"])))
                pending = delivery is not None and delivery.state is DeliveryState.PENDING
                return [delivery.id] if delivery is not None and pending else []
            endpoints = [
                e
                for e in uow.webhooks.active_endpoints(event.user_id)
                if self._wants(e, event.event_type, event.payload)
            ]
            if not endpoints:
                return []
            body = message_body(event.event_type, event.created_at, event.payload)
            waiting: list[UUID] = []
            for endpoint in endpoints:
                delivery = _new_delivery(endpoint, event.id, event.event_type, body, now)
                if uow.webhooks.add_delivery(delivery):
                    waiting.append(delivery.id)
                    continue
                earlier = uow.webhooks.delivery_for(event.id, endpoint.id)
                if earlier is not None and earlier.state is DeliveryState.PENDING:
                    waiting.append(earlier.id)
            uow.commit()
        return waiting

    @staticmethod
    def _wants(endpoint: WebhookEndpoint, event_type: str, payload: dict[str, Any]) -> bool:
        if event_type == TEST_EVENT:
            return str(payload.get("webhook_id")) == str(endpoint.id)
        return event_type in endpoint.events


class CacheSlots:
    """At most `limit` deliveries in flight per endpoint, across every process sharing the
    cache (Redis, or in-process on the embedded default). A slot left by a dead worker frees
    itself when its time runs out."""

    def __init__(self, cache: AccessCache, limit: int, ttl: timedelta) -> None:
        self._cache = cache
        self._limit = limit
        self._ttl = ttl.total_seconds()

    def acquire(self, endpoint_id: UUID) -> str | None:
        for slot in range(self._limit):
            key = f"webhook-slot:{endpoint_id}:{slot}"
            if self._cache.add(key, "1", self._ttl):
                return key
        return None

    def release(self, key: str) -> None:
        self._cache.delete(key)


@dataclass(frozen=True, slots=True)
class DisabledEndpoint:
    endpoint_id: UUID
    url: str
    owner_email: str
    owner_name: str


@dataclass(frozen=True, slots=True)
class WebhookOutcome:
    """What one attempt did; `state` None when there was nothing to do (already delivered or
    given up, not due, another worker holds it, or the endpoint's slots are all busy)."""

    state: DeliveryState | None
    #: Set when the delivery should be tried again this much later.
    retry_in: timedelta | None = None
    error: str | None = None
    #: Set when this failure disabled the endpoint: its owner is to be told.
    disabled: DisabledEndpoint | None = None


#: How long a delivery waits when its endpoint has every slot busy.
BUSY_RETRY = timedelta(milliseconds=200)


class DeliverWebhook:
    """One attempt at one delivery (see the module's docstring)."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        cipher: SecretCipher,
        sender: WebhookSender,
        resolver: Resolver,
        slots: CacheSlots,
        policy: WebhookPolicy,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._cipher = cipher
        self._sender = sender
        self._resolver = resolver
        self._slots = slots
        self._policy = policy

    def __call__(self, delivery_id: UUID) -> WebhookOutcome:
        with self._uow_factory() as uow:
            delivery = uow.webhooks.get_delivery(delivery_id)
        if delivery is None or delivery.state is not DeliveryState.PENDING:
            return WebhookOutcome(None)
        slot = self._slots.acquire(delivery.endpoint_id)
        if slot is None:
            return WebhookOutcome(None, retry_in=BUSY_RETRY, error="endpoint busy")
        try:
            return self._attempt(delivery_id)
        finally:
            self._slots.release(slot)

    def _attempt(self, delivery_id: UUID) -> WebhookOutcome:
        now = self._clock.now()
        with self._uow_factory() as uow:
            claimed = uow.webhooks.claim_delivery(delivery_id, now, now + self._policy.lease)
            endpoint = None if claimed is None else uow.webhooks.get_endpoint(claimed.endpoint_id)
            uow.commit()
        if claimed is None:
            return WebhookOutcome(None)
        if endpoint is None or not endpoint.is_active:
            return self._record(claimed, endpoint, None, "", 0, "endpoint disabled", final=True)
        body = claimed.body.encode("utf-8")
        started = time.monotonic()
        status: int | None = None
        answer = ""
        error: str | None = None
        try:
            # Resolved and checked now, and connected to as checked (see `webhook_target`).
            target = webhook_target(
                endpoint.url, self._resolver, allow_private=self._policy.allow_private
            )
            headers = sign_webhook(
                self._secrets(endpoint, now), str(claimed.id), int(now.timestamp()), body
            )
            headers["content-type"] = "application/json"
            status, raw = self._sender.post(target.url, headers, body, addresses=target.addresses)
            answer = raw[:RESPONSE_EXCERPT_BYTES].decode("utf-8", errors="replace")
        except (WebhookSendFailed, InvalidWebhookUrl) as failure:
            error = str(failure)[:_ERROR_LENGTH]
        latency_ms = int((time.monotonic() - started) * 1000)
        if error is None and status is not None and not 200 <= status < 300:
            error = f"HTTP {status}"
        return self._record(claimed, endpoint, status, answer, latency_ms, error, final=False)

    def _secrets(self, endpoint: WebhookEndpoint, now: datetime) -> list[str]:
        current = [self._cipher.decrypt(endpoint.secret_encrypted)]
        if (
            endpoint.previous_secret_encrypted is not None
            and endpoint.previous_secret_until is not None
            and endpoint.previous_secret_until > now
        ):
            current.append(self._cipher.decrypt(endpoint.previous_secret_encrypted))
        return current

    def _record(
        self,
        delivery: WebhookDelivery,
        endpoint: WebhookEndpoint | None,
        status: int | None,
        answer: str,
        latency_ms: int,
        error: str | None,
        *,
        final: bool,
    ) -> WebhookOutcome:
        now = self._clock.now()
        attempt = DeliveryAttempt(
            id=new_id(),
            delivery_id=delivery.id,
            attempted_at=now,
            latency_ms=latency_ms,
            status_code=status,
            response_body=answer or None,
            error=error,
        )
        retry_in: timedelta | None = None
        if error is None:
            state = DeliveryState.SUCCEEDED
        elif final or delivery.attempts >= self._policy.max_attempts:
            state = DeliveryState.FAILED
        else:
            state = DeliveryState.PENDING
            retry_in = self._policy.retry_delays[delivery.attempts - 1]
        disabled: DisabledEndpoint | None = None
        with self._uow_factory() as uow:
            uow.webhooks.record_attempt(
                attempt, state=state, next_attempt_at=None if retry_in is None else now + retry_in
            )
            if endpoint is not None and endpoint.is_active:
                disabled = self._track_endpoint(uow, endpoint.id, ok=error is None, now=now)
            uow.commit()
        if error is not None:
            logger.warning(
                "webhook delivery %s attempt %d to %s failed: %s",
                delivery.id,
                delivery.attempts,
                endpoint.url if endpoint else "-",
                error,
            )
        return WebhookOutcome(state, retry_in=retry_in, error=error, disabled=disabled)

    def _track_endpoint(
        self, uow: UnitOfWork, endpoint_id: UUID, *, ok: bool, now: datetime
    ) -> DisabledEndpoint | None:
        # Each step is one conditional statement on the failure columns alone, judged on the
        # row as it is then: the owner may have rotated the secret, changed the URL or turned
        # the endpoint off meanwhile, and none of that is written back.
        if ok:
            uow.webhooks.clear_failing(endpoint_id, now)
            return None
        uow.webhooks.mark_failing(endpoint_id, now)
        endpoint = uow.webhooks.disable_failing(
            endpoint_id, failing_since_before=now - self._policy.disable_after, at=now
        )
        if endpoint is None:
            return None
        owner = uow.users.get(endpoint.user_id)
        logger.error(
            "webhook endpoint %s disabled after failing since %s",
            endpoint.id,
            endpoint.failing_since,
        )
        if owner is None:
            return None
        return DisabledEndpoint(endpoint.id, endpoint.url, owner.email, owner.username)


class DueWebhookDeliveries:
    """Pending deliveries whose next attempt is overdue and that nobody holds: the safety net
    for a retry message the broker lost. The relay job hands each to the worker again."""

    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock, grace: timedelta) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._grace = grace

    def __call__(self, *, limit: int) -> list[UUID]:
        now = self._clock.now()
        with self._uow_factory() as uow:
            return uow.webhooks.due_deliveries(before=now - self._grace, now=now, limit=limit)
