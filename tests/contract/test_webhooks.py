"""The webhook use cases on memory, SQLite and PostgreSQL: endpoints and ownership, rotation,
the fan-out (one delivery per event and endpoint), attempts, the retry schedule, redelivery and
the failure window that disables an endpoint. The receiver here is a fake sender; the worker
tests use a real HTTP receiver."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from uuid import UUID

import pytest

from tests.shop import open_account
from zenzefi_core.adapters.cache import InProcessCache
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import User
from zenzefi_core.domain.webhooks import DeliveryState
from zenzefi_core.errors import (
    InvalidInput,
    InvalidWebhookUrl,
    WebhookDeliveryNotFound,
    WebhookNotFound,
    WebhookSendFailed,
)
from zenzefi_core.ids import new_id
from zenzefi_core.ports import UnitOfWorkFactory
from zenzefi_core.services.events import record_event
from zenzefi_core.services.webhooks import (
    CacheSlots,
    CreateWebhook,
    DeleteWebhook,
    DeliverWebhook,
    DueWebhookDeliveries,
    FanOutEvent,
    GetWebhook,
    ListDeliveries,
    ListWebhooks,
    Redeliver,
    RotateWebhookSecret,
    SendTestWebhook,
    UpdateWebhook,
    WebhookPolicy,
)
from zenzefi_core.webhooks import SecretCipher, verify_webhook

DELAYS = tuple(timedelta(seconds=s) for s in (5, 300, 1800))
CIPHER = SecretCipher("contract tests")


def policy(*, allow_private: bool = True) -> WebhookPolicy:
    return WebhookPolicy(
        retry_delays=DELAYS,
        rotation_overlap=timedelta(hours=24),
        disable_after=timedelta(days=5),
        allow_private=allow_private,
        concurrency=2,
        timeout=timedelta(seconds=10),
    )


class Resolver:
    def resolve(self, host: str) -> list[str]:
        return {"hooks.example.com": ["93.184.216.34"]}.get(host, ["127.0.0.1"])


class FakeReceiver:
    """Answers with the queued statuses (then 200) and keeps every request."""

    def __init__(self, *statuses: int | Exception, answer: bytes = b"ok") -> None:
        self.statuses = list(statuses)
        self.answer = answer
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        #: The addresses each request was allowed to connect to.
        self.addresses: list[tuple[str, ...]] = []

    def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, addresses: Sequence[str]
    ) -> tuple[int, bytes]:
        self.requests.append((url, dict(headers), body))
        self.addresses.append(tuple(addresses))
        answer = self.statuses.pop(0) if self.statuses else 200
        if isinstance(answer, Exception):
            raise answer
        return answer, self.answer


class ChangingResolver:
    """Answers each lookup with the next list of addresses (the last one repeats), as a name
    whose records change between lookups does."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups = 0

    def resolve(self, host: str) -> list[str]:
        self.lookups += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def alice(uow_factory: UnitOfWorkFactory, clock: FixedClock) -> User:
    return open_account(uow_factory, clock, "alice")


def deliverer(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, receiver: FakeReceiver
) -> DeliverWebhook:
    slots = CacheSlots(InProcessCache(), 2, timedelta(seconds=60))
    return DeliverWebhook(uow_factory, clock, CIPHER, receiver, Resolver(), slots, policy())


def purchase_event(uow_factory: UnitOfWorkFactory, clock: FixedClock, user: User) -> UUID:
    with uow_factory() as uow:
        event = record_event(
            uow, clock, "token.purchased", {"token_id": "t-1", "cost_znc": "18.00"}, user_id=user.id
        )
        uow.commit()
    return event.id


def test_endpoints_belong_to_their_owner(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, alice: User
) -> None:
    bob = open_account(uow_factory, clock, "bob")
    created = CreateWebhook(uow_factory, clock, CIPHER, Resolver(), policy())(
        alice.id, "https://hooks.example.com/in", ["token.purchased"]
    )
    endpoint = created.endpoint
    assert created.secret.startswith("whsec_")
    assert created.secret not in endpoint.secret_encrypted
    assert CIPHER.decrypt(endpoint.secret_encrypted) == created.secret
    assert [e.id for e in ListWebhooks(uow_factory)(alice.id)] == [endpoint.id]
    assert ListWebhooks(uow_factory)(bob.id) == []
    for call in (
        lambda: GetWebhook(uow_factory)(bob.id, endpoint.id),
        lambda: UpdateWebhook(uow_factory, clock, Resolver(), policy())(
            bob.id, endpoint.id, is_active=False
        ),
        lambda: DeleteWebhook(uow_factory)(bob.id, endpoint.id),
        lambda: RotateWebhookSecret(uow_factory, clock, CIPHER, policy())(bob.id, endpoint.id),
        lambda: SendTestWebhook(uow_factory, clock)(bob.id, endpoint.id),
        lambda: ListDeliveries(uow_factory)(bob.id, endpoint.id),
    ):
        with pytest.raises(WebhookNotFound):
            call()
    updated = UpdateWebhook(uow_factory, clock, Resolver(), policy())(
        alice.id, endpoint.id, events=["token.revoked", "token.expired"], is_active=False
    )
    assert updated.events == ("token.expired", "token.revoked")
    assert GetWebhook(uow_factory)(alice.id, endpoint.id) == updated
    DeleteWebhook(uow_factory)(alice.id, endpoint.id)
    assert ListWebhooks(uow_factory)(alice.id) == []


