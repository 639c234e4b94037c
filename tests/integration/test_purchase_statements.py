"""The SQL a purchase sends, counted on SQLite and PostgreSQL, so that a statement more (a
second transaction per event, a read before each write, a row at a time) shows up as a failing
count rather than as a slower benchmark. Counts, never times."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, event

from tests.conftest import UserMaker
from zenzefi_core.adapters.sqlalchemy import SqlAlchemyUnitOfWork
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import OutboxEvent
from zenzefi_core.domain.webhooks import WebhookEndpoint
from zenzefi_core.ids import new_id
from zenzefi_core.policy import ShopPolicy
from zenzefi_core.ports import UnitOfWork
from zenzefi_core.services.bundles import BundleOrder, PurchaseBundle, SeedDefaultBundles
from zenzefi_core.services.events import WORKER_EVENTS
from zenzefi_core.services.outbox import DispatchMarks, PublishCommittedEvents
from zenzefi_core.services.tokens import PurchaseToken, TokenOrder

#: What one token purchase sends, besides the commit: the buyer's row (is the account
#: active?), the conditional debit with the balance check inside and the new balance returned,
#: the ledger entry, the token and its event.
TOKEN_PURCHASE = [
    "SELECT users",
    "UPDATE users",
    "INSERT transactions",
    "INSERT access_tokens",
    "INSERT outbox_events",
]


@dataclass
class Recorder:
    """The statements and commits an engine ran while `recording` is on."""

    recording: bool = False
    statements: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    commits: int = 0

    def shape(self, statement: str) -> str | None:
        """ "VERB table" of a statement; None for SQLite's own BEGIN IMMEDIATE."""
        words = statement.split()
        verb = words[0].upper()
        if verb == "BEGIN":
            return None
        table = {"SELECT": "FROM", "UPDATE": "UPDATE", "INSERT": "INTO", "DELETE": "FROM"}[verb]
        return f"{verb} {words[words.index(table) + 1]}"

    def reset(self) -> None:
        self.statements.clear()
        self.texts.clear()
        self.commits = 0


@pytest.fixture
def recorder(engine: Engine) -> Iterator[Recorder]:
    recorder = Recorder()

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if recorder.recording:
            shape = recorder.shape(statement)
            if shape is not None:
                recorder.statements.append(shape)
                recorder.texts.append(" ".join(statement.split()))

    def on_commit(_conn: Any) -> None:
        if recorder.recording:
            recorder.commits += 1

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", on_commit)
    yield recorder
    event.remove(engine, "before_cursor_execute", on_execute)
    event.remove(engine, "commit", on_commit)


class Publisher:
    def __init__(self) -> None:
        self.published: list[OutboxEvent] = []

    def publish(self, event: OutboxEvent) -> None:
        self.published.append(event)


@dataclass
class Wiring:
    """Units of work wired as the product wires them (`Core.uow`), on the test's engine."""

    engine: Engine
    clock: FixedClock
    publisher: Publisher = field(default_factory=Publisher)
    marks: DispatchMarks = field(init=False)

    def __post_init__(self) -> None:
        # Marks wait for an explicit flush, so what a purchase itself sends can be counted.
        self.marks = DispatchMarks(self.plain, self.clock, delay_seconds=3600)

    def plain(self) -> UnitOfWork:
        return SqlAlchemyUnitOfWork(self.engine)

    def uow(self) -> UnitOfWork:
        hand_over = PublishCommittedEvents(self.plain, self.clock, self.publisher, self.marks)
        return SqlAlchemyUnitOfWork(
            self.engine, after_commit=hand_over, worker_events=WORKER_EVENTS
        )


@pytest.fixture
def wiring(engine: Engine, clock: FixedClock) -> Wiring:
    return Wiring(engine, clock)


def subscribe(wiring: Wiring, user_id: Any, events: tuple[str, ...]) -> None:
    now = wiring.clock.now()
    with wiring.plain() as uow:
        uow.webhooks.add_endpoint(
            WebhookEndpoint(
                id=new_id(),
                user_id=user_id,
                url="https://hooks.example.com/in",
                events=events,
                is_active=True,
                secret_encrypted="not used here",
                created_at=now,
                updated_at=now,
            )
        )
        uow.commit()


def test_a_token_purchase_is_five_statements_and_one_commit(
    wiring: Wiring, recorder: Recorder, make_user: UserMaker
) -> None:
    alice = make_user(wiring.plain, balance=Decimal("50.00"))
    buy = PurchaseToken(wiring.uow, wiring.clock, ShopPolicy())

    recorder.recording = True
    bought = buy(TokenOrder(user_id=alice.id, duration_hours=1))
    recorder.recording = False

    assert recorder.statements == TOKEN_PURCHASE
    assert recorder.commits == 1
    assert bought.new_balance == Decimal("49.00")
    # The balance check is in the debit itself, which returns the balance it produced.
    debit = recorder.texts[1]
    assert re.search(r"WHERE .*balance .*>=", debit), debit
    assert "RETURNING" in debit
    # Nobody subscribed: nothing for the broker, no second transaction after the commit.
    assert wiring.publisher.published == []
    recorder.reset()
    recorder.recording = True
    wiring.marks.flush()
    assert (recorder.statements, recorder.commits) == ([], 0)


def test_a_watched_purchase_adds_no_statement_and_marks_in_batches(
    wiring: Wiring, recorder: Recorder, make_user: UserMaker
) -> None:
    alice = make_user(wiring.plain, balance=Decimal("50.00"))
    subscribe(wiring, alice.id, ("token.purchased",))
    buy = PurchaseToken(wiring.uow, wiring.clock, ShopPolicy())

    recorder.recording = True
    for _ in range(3):
        buy(TokenOrder(user_id=alice.id, duration_hours=1))
    assert recorder.statements == TOKEN_PURCHASE * 3
    assert recorder.commits == 3
    assert len(wiring.publisher.published) == 3

    # One statement and one commit mark all three handed-over events.
    recorder.reset()
    wiring.marks.flush()
    assert (recorder.statements, recorder.commits) == (["UPDATE outbox_events"], 1)
    with wiring.plain() as uow:
        assert uow.outbox.pending(limit=10) == []


def test_a_bundle_inserts_its_tokens_in_one_statement(
    wiring: Wiring, recorder: Recorder, make_user: UserMaker
) -> None:
    alice = make_user(wiring.plain, balance=Decimal("5000.00"))
    SeedDefaultBundles(wiring.plain, wiring.clock, ShopPolicy().prices)()
    with wiring.plain() as uow:
        ultimate = next(b for b in uow.bundles.catalogue(active_only=True) if b.token_count == 20)
    buy = PurchaseBundle(wiring.uow, wiring.clock, ShopPolicy())

    recorder.recording = True
    bought = buy(BundleOrder(user_id=alice.id, bundle_id=ultimate.id))
    recorder.recording = False

    assert len(bought.tokens) == 20
    assert recorder.statements == [
        "SELECT token_bundles",
        "SELECT users",
        "UPDATE users",
        "INSERT transactions",
        "INSERT bundle_purchases",
        "INSERT access_tokens",
        "INSERT outbox_events",
    ]
    assert recorder.commits == 1
