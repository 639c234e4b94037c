"""Outgoing webhooks: a user's endpoints, their secrets, test events and the delivery log.

Only the owner sees or touches an endpoint; anyone else gets 404, as for an unknown one. The
secret appears once, in the creation (or rotation) response.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, JSONBody

from zenzefi_api.auth import BEARER, login_required
from zenzefi_api.context import CoreDep, CurrentUser
from zenzefi_api.schemas import OptionalTimestamp, Timestamp, error_responses, timestamp
from zenzefi_core.adapters.resolver import SocketResolver
from zenzefi_core.bootstrap import Core
from zenzefi_core.domain.webhooks import DeliveryState, WebhookDelivery, WebhookEndpoint
from zenzefi_core.services.webhooks import (
    CreateWebhook,
    DeleteWebhook,
    DeliveryRecord,
    GetWebhook,
    ListDeliveries,
    ListWebhooks,
    Redeliver,
    RotateWebhookSecret,
    SendTestWebhook,
    UpdateWebhook,
    WebhookPolicy,
)
from zenzefi_core.webhooks import WEBHOOK_EVENTS, SecretCipher

Url = Annotated[
    str,
    msgspec.Meta(
        max_length=2000,
        description="http(s) URL; one resolving to a private address is 400 unless the "
        "server allows them (WEBHOOK_ALLOW_PRIVATE)",
        examples=["https://example.com/zenzefi/webhooks"],
    ),
]
Events = Annotated[
    list[Annotated[str, msgspec.Meta(max_length=64)]],
    msgspec.Meta(
        max_length=len(WEBHOOK_EVENTS),
        description="Events to receive: " + ", ".join(WEBHOOK_EVENTS),
        examples=[["token.purchased", "balance.low"]],
    ),
]


def _moment(value: datetime | None) -> str | None:
    return None if value is None else timestamp(value)


class WebhookIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: Url
    events: Events


class WebhookChangeIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: Url | None = None
    events: Events | None = None
    is_active: bool | None = None


class CreatedWebhookOut(msgspec.Struct, kw_only=True):
    webhook_id: UUID
    secret: Annotated[str, msgspec.Meta(description="`whsec_…`; shown in this response only")]
    url: str
    events: list[str]


class WebhookOut(msgspec.Struct, kw_only=True):
    webhook_id: UUID
    url: str
    events: list[str]
    is_active: bool
    created_at: Timestamp
    updated_at: Timestamp
    disabled_at: Annotated[
        OptionalTimestamp,
        msgspec.Meta(description="When repeated failures switched it off; null otherwise"),
    ]

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> WebhookOut:
        return cls(
            webhook_id=endpoint.id,
            url=endpoint.url,
            events=list(endpoint.events),
            is_active=endpoint.is_active,
            created_at=timestamp(endpoint.created_at),
            updated_at=timestamp(endpoint.updated_at),
            disabled_at=_moment(endpoint.disabled_at),
        )


class WebhookList(msgspec.Struct, kw_only=True):
    items: list[WebhookOut]


class RotatedSecretOut(msgspec.Struct, kw_only=True):
    webhook_id: UUID
    secret: Annotated[str, msgspec.Meta(description="The new secret, shown once")]
    previous_secret_valid_until: Annotated[
        OptionalTimestamp,
        msgspec.Meta(description="Until then every message carries both signatures"),
    ]


class AttemptOut(msgspec.Struct, kw_only=True):
    attempted_at: Timestamp
    status_code: int | None
    latency_ms: int
    response_body: Annotated[
        str | None, msgspec.Meta(description="The first 1 KiB of the answer at most")
    ]
    error: str | None


class DeliveryOut(msgspec.Struct, kw_only=True):
    delivery_id: Annotated[UUID, msgspec.Meta(description="The `webhook-id` of every attempt")]
    event: str
    event_id: UUID
    state: DeliveryState
    attempt_count: int
    last_status_code: int | None
    next_retry_at: OptionalTimestamp
    created_at: Timestamp
    attempts: list[AttemptOut]

    @classmethod
    def of(cls, delivery: WebhookDelivery, record: DeliveryRecord | None = None) -> DeliveryOut:
        pending = delivery.state is DeliveryState.PENDING
        return cls(
            delivery_id=delivery.id,
            event=delivery.event_type,
            event_id=delivery.event_id,
            state=delivery.state,
            attempt_count=delivery.attempts,
            last_status_code=delivery.last_status_code,
            next_retry_at=_moment(delivery.next_attempt_at) if pending else None,
            created_at=timestamp(delivery.created_at),
            attempts=[
                AttemptOut(
                    attempted_at=timestamp(a.attempted_at),
                    status_code=a.status_code,
                    latency_ms=a.latency_ms,
                    response_body=a.response_body,
                    error=a.error,
                )
                for a in (record.attempts if record else [])
            ],
        )


class DeliveryList(msgspec.Struct, kw_only=True):
    items: list[DeliveryOut]


def _policy(core: Core) -> WebhookPolicy:
    return WebhookPolicy.from_settings(core.settings)


def _cipher(core: Core) -> SecretCipher:
    return SecretCipher(core.settings.resolved_secret_key())


class WebhooksController(Controller):
    path = "/webhooks"
    tags = ("Webhooks",)
    security = BEARER
    guards = (login_required,)

    @post(
        "/",
        operation_id="createWebhook",
        summary="Register an endpoint",
        description="Returns the endpoint's secret, shown only here. A URL that is not http(s) "
        "or resolves to a private address is 400; an unknown event is 422.",
        status_code=201,
        responses=error_responses(400, 401, 403, 413, 422, 503),
        sync_to_thread=True,
    )
    def create(
        self, core: CoreDep, current_user: CurrentUser, data: JSONBody[WebhookIn]
    ) -> CreatedWebhookOut:
        created = CreateWebhook(
            core.uow, core.clock, _cipher(core), SocketResolver(), _policy(core)
        )(current_user.id, data.url, data.events)
        endpoint = created.endpoint
        return CreatedWebhookOut(
            webhook_id=endpoint.id,
            secret=created.secret,
            url=endpoint.url,
            events=list(endpoint.events),
        )

    @get(
        "/",
        operation_id="listWebhooks",
        summary="The caller's endpoints, without secrets",
        responses=error_responses(401, 403, 503),
        sync_to_thread=True,
    )
    def list_webhooks(self, core: CoreDep, current_user: CurrentUser) -> WebhookList:
        return WebhookList(
            items=[WebhookOut.of(e) for e in ListWebhooks(core.uow)(current_user.id)]
        )

    @get(
        "/{webhook_id:uuid}",
        operation_id="getWebhook",
        summary="One endpoint",
        responses=error_responses(401, 403, 404, 503),
        sync_to_thread=True,
    )
    def read(
        self, core: CoreDep, current_user: CurrentUser, webhook_id: FromPath[UUID]
    ) -> WebhookOut:
        return WebhookOut.of(GetWebhook(core.uow)(current_user.id, webhook_id))

    @patch(
        "/{webhook_id:uuid}",
        operation_id="updateWebhook",
        summary="Change the URL, the events or whether it is active",
        description="Turning a disabled endpoint back on gives it a fresh failure window.",
        responses=error_responses(400, 401, 403, 404, 413, 422, 503),
        sync_to_thread=True,
    )
    def update(
        self,
        core: CoreDep,
        current_user: CurrentUser,
        webhook_id: FromPath[UUID],
        data: JSONBody[WebhookChangeIn],
    ) -> WebhookOut:
        changed = UpdateWebhook(core.uow, core.clock, SocketResolver(), _policy(core))(
            current_user.id,
            webhook_id,
            url=data.url,
            events=data.events,
            is_active=data.is_active,
        )
        return WebhookOut.of(changed)

    @delete(
        "/{webhook_id:uuid}",
        operation_id="deleteWebhook",
        summary="Delete an endpoint and its delivery log",
        status_code=204,
        responses=error_responses(401, 403, 404, 503),
        sync_to_thread=True,
    )
    def remove(self, core: CoreDep, current_user: CurrentUser, webhook_id: FromPath[UUID]) -> None:
        DeleteWebhook(core.uow)(current_user.id, webhook_id)

    @post(
        "/{webhook_id:uuid}/test",
        operation_id="testWebhook",
        summary="Send a webhook.test event to this endpoint",
        status_code=202,
        responses=error_responses(401, 403, 404, 503),
        sync_to_thread=True,
    )
    def test(
        self, core: CoreDep, current_user: CurrentUser, webhook_id: FromPath[UUID]
    ) -> DeliveryOut:
        return DeliveryOut.of(SendTestWebhook(core.uow, core.clock)(current_user.id, webhook_id))

    @post(
        "/{webhook_id:uuid}/rotate-secret",
        operation_id="rotateWebhookSecret",
        summary="Replace the secret",
        description="The new secret is shown once; the old one keeps signing beside it "
        "(a second `v1` signature) until `previous_secret_valid_until`.",
        status_code=200,
        responses=error_responses(401, 403, 404, 503),
        sync_to_thread=True,
    )
    def rotate(
        self, core: CoreDep, current_user: CurrentUser, webhook_id: FromPath[UUID]
    ) -> RotatedSecretOut:
        rotated = RotateWebhookSecret(core.uow, core.clock, _cipher(core), _policy(core))(
            current_user.id, webhook_id
        )
        return RotatedSecretOut(
            webhook_id=rotated.endpoint.id,
            secret=rotated.secret,
            previous_secret_valid_until=_moment(rotated.endpoint.previous_secret_until),
        )

    @get(
        "/{webhook_id:uuid}/deliveries",
        operation_id="listWebhookDeliveries",
        summary="The delivery log, newest first",
        description="Each delivery with its state, attempt count, last status code, next "
        "retry and every attempt (time, status, latency, the answer's first 1 KiB, error).",
        responses=error_responses(401, 403, 404, 503),
        sync_to_thread=True,
    )
    def deliveries(
        self, core: CoreDep, current_user: CurrentUser, webhook_id: FromPath[UUID]
    ) -> DeliveryList:
        records = ListDeliveries(core.uow)(current_user.id, webhook_id)
        return DeliveryList(items=[DeliveryOut.of(r.delivery, r) for r in records])

    @post(
        "/{webhook_id:uuid}/deliveries/{delivery_id:uuid}/redeliver",
        operation_id="redeliverWebhook",
        summary="Queue one delivery again, under the same webhook-id",
        status_code=202,
        responses=error_responses(401, 403, 404, 503),
        sync_to_thread=True,
    )
    def redeliver(
        self,
        core: CoreDep,
        current_user: CurrentUser,
        webhook_id: FromPath[UUID],
        delivery_id: FromPath[UUID],
    ) -> DeliveryOut:
        requeued = Redeliver(core.uow, core.clock)(current_user.id, webhook_id, delivery_id)
        return DeliveryOut.of(requeued)