def test_bad_urls_and_events_are_refused(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, alice: User
) -> None:
    strict = CreateWebhook(uow_factory, clock, CIPHER, Resolver(), policy(allow_private=False))
    with pytest.raises(InvalidWebhookUrl):
        strict(alice.id, "http://localhost:9/in", ["token.purchased"])
    with pytest.raises(InvalidWebhookUrl):
        strict(alice.id, "ftp://hooks.example.com/", ["token.purchased"])
    with pytest.raises(InvalidInput):
        strict(alice.id, "https://hooks.example.com/", ["token.bought"])
    assert ListWebhooks(uow_factory)(alice.id) == []


def test_an_event_fans_out_once_per_endpoint_even_when_handled_twice(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, alice: User
) -> None:
    bob = open_account(uow_factory, clock, "bob")
    make = CreateWebhook(uow_factory, clock, CIPHER, Resolver(), policy())
    mine = make(alice.id, "https://hooks.example.com/a", ["token.purchased"]).endpoint
    make(alice.id, "https://hooks.example.com/b", ["token.revoked"])
    make(bob.id, "https://hooks.example.com/c", ["token.purchased"])
    event_id = purchase_event(uow_factory, clock, alice)
    fan_out = FanOutEvent(uow_factory, clock)
    first = fan_out(event_id)
    assert len(first) == 1
    assert fan_out(event_id) == first  # still pending: handed over again, not duplicated
    records = ListDeliveries(uow_factory)(alice.id, mine.id)
    assert [r.delivery.event_type for r in records] == ["token.purchased"]

    # A test event goes to the endpoint it names only, subscribed or not; its outbox event
    # and a redelivery's both hand the pending delivery over.
    test = SendTestWebhook(uow_factory, clock)(alice.id, mine.id)
    with uow_factory() as uow:
        [test_event] = [e for e in uow.outbox.pending(limit=100) if e.event_type == "webhook.test"]
    assert fan_out(test_event.id) == [test.id]
    Redeliver(uow_factory, clock)(alice.id, mine.id, first[0])
    with uow_factory() as uow:
        [again] = [e for e in uow.outbox.pending(limit=100) if e.event_type == "webhook.redelivery"]
    assert fan_out(again.id) == first


def test_a_delivery_retries_on_schedule_with_one_webhook_id(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, alice: User
) -> None:
    created = CreateWebhook(uow_factory, clock, CIPHER, Resolver(), policy())(
        alice.id, "https://hooks.example.com/in", ["token.purchased"]
    )
    [delivery_id] = FanOutEvent(uow_factory, clock)(purchase_event(uow_factory, clock, alice))
    receiver = FakeReceiver(500, WebhookSendFailed("timed out"), 204)
    deliver = deliverer(uow_factory, clock, receiver)

    first = deliver(delivery_id)
    assert (first.state, first.retry_in, first.error) == (
        DeliveryState.PENDING,
        DELAYS[0],
        "HTTP 500",
    )
    assert deliver(delivery_id).state is None  # not due yet
    clock.advance(DELAYS[0])
    assert deliver(delivery_id).retry_in == DELAYS[1]
    clock.advance(DELAYS[1])
    assert deliver(delivery_id).state is DeliveryState.SUCCEEDED
    assert deliver(delivery_id).state is None

    ids = {headers["webhook-id"] for _, headers, _ in receiver.requests}
    assert ids == {str(delivery_id)}
    assert len({headers["webhook-timestamp"] for _, headers, _ in receiver.requests}) == 3
    for _, headers, body in receiver.requests:
        verify_webhook(created.secret, headers, body, now=int(headers["webhook-timestamp"]))
    [record] = ListDeliveries(uow_factory)(alice.id, created.endpoint.id)
    assert record.delivery.state is DeliveryState.SUCCEEDED
    assert record.delivery.attempts == 3
    assert [(a.status_code, a.error) for a in record.attempts] == [
        (500, "HTTP 500"),
        (None, "timed out"),
        (204, None),
    ]

    # A manual redelivery keeps the id.
    Redeliver(uow_factory, clock)(alice.id, created.endpoint.id, delivery_id)
    assert deliver(delivery_id).state is DeliveryState.SUCCEEDED
    assert receiver.requests[-1][1]["webhook-id"] == str(delivery_id)
    with pytest.raises(WebhookDeliveryNotFound):
        Redeliver(uow_factory, clock)(alice.id, created.endpoint.id, UUID(int=1))


