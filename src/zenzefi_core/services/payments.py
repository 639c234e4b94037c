"""Top-ups: a payment intent first, money only when the provider confirms it.

The intent's status moves once, from pending to a final state, by a conditional update; only
the move to `succeeded` credits the wallet, with a `deposit` entry in the same transaction. Every
provider event id is recorded, so a replayed callback changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from zenzefi_core.domain import (
    AuditAction,
    PaymentIntent,
    PaymentStatus,
    ProviderEvent,
    TransactionType,
)
from zenzefi_core.errors import InvalidAmount, InvalidInput, PaymentMismatch, PaymentNotFound
from zenzefi_core.ids import new_id
from zenzefi_core.money import ZERO, format_amount, quantize
from zenzefi_core.money_audit import PAYMENT_REFERENCE
from zenzefi_core.ports import (
    Clock,
    Page,
    PaymentProvider,
    ProviderCallback,
    UnitOfWork,
    UnitOfWorkFactory,
)
from zenzefi_core.services.admin import record_audit, require_superuser
from zenzefi_core.services.events import record_event
from zenzefi_core.services.wallet import post_entry

#: Default exchange rate of the product documents: 1 ZNC = 10 RUB.
DEFAULT_RUB_PER_ZNC = Decimal("10")


def rub_for(amount_znc: Decimal, rub_per_znc: Decimal) -> Decimal:
    return quantize(amount_znc * rub_per_znc)


class CreatePaymentIntent:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        provider: PaymentProvider,
        rub_per_znc: Decimal = DEFAULT_RUB_PER_ZNC,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._provider = provider
        self._rate = rub_per_znc

    def __call__(self, *, user_id: UUID, amount_znc: Decimal) -> PaymentIntent:
        if amount_znc <= ZERO or amount_znc != quantize(amount_znc):
            raise InvalidAmount("amount_znc must be positive with at most two decimals")
        payment_id = new_id()
        amount_rub = rub_for(amount_znc, self._rate)
        checkout = self._provider.start_checkout(
            payment_id, amount_rub, f"Zenzefi top-up: {format_amount(amount_znc)} ZNC"
        )
        now = self._clock.now()
        intent = PaymentIntent(
            id=payment_id,
            user_id=user_id,
            amount_znc=amount_znc,
            amount_rub=amount_rub,
            status=PaymentStatus.PENDING,
            provider=self._provider.name,
            payment_url=checkout.payment_url,
            created_at=now,
            updated_at=now,
        )
        with self._uow_factory() as uow:
            user = uow.users.get(user_id)
            if user is None or not user.is_active:
                raise InvalidInput("Only an active user can top up")
            uow.payments.add(intent)
            uow.commit()
        return intent


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a callback did: `credited` is True only for the one callback that moved the money."""

    intent: PaymentIntent
    replay: bool
    credited: bool


def settle(uow: UnitOfWork, clock: Clock, callback: ProviderCallback) -> Settlement:
    """Apply one provider event to its intent inside the caller's unit of work."""
    intent = uow.payments.get(callback.payment_id)
    if intent is None:
        raise PaymentNotFound()
    if callback.amount_rub is not None and callback.amount_rub != intent.amount_rub:
        raise PaymentMismatch(
            f"Callback amount {format_amount(callback.amount_rub)} RUB does not match the "
            f"payment's {format_amount(intent.amount_rub)} RUB"
        )
    now = clock.now()
    first_time = uow.payments.record_event(
        ProviderEvent(
            event_id=callback.event_id,
            payment_id=intent.id,
            status=callback.status,
            received_at=now,
        )
    )
    if not first_time:
        return Settlement(intent=intent, replay=True, credited=False)
    if not uow.payments.complete(intent.id, callback.status, now):
        # Already final: a second, different event about a settled payment changes nothing.
        current = uow.payments.get(intent.id) or intent
        return Settlement(intent=current, replay=False, credited=False)

    credited = callback.status is PaymentStatus.SUCCEEDED
    if credited:
        entry = post_entry(
            uow,
            clock,
            user_id=intent.user_id,
            amount=intent.amount_znc,
            transaction_type=TransactionType.DEPOSIT,
            description=f"Top-up of {format_amount(intent.amount_znc)} ZNC",
            reference_type=PAYMENT_REFERENCE,
            reference_id=str(intent.id),
        )
        record_event(
            uow,
            clock,
            "balance.deposited",
            {
                "user_id": str(intent.user_id),
                "payment_id": str(intent.id),
                "amount": format_amount(intent.amount_znc),
                "new_balance": format_amount(entry.balance_after),
            },
            user_id=intent.user_id,
        )
    settled = uow.payments.get(intent.id) or intent
    return Settlement(intent=settled, replay=False, credited=credited)


class HandlePaymentCallback:
    """Verify a provider callback and settle the payment it names, exactly once."""

    def __init__(
        self, uow_factory: UnitOfWorkFactory, clock: Clock, provider: PaymentProvider
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._provider = provider

    def __call__(self, headers: dict[str, str], body: bytes) -> Settlement:
        callback = self._provider.verify_callback(headers, body)
        with self._uow_factory() as uow:
            result = settle(uow, self._clock, callback)
            uow.commit()
        return result


@dataclass(frozen=True, slots=True)
class ManualSettlement:
    actor_id: UUID
    payment_id: UUID
    status: PaymentStatus
    client_address: str | None = None


class ConfirmPaymentManually:
    """Dev mode: an operator settles a pending payment without a provider.

    Refused by the API unless `ZENZEFI_PAYMENTS_DEV_MODE` is set. The event id is derived from
    the payment, so settling twice is a replay, not a second credit; each settlement that changes
    anything is in the audit log, written in the same transaction.
    """

    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow_factory = uow_factory
        self._clock = clock

    def __call__(self, request: ManualSettlement) -> Settlement:
        if request.status is PaymentStatus.PENDING:
            raise InvalidInput("A payment can only be settled to a final status")
        callback = ProviderCallback(
            event_id=f"manual:{request.payment_id}",
            payment_id=request.payment_id,
            status=request.status,
        )
        with self._uow_factory() as uow:
            actor = require_superuser(uow.users.get(request.actor_id))
            result = settle(uow, self._clock, callback)
            if not result.replay:
                record_audit(
                    uow,
                    self._clock,
                    actor=actor,
                    action=AuditAction.PAYMENT_SETTLED,
                    target_type="payment",
                    target_id=str(request.payment_id),
                    details={
                        "status": request.status.value,
                        "user_id": str(result.intent.user_id),
                        "amount_znc": format_amount(result.intent.amount_znc),
                        "credited": result.credited,
                    },
                    client_address=request.client_address,
                )
            uow.commit()
        return result


class GetPayment:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(self, *, user_id: UUID, payment_id: UUID) -> PaymentIntent:
        with self._uow_factory() as uow:
            intent = uow.payments.get(payment_id)
        if intent is None or intent.user_id != user_id:
            raise PaymentNotFound()
        return intent


class ListPayments:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(self, *, user_id: UUID, limit: int, offset: int) -> Page[PaymentIntent]:
        with self._uow_factory() as uow:
            return uow.payments.list_for_user(user_id, limit=limit, offset=offset)
