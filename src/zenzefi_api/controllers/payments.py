"""Top-ups: a payment intent for the caller, the provider's signed callback, and dev mode.

The wallet changes only when the provider's callback (or, in dev mode, an operator) settles an
intent; the rules for that live in `zenzefi_core.services.payments`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar import Controller, Request, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody

from zenzefi_api.auth import BEARER, login_required, superuser_required
from zenzefi_api.context import ClientAddress, CoreDep, CurrentUser
from zenzefi_api.errors import amount_field
from zenzefi_api.schemas import (
    Limit,
    Money,
    Offset,
    OptionalTimestamp,
    Timestamp,
    error_responses,
    money,
    page_of,
    timestamp,
)
from zenzefi_core.domain import PaymentIntent, PaymentStatus
from zenzefi_core.money import Sign
from zenzefi_core.paging import DEFAULT_LIMIT
from zenzefi_core.services.payments import (
    ConfirmPaymentManually,
    CreatePaymentIntent,
    GetPayment,
    HandlePaymentCallback,
    ListPayments,
    ManualSettlement,
    Settlement,
)

AMOUNT_TEXT_MAX = 32


class PurchaseIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    amount_znc: Annotated[
        str,
        msgspec.Meta(
            max_length=AMOUNT_TEXT_MAX,
            description="ZNC to buy: positive, at most two decimals",
            examples=["100.00"],
        ),
    ]


class PaymentOut(msgspec.Struct, kw_only=True):
    payment_id: UUID
    payment_url: str
    amount_znc: Money
    amount_rub: Money
    status: PaymentStatus
    created_at: Timestamp
    completed_at: OptionalTimestamp

    @classmethod
    def of(cls, intent: PaymentIntent) -> PaymentOut:
        return cls(
            payment_id=intent.id,
            payment_url=intent.payment_url,
            amount_znc=money(intent.amount_znc),
            amount_rub=money(intent.amount_rub),
            status=intent.status,
            created_at=timestamp(intent.created_at),
            completed_at=timestamp(intent.completed_at) if intent.completed_at else None,
        )


class PaymentPage(msgspec.Struct, kw_only=True):
    items: list[PaymentOut]
    total: int
    limit: int
    offset: int


class CallbackOut(msgspec.Struct, kw_only=True):
    #: `processed` the first time an event id is seen, `duplicate` on a replay.
    result: Literal["processed", "duplicate"]
    payment_id: UUID
    status: PaymentStatus
    credited: bool

    @classmethod
    def of(cls, settlement: Settlement) -> CallbackOut:
        return cls(
            result="duplicate" if settlement.replay else "processed",
            payment_id=settlement.intent.id,
            status=settlement.intent.status,
            credited=settlement.credited,
        )


class ManualSettlementIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    status: Literal["succeeded", "failed", "cancelled"] = "succeeded"


class TopUpController(Controller):
    """The caller's payment intents."""

    path = "/currency"
    tags = ("Currency",)
    guards = (login_required,)
    security = BEARER

    @post(
        "/purchase",
        operation_id="createPaymentIntent",
        summary="Start a top-up: a pending payment intent and where to pay it",
        description="The balance changes only when the payment provider confirms the payment "
        "with a signed callback; follow `payment_url` to pay.",
        status_code=201,
        responses=error_responses(400, 401, 403, 422, 503),
        sync_to_thread=True,
    )
    def purchase(
        self, core: CoreDep, current_user: CurrentUser, data: JSONBody[PurchaseIn]
    ) -> PaymentOut:
        amount = amount_field(
            data.amount_znc, "amount_znc", sign=Sign.POSITIVE, maximum=core.settings.max_amount
        )
        intent = CreatePaymentIntent(
            core.uow, core.clock, core.payment_provider, core.settings.payments.rub_per_znc
        )(user_id=current_user.id, amount_znc=amount)
        return PaymentOut.of(intent)

    @get(
        "/payments",
        operation_id="listPayments",
        summary="The caller's payment intents, newest first",
        responses=error_responses(401, 403, 422, 503),
        sync_to_thread=True,
    )
    def payments(
        self,
        core: CoreDep,
        current_user: CurrentUser,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> PaymentPage:
        page = ListPayments(core.uow)(user_id=current_user.id, limit=limit, offset=offset)
        return page_of(PaymentPage, page, PaymentOut.of)

    @get(
        "/payments/{payment_id:uuid}",
        operation_id="getPayment",
        summary="One of the caller's payment intents",
        responses=error_responses(401, 403, 404, 503),
        sync_to_thread=True,
    )
    def payment(
        self, core: CoreDep, current_user: CurrentUser, payment_id: FromPath[UUID]
    ) -> PaymentOut:
        return PaymentOut.of(GetPayment(core.uow)(user_id=current_user.id, payment_id=payment_id))


class PaymentWebhookController(Controller):
    """The payment provider's callbacks: authenticated by their signature, not by a login."""

    path = "/payments"
    tags = ("Currency",)

    @post(
        "/webhook",
        operation_id="paymentProviderCallback",
        summary="The payment provider reports a payment's final state",
        description="Signed with `X-Payment-Timestamp` and `X-Payment-Signature: v1=<hex "
        "HMAC-SHA256(secret, timestamp + '.' + body)>`. Idempotent by the event id: a replay "
        "changes nothing and answers `duplicate`. Only `succeeded` credits the wallet, once.",
        status_code=200,
        responses=error_responses(400, 401, 404, 503),
    )
    async def webhook(self, core: CoreDep, request: Request[Any, Any, Any]) -> CallbackOut:
        # The signature covers the raw bytes, so the body is read as sent, never re-encoded.
        body = await request.body()
        headers = dict(request.headers)
        handle = HandlePaymentCallback(core.uow, core.clock, core.payment_provider)
        settlement = await anyio.to_thread.run_sync(handle, headers, body)
        return CallbackOut.of(settlement)


class DevPaymentsController(Controller):
    """Dev mode only: settle a pending payment without a provider."""

    path = "/admin/payments"
    tags = ("Admin",)
    guards = (superuser_required,)
    security = BEARER

    @post(
        "/{payment_id:uuid}/settle",
        operation_id="settlePaymentManually",
        summary="Dev mode: settle a pending payment by hand (404 unless enabled)",
        description="Only when `ZENZEFI_PAYMENTS_DEV_MODE=true`. Settling twice is a no-op; "
        "each settlement is in the audit log.",
        status_code=200,
        responses=error_responses(400, 401, 403, 404, 422, 503),
        sync_to_thread=True,
    )
    def settle(
        self,
        core: CoreDep,
        current_user: CurrentUser,
        client_address: ClientAddress,
        payment_id: FromPath[UUID],
        data: JSONBody[ManualSettlementIn],
    ) -> CallbackOut:
        if not core.settings.payments.dev_mode:
            raise NotFoundException("Not found")
        settlement = ConfirmPaymentManually(core.uow, core.clock)(
            ManualSettlement(
                actor_id=current_user.id,
                payment_id=payment_id,
                status=PaymentStatus(data.status),
                client_address=client_address,
            )
        )
        return CallbackOut.of(settlement)