def test_the_last_attempt_fails_the_delivery_and_the_sweep_finds_overdue_ones(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, alice: User
) -> None:
    CreateWebhook(uow_factory, clock, CIPHER, Resolver(), policy())(
        alice.id, "https://hooks.example.com/in", ["token.purchased"]
    )
    [delivery_id] = FanOutEvent(uow_factory, clock)(purchase_event(uow_factory, clock, alice))
    deliver = deliverer(uow_factory, clock, FakeReceiver(*[503] * 10))
    due = DueWebhookDeliveries(uow_factory, clock, timedelta(seconds=30))
    assert due(limit=10) == []
    clock.advance(timedelta(minutes=1))
    assert due(limit=10) == [delivery_id]
    outcomes = []
    for _ in range(len(DELAYS) + 1):
        outcomes.append(deliver(delivery_id))
        clock.advance(timedelta(hours=1))
    assert [o.state for o in outcomes] == [DeliveryState.PENDING] * 3 + [DeliveryState.FAILED]
    assert outcomes[-1].retry_in is None
    assert due(limit=10) == []


def test_rotation_signs_with_both_secrets_for_the_overlap(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, alice: User
) -> None:
    created = CreateWebhook(uow_factory, clock, CIPHER, Resolver(), policy())(
        alice.id, "https://hooks.example.com/in", ["webhook.test"]
    )
    rotated = RotateWebhookSecret(uow_factory, clock, CIPHER, policy())(
        alice.id, created.endpoint.id
    )
    assert rotated.secret != created.secret
    receiver = FakeReceiver()
    deliver = deliverer(uow_factory, clock, receiver)
    test = SendTestWebhook(uow_factory, clock)(alice.id, created.endpoint.id)
    assert deliver(test.id).state is DeliveryState.SUCCEEDED
    _, headers, body = receiver.requests[-1]
    assert len(headers["webhook-signature"].split()) == 2
    stamp = int(headers["webhook-timestamp"])
    verify_webhook(created.secret, headers, body, now=stamp)
    verify_webhook(rotated.secret, headers, body, now=stamp)

    clock.advance(timedelta(hours=25))
    later = SendTestWebhook(uow_factory, clock)(alice.id, created.endpoint.id)
    deliver(later.id)
    _, headers, body = receiver.requests[-1]
    assert len(headers["webhook-signature"].split()) == 1
    verify_webhook(rotated.secret, headers, body, now=int(headers["webhook-timestamp"]))


def test_an_endpoint_failing_for_the_whole_window_is_disabled(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, alice: User
) -> None:
    endpoint = CreateWebhook(uow_factory, clock, CIPHER, Resolver(), policy())(
        alice.id, "https://hooks.example.com/in", ["webhook.test"]
    ).endpoint
    deliver = deliverer(uow_factory, clock, FakeReceiver(*[500] * 100))
    outcomes = []
    for _ in range(6):
        test = SendTestWebhook(uow_factory, clock)(alice.id, endpoint.id)
        outcomes.append(deliver(test.id))
        clock.advance(timedelta(days=1))
    disabled = [o.disabled for o in outcomes if o.disabled is not None]
    assert len(disabled) == 1
    assert disabled[0].owner_email == alice.email
    stored = GetWebhook(uow_factory)(alice.id, endpoint.id)
    assert not stored.is_active
    assert stored.disabled_at is not None
    # A disabled endpoint gets nothing more, and turning it back on restarts the window.
    assert FanOutEvent(uow_factory, clock)(purchase_event(uow_factory, clock, alice)) == []
    again = UpdateWebhook(uow_factory, clock, Resolver(), policy())(
        alice.id, endpoint.id, is_active=True
    )
    assert again.is_active
    assert again.failing_since is None


