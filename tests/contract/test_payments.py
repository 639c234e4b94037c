"""Payment intents, callbacks and their ledger effect, on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta
from decimal import Decimal

import pytest

from zenzefi_core.adapters.payments import HmacPaymentProvider, callback_body
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import AuditAction, PaymentStatus, TransactionType
from zenzefi_core.errors import (
    InvalidInput,
    InvalidSignature,
    PaymentMismatch,
    PaymentNotFound,
    PermissionDenied,
)
from zenzefi_core.ids import new_id
from zenzefi_core.ports import UnitOfWorkFactory
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.accounts import add_user
from zenzefi_core.services.ledger_check import CheckLedger
from zenzefi_core.services.payments import (
    ConfirmPaymentManually,
    CreatePaymentIntent,
    GetPayment,
    HandlePaymentCallback,
    ListPayments,
    ManualSettlement,
)


@pytest.fixture
def provider(clock: FixedClock) -> HmacPaymentProvider:
    return HmacPaymentProvider(secret="s3cret", checkout_url="https://pay.example/c", clock=clock)


def _user(uow_factory: UnitOfWorkFactory, clock: FixedClock, name: str = "payer"):
    with uow_factory() as uow:
        user = add_user(
            uow,
            clock,
            fast_password_hasher(),
            email=f"{name}@example.com",
            username=name,
            password="password1",
        )
        uow.commit()
    return user


def _balance(uow_factory: UnitOfWorkFactory, user_id) -> Decimal:
    with uow_factory() as uow:
        user = uow.users.get(user_id)
        assert user is not None
        return user.balance


def _deposits(uow_factory: UnitOfWorkFactory, user_id) -> list:
    with uow_factory() as uow:
        page = uow.ledger.list_for_user(
            user_id, limit=100, offset=0, transaction_type=TransactionType.DEPOSIT
        )
        return list(page.items)


def _send(handler, provider, *, event_id, intent, status, amount_rub=None, timestamp=None):
    body = callback_body(
        event_id=event_id, payment_id=intent.id, status=status, amount_rub=amount_rub
    )
    return handler(provider.sign(body, timestamp), body)


def test_intent_is_pending_and_credits_nothing(uow_factory, clock, provider):
    user = _user(uow_factory, clock)
    intent = CreatePaymentIntent(uow_factory, clock, provider)(
        user_id=user.id, amount_znc=Decimal("50.00")
    )
    assert intent.status is PaymentStatus.PENDING
    assert intent.amount_rub == Decimal("500.00")
    assert intent.payment_url == f"https://pay.example/c/{intent.id}"
    assert _balance(uow_factory, user.id) == Decimal("0.00")
    assert GetPayment(uow_factory)(user_id=user.id, payment_id=intent.id) == intent
    listed = ListPayments(uow_factory)(user_id=user.id, limit=10, offset=0)
    assert [p.id for p in listed.items] == [intent.id]
    assert listed.total == 1


def test_success_credits_once_and_replays_credit_nothing(uow_factory, clock, provider):
    user = _user(uow_factory, clock)
    intent = CreatePaymentIntent(uow_factory, clock, provider)(
        user_id=user.id, amount_znc=Decimal("12.34")
    )
    handle = HandlePaymentCallback(uow_factory, clock, provider)

    first = _send(handle, provider, event_id="evt-1", intent=intent, status=PaymentStatus.SUCCEEDED)
    assert first.credited
    assert not first.replay
    assert first.intent.status is PaymentStatus.SUCCEEDED
    assert first.intent.completed_at == clock.now()

    replay = _send(
        handle, provider, event_id="evt-1", intent=intent, status=PaymentStatus.SUCCEEDED
    )
    assert replay.replay
    assert not replay.credited
    other_event = _send(
        handle, provider, event_id="evt-2", intent=intent, status=PaymentStatus.SUCCEEDED
    )
    assert not other_event.replay
    assert not other_event.credited

    assert _balance(uow_factory, user.id) == Decimal("12.34")
    deposits = _deposits(uow_factory, user.id)
    assert [(d.amount, d.reference_type, d.reference_id) for d in deposits] == [
        (Decimal("12.34"), "payment", str(intent.id))
    ]
    with uow_factory() as uow:
        events = uow.outbox.pending(limit=10)
    assert [e.event_type for e in events] == ["balance.deposited"]
    assert events[0].payload["amount"] == "12.34"
    assert CheckLedger(uow_factory)().ok


@pytest.mark.parametrize("status", [PaymentStatus.FAILED, PaymentStatus.CANCELLED])
def test_failed_and_cancelled_never_credit(uow_factory, clock, provider, status):
    user = _user(uow_factory, clock)
    intent = CreatePaymentIntent(uow_factory, clock, provider)(
        user_id=user.id, amount_znc=Decimal("5.00")
    )
    handle = HandlePaymentCallback(uow_factory, clock, provider)
    result = _send(handle, provider, event_id="evt-f", intent=intent, status=status)
    assert result.intent.status is status
    assert not result.credited
    # A late "succeeded" for an intent already final must not credit either.
    late = _send(handle, provider, event_id="evt-s", intent=intent, status=PaymentStatus.SUCCEEDED)
    assert not late.credited
    assert late.intent.status is status
    assert _balance(uow_factory, user.id) == Decimal("0.00")
    assert _deposits(uow_factory, user.id) == []


def test_forged_stale_and_malformed_callbacks_change_nothing(uow_factory, clock, provider):
    user = _user(uow_factory, clock)
    intent = CreatePaymentIntent(uow_factory, clock, provider)(
        user_id=user.id, amount_znc=Decimal("5.00")
    )
    handle = HandlePaymentCallback(uow_factory, clock, provider)
    body = callback_body(event_id="e", payment_id=intent.id, status=PaymentStatus.SUCCEEDED)

    forger = HmacPaymentProvider(secret="wrong", checkout_url="https://x", clock=clock)
    with pytest.raises(InvalidSignature):
        handle(forger.sign(body), body)
    with pytest.raises(InvalidSignature):
        handle({}, body)
    with pytest.raises(InvalidSignature):
        handle(provider.sign(body), body.replace(b"succeeded", b"cancelled"))
    stale = int((clock.now() - timedelta(minutes=6)).timestamp())
    with pytest.raises(InvalidSignature):
        handle(provider.sign(body, stale), body)
    for bad in (
        b"not json",
        b"[]",
        b'{"event_id": "x"}',
        b'{"event_id": "x", "status": "pending"}',
    ):
        with pytest.raises(PaymentMismatch):
            handle(provider.sign(bad), bad)
    with pytest.raises(PaymentMismatch):
        _send(
            handle,
            provider,
            event_id="amount",
            intent=intent,
            status=PaymentStatus.SUCCEEDED,
            amount_rub=Decimal("1.00"),
        )
    with uow_factory() as uow:
        assert uow.payments.get(intent.id).status is PaymentStatus.PENDING
    assert _balance(uow_factory, user.id) == Decimal("0.00")


def test_callback_for_unknown_payment_is_not_found(uow_factory, clock, provider):
    user = _user(uow_factory, clock)
    intent = CreatePaymentIntent(uow_factory, clock, provider)(
        user_id=user.id, amount_znc=Decimal("5.00")
    )
    handle = HandlePaymentCallback(uow_factory, clock, provider)
    other = dataclasses.replace(intent, id=new_id())
    with pytest.raises(PaymentNotFound):
        _send(handle, provider, event_id="x", intent=other, status=PaymentStatus.SUCCEEDED)


def test_manual_settlement_is_audited_idempotent_and_for_operators_only(
    uow_factory, clock, provider
):
    user = _user(uow_factory, clock)
    operator = _user(uow_factory, clock, "operator")
    with uow_factory() as uow:
        uow.users.set_superuser(operator.id, True)
        uow.commit()
    intent = CreatePaymentIntent(uow_factory, clock, provider)(
        user_id=user.id, amount_znc=Decimal("7.00")
    )
    confirm = ConfirmPaymentManually(uow_factory, clock)

    def settle(actor, status=PaymentStatus.SUCCEEDED):
        return confirm(
            ManualSettlement(
                actor_id=actor.id, payment_id=intent.id, status=status, client_address="10.0.0.9"
            )
        )

    with pytest.raises(PermissionDenied):
        settle(user)
    with pytest.raises(InvalidInput):
        settle(operator, PaymentStatus.PENDING)
    assert settle(operator).credited
    assert settle(operator).replay
    assert _balance(uow_factory, user.id) == Decimal("7.00")
    with uow_factory() as uow:
        entries = uow.audit.list_entries(limit=10, offset=0).items
    assert [(e.action, e.target_type, e.target_id, e.actor_id) for e in entries] == [
        (AuditAction.PAYMENT_SETTLED, "payment", str(intent.id), operator.id)
    ]
    assert entries[0].details["credited"] is True
    assert entries[0].client_address == "10.0.0.9"


def test_someone_elses_payment_is_not_found(uow_factory, clock, provider):
    owner = _user(uow_factory, clock, "owner")
    stranger = _user(uow_factory, clock, "stranger")
    intent = CreatePaymentIntent(uow_factory, clock, provider)(
        user_id=owner.id, amount_znc=Decimal("7.00")
    )
    with pytest.raises(PaymentNotFound):
        GetPayment(uow_factory)(user_id=stranger.id, payment_id=intent.id)


def test_inactive_user_cannot_top_up(uow_factory, clock, provider):
    user = _user(uow_factory, clock)
    with uow_factory() as uow:
        uow.users.set_active(user.id, False)
        uow.commit()
    with pytest.raises(InvalidInput):
        CreatePaymentIntent(uow_factory, clock, provider)(user_id=user.id, amount_znc=Decimal("1"))


def test_concurrent_duplicate_callbacks_credit_once(uow_factory, clock, provider):
    user = _user(uow_factory, clock)
    intent = CreatePaymentIntent(uow_factory, clock, provider)(
        user_id=user.id, amount_znc=Decimal("30.00")
    )
    handle = HandlePaymentCallback(uow_factory, clock, provider)
    barrier = threading.Barrier(8)
    outcomes: list[bool] = []
    errors: list[BaseException] = []

    def deliver(n: int) -> None:
        # Half the threads replay one event id, half send distinct ids for the same payment.
        event_id = "dup" if n % 2 else f"distinct-{n}"
        barrier.wait()
        try:
            result = _send(
                handle, provider, event_id=event_id, intent=intent, status=PaymentStatus.SUCCEEDED
            )
            outcomes.append(result.credited)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert outcomes.count(True) == 1
    assert _balance(uow_factory, user.id) == Decimal("30.00")
    assert len(_deposits(uow_factory, user.id)) == 1
    assert CheckLedger(uow_factory)().ok