def test_a_success_resets_the_failure_window(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, alice: User
) -> None:
    endpoint = CreateWebhook(uow_factory, clock, CIPHER, Resolver(), policy())(
        alice.id, "https://hooks.example.com/in", ["webhook.test"]
    ).endpoint
    deliver = deliverer(uow_factory, clock, FakeReceiver(500, 500, 500, 200, 500, 500, 500))
    for _ in range(7):
        test = SendTestWebhook(uow_factory, clock)(alice.id, endpoint.id)
        assert deliver(test.id).disabled is None
        clock.advance(timedelta(days=2))
    assert GetWebhook(uow_factory)(alice.id, endpoint.id).is_active


def test_a_delivery_to_a_url_that_now_resolves_privately_fails_the_attempt(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, alice: User
) -> None:
    endpoint = CreateWebhook(uow_factory, clock, CIPHER, Resolver(), policy())(
        alice.id, "https://rebinding.example.com/in", ["webhook.test"]
    ).endpoint
    receiver = FakeReceiver()
    slots = CacheSlots(InProcessCache(), 2, timedelta(seconds=60))
    deliver = DeliverWebhook(
        uow_factory, clock, CIPHER, receiver, Resolver(), slots, policy(allow_private=False)
    )
    test = SendTestWebhook(uow_factory, clock)(alice.id, endpoint.id)
    outcome = deliver(test.id)
    assert outcome.state is DeliveryState.PENDING
    assert outcome.error is not None
    assert "private" in outcome.error
    assert receiver.requests == []


def test_a_worker_dying_mid_delivery_leads_to_a_redelivery_not_a_loss(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, alice: User
) -> None:
    CreateWebhook(uow_factory, clock, CIPHER, Resolver(), policy())(
        alice.id, "https://hooks.example.com/in", ["token.purchased"]
    )
    [delivery_id] = FanOutEvent(uow_factory, clock)(purchase_event(uow_factory, clock, alice))
    with uow_factory() as uow:  # a worker claims it, then dies before recording anything
        assert uow.webhooks.claim_delivery(delivery_id, clock.now(), clock.now() + policy().lease)
        uow.commit()
    receiver = FakeReceiver()
    deliver = deliverer(uow_factory, clock, receiver)
    due = DueWebhookDeliveries(uow_factory, clock, timedelta(seconds=30))
    assert deliver(delivery_id).state is None  # its lease still holds
    assert due(limit=10) == []
    clock.advance(policy().lease + timedelta(seconds=1))
    assert due(limit=10) == [delivery_id]
    assert deliver(delivery_id).state is DeliveryState.SUCCEEDED
    assert [h["webhook-id"] for _, h, _ in receiver.requests] == [str(delivery_id)]


def test_an_endpoint_has_at_most_its_slots_in_flight() -> None:
    slots = CacheSlots(InProcessCache(), 2, timedelta(seconds=60))
    endpoint, other = UUID(int=1), UUID(int=2)
    first, second = slots.acquire(endpoint), slots.acquire(endpoint)
    assert first is not None
    assert second is not None
    assert slots.acquire(endpoint) is None
    assert slots.acquire(other) is not None  # a busy endpoint does not hold up another
    slots.release(first)
    assert slots.acquire(endpoint) == first


def test_the_sender_connects_only_to_what_this_attempt_checked(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, alice: User
) -> None:
    resolver = ChangingResolver(
        ["93.184.216.34"], ["93.184.216.35", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    )
    strict = policy(allow_private=False)
    endpoint = CreateWebhook(uow_factory, clock, CIPHER, resolver, strict)(
        alice.id, "https://hooks.example.com/in", ["webhook.test"]
    ).endpoint
    receiver = FakeReceiver()
    slots = CacheSlots(InProcessCache(), 2, timedelta(seconds=60))
    deliver = DeliverWebhook(uow_factory, clock, CIPHER, receiver, resolver, slots, strict)
    test = SendTestWebhook(uow_factory, clock)(alice.id, endpoint.id)
    assert deliver(test.id).state is DeliveryState.SUCCEEDED
    # Resolved once at creation and once for the attempt; the sender may not resolve again.
    assert resolver.lookups == 2
    assert receiver.requests[0][0] == "https://hooks.example.com/in"
    assert receiver.addresses == [("93.184.216.35", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")]


@pytest.mark.parametrize(
    "addresses",
    [
        ["93.184.216.34", "127.0.0.1"],
        ["93.184.216.34", "10.1.2.3"],
        ["2606:2800:21f:cb07:6820:80da:af6b:8b2c", "::ffff:127.0.0.1"],
        ["2606:2800:21f:cb07:6820:80da:af6b:8b2c", "2002:7f00:1::"],
        ["93.184.216.34", "fd00::2"],
    ],
)
def test_one_inside_address_among_public_ones_fails_the_attempt(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, alice: User, addresses: list[str]
) -> None:
    endpoint = CreateWebhook(uow_factory, clock, CIPHER, Resolver(), policy())(
        alice.id, "https://hooks.example.com/in", ["webhook.test"]
    ).endpoint
    receiver = FakeReceiver()
    slots = CacheSlots(InProcessCache(), 2, timedelta(seconds=60))
    deliver = DeliverWebhook(
        uow_factory,
        clock,
        CIPHER,
        receiver,
        ChangingResolver(addresses),
        slots,
        policy(allow_private=False),
    )
    outcome = deliver(SendTestWebhook(uow_factory, clock)(alice.id, endpoint.id).id)
    assert outcome.error == "Webhook URL resolves to a private or reserved address"
    assert receiver.requests == []


def test_the_log_keeps_only_a_1_kib_excerpt_of_the_answer(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, alice: User
) -> None:
    endpoint = CreateWebhook(uow_factory, clock, CIPHER, Resolver(), policy())(
        alice.id, "https://hooks.example.com/in", ["webhook.test"]
    ).endpoint
    # A sender that returns more than it should is cut by the core all the same.
    receiver = FakeReceiver(500, answer=b"secret-page " * 1000)
    deliver = deliverer(uow_factory, clock, receiver)
    test = SendTestWebhook(uow_factory, clock)(alice.id, endpoint.id)
    deliver(test.id)
    [record] = ListDeliveries(uow_factory)(alice.id, endpoint.id)
    [attempt] = record.attempts
    assert attempt.response_body == (b"secret-page " * 1000)[:1024].decode()


def test_endpoint_changes_write_only_their_columns_judged_on_the_stored_row(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, alice: User
) -> None:
    """The owner's changes and the worker's failure tracking each leave the other's columns
    alone, and a rotation keeps the secret stored now as the previous one, whatever was read
    before."""
    endpoint = (
        CreateWebhook(uow_factory, clock, CIPHER, Resolver(), policy())(
            alice.id, "https://hooks.example.com/in", ["token.purchased"]
        )
    ).endpoint
    start = clock.now()
    with uow_factory() as uow:
        webhooks = uow.webhooks
        webhooks.mark_failing(endpoint.id, start)
        webhooks.mark_failing(endpoint.id, start + timedelta(hours=1))  # already failing
        first = webhooks.rotate_secret(
            endpoint.id, "sealed-1", previous_until=start + timedelta(days=1), at=start
        )
        second = webhooks.rotate_secret(
            endpoint.id, "sealed-2", previous_until=start + timedelta(days=2), at=start
        )
        moved = webhooks.change_endpoint(endpoint.id, at=start, url="https://hooks.example.com/2")
        assert (
            webhooks.disable_failing(
                endpoint.id, failing_since_before=start - timedelta(seconds=1), at=start
            )
            is None
        ), "failing for less than the window"
        off = webhooks.disable_failing(endpoint.id, failing_since_before=start, at=start)
        webhooks.mark_failing(endpoint.id, start)  # off: nothing to track
        assert webhooks.change_endpoint(new_id(), at=start, is_active=True) is None
        uow.commit()
    assert first is not None
    assert first.previous_secret_encrypted == endpoint.secret_encrypted
    assert second is not None
    assert second.secret_encrypted == "sealed-2"
    assert second.previous_secret_encrypted == "sealed-1"
    assert second.failing_since == start
    assert moved is not None
    assert moved.url == "https://hooks.example.com/2"
    assert moved.secret_encrypted == "sealed-2"
    assert moved.events == ("token.purchased",)
    assert off is not None
    assert (off.is_active, off.disabled_at, off.failing_since) == (False, start, start)
    assert off.url == "https://hooks.example.com/2"
    assert off.secret_encrypted == "sealed-2"

    with uow_factory() as uow:
        # A change of events alone keeps the endpoint off; turning it on clears the failures.
        still_off = uow.webhooks.change_endpoint(endpoint.id, at=start, events=("balance.low",))
        back_on = uow.webhooks.change_endpoint(endpoint.id, at=start, is_active=True)
        uow.webhooks.clear_failing(endpoint.id, start)
        uow.commit()
    assert still_off is not None
    assert (still_off.is_active, still_off.events) == (False, ("balance.low",))
    assert back_on is not None
    assert (back_on.is_active, back_on.failing_since, back_on.disabled_at) == (True, None, None)
    assert back_on.secret_encrypted == "sealed-2"
