"""The analytics queries on every backend (memory, SQLite, PostgreSQL), against known data.

The data sits on and next to the bucket boundaries on purpose: a session starting exactly at the
window's start is in its first bucket, one a microsecond earlier is not, one starting exactly at
now (the window's exclusive end) is not either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import StoreMaker, UserMaker
from zenzefi_core.analytics import (
    Activity,
    ActivityBucketRow,
    BucketUnit,
    LiveUsage,
    Period,
    TopUser,
    UsageBucketRow,
    Window,
)
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType, User
from zenzefi_core.domain.proxy import ProxySession
from zenzefi_core.domain.tokens import BUNDLE_PURCHASE_REFERENCE, TOKEN_REFERENCE, TokenScope
from zenzefi_core.ids import new_id
from zenzefi_core.ports import UnitOfWorkFactory
from zenzefi_core.services.tokens import issue_token
from zenzefi_core.services.wallet import post_entry

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY_START = NOW - timedelta(hours=24)
MICRO = timedelta(microseconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


@dataclass
class Data:
    alice: User
    bob: User
    carol: User


def _entry(
    uow_factory: UnitOfWorkFactory,
    clock: FixedClock,
    user: User,
    at: datetime,
    amount: str,
    kind: TransactionType,
    reference_type: str,
) -> None:
    clock.set(at)
    with uow_factory() as uow:
        post_entry(
            uow,
            clock,
            user_id=user.id,
            amount=Decimal(amount),
            transaction_type=kind,
            description="test",
            reference_type=reference_type,
            reference_id=str(new_id()),
        )
        uow.commit()


def _token(uow_factory: UnitOfWorkFactory, user: User, at: datetime) -> UUID:
    token = issue_token(
        user_id=user.id,
        duration_hours=24,
        scope=TokenScope.FULL,
        price_paid=Decimal("1.00"),
        created_at=at,
    ).token
    with uow_factory() as uow:
        uow.tokens.add_all([token])
        uow.commit()
    return token.id


def _session(
    uow_factory: UnitOfWorkFactory,
    user: User,
    token_id: UUID,
    started_at: datetime,
    ended_at: datetime | None,
    requests: int,
    bytes_in: int,
    bytes_out: int,
) -> None:
    with uow_factory() as uow:
        assert uow.proxy_sessions.start(
            ProxySession(
                id=new_id(),
                token_id=token_id,
                user_id=user.id,
                device_id="device",
                started_at=started_at,
                last_activity=ended_at or started_at,
                ended_at=ended_at,
                request_count=requests,
                bytes_in=bytes_in,
                bytes_out=bytes_out,
            )
        )
        uow.commit()


@pytest.fixture
def data(uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker) -> Data:
    clock.set(datetime(2026, 11, 20, 0, 0, tzinfo=UTC))
    alice = make_user(uow_factory, "alice", balance=Decimal("100.00"))
    clock.set(DAY_START)
    bob = make_user(uow_factory, "bob", balance=Decimal("20.00"))
    clock.set(NOW - MICRO)
    carol = make_user(uow_factory, "carol")

    purchase, refund, token = TransactionType.PURCHASE, TransactionType.REFUND, TOKEN_REFERENCE
    bundle = BUNDLE_PURCHASE_REFERENCE
    _entry(uow_factory, clock, alice, DAY_START - timedelta(hours=1), "-3.10", purchase, token)
    _entry(uow_factory, clock, alice, DAY_START + timedelta(hours=1), "-10.00", purchase, token)
    _entry(uow_factory, clock, alice, DAY_START + 90 * MINUTE, "-45.50", purchase, bundle)
    _entry(uow_factory, clock, alice, DAY_START + timedelta(hours=2), "10.00", refund, token)
    bonus, clawback = TransactionType.REFERRAL_BONUS, TransactionType.REFERRAL_CLAWBACK
    _entry(uow_factory, clock, bob, NOW - timedelta(hours=1), "1.05", bonus, token)
    _entry(uow_factory, clock, bob, NOW - timedelta(minutes=30), "-0.50", clawback, token)
    _entry(
        uow_factory, clock, bob, NOW - timedelta(minutes=20), "2.00", TransactionType.DEPOSIT, "x"
    )

    # Alice's tokens: one usable, one revoked, one expired.
    usable = _token(uow_factory, alice, DAY_START)
    revoked = _token(uow_factory, alice, DAY_START)
    expired = _token(uow_factory, alice, DAY_START)
    with uow_factory() as uow:
        assert uow.tokens.revoke(revoked, DAY_START)
        assert uow.tokens.activate(expired, NOW - timedelta(hours=48)) is not None
        uow.commit()
    bobs = _token(uow_factory, bob, DAY_START)

    _session(uow_factory, alice, usable, DAY_START, DAY_START + 30 * MINUTE, 10, 100, 200)
    _session(
        uow_factory,
        alice,
        usable,
        DAY_START + timedelta(hours=1),
        DAY_START + timedelta(hours=1, minutes=15),
        5,
        1,
        2,
    )
    _session(
        uow_factory, alice, usable, DAY_START - MICRO, DAY_START - MICRO + 10 * MINUTE, 7, 7, 0
    )
    # Ends after now: counted up to now only.
    _session(uow_factory, alice, usable, NOW - 2 * MINUTE, NOW + 5 * MINUTE, 2, 0, 0)
    # Starts at the window's exclusive end: in no window.
    _session(uow_factory, alice, usable, NOW, NOW + MINUTE, 1000, 1000, 1000)
    # Open: counted up to now.
    _session(uow_factory, alice, usable, NOW - timedelta(hours=1), None, 3, 30, 0)
    _session(
        uow_factory, bob, bobs, DAY_START + 30 * MINUTE, DAY_START + 90 * MINUTE, 20, 1000, 1000
    )
    clock.set(NOW)
    return Data(alice, bob, carol)


def test_a_users_usage_per_bucket(uow_factory: UnitOfWorkFactory, data: Data) -> None:
    day = Window.ending_at(Period.DAY, NOW)
    week = Window.ending_at(Period.WEEK, NOW)
    minutes = 60_000_000
    with uow_factory() as uow:
        assert uow.analytics.usage(data.alice.id, day)[0] == [
            UsageBucketRow(0, 10, 300, 1, 30 * minutes),
            UsageBucketRow(1, 5, 3, 1, 15 * minutes),
            UsageBucketRow(23, 5, 30, 2, 60 * minutes + 2 * minutes),
        ]
        assert uow.analytics.usage(data.alice.id, week)[0] == [
            UsageBucketRow(5, 7, 7, 1, 10 * minutes),
            UsageBucketRow(6, 20, 333, 4, (30 + 15 + 60 + 2) * minutes),
        ]
        assert uow.analytics.usage(data.bob.id, day)[0] == [
            UsageBucketRow(0, 20, 2000, 1, 60 * minutes)
        ]
        assert uow.analytics.usage(data.carol.id, day)[0] == []


def test_live_usage(uow_factory: UnitOfWorkFactory, data: Data) -> None:
    def live(user: User, now: datetime, period: Period = Period.DAY) -> LiveUsage:
        with uow_factory() as uow:
            return uow.analytics.usage(user.id, Window.ending_at(period, now))[1]

    for period in Period:
        assert live(data.alice, NOW, period) == LiveUsage(1, 1)
        assert live(data.bob, NOW, period) == LiveUsage(0, 1)
        # No session at all in the window, nor any token: the counts still come back.
        assert live(data.carol, NOW, period) == LiveUsage(0, 0)
    # The same tokens a month later, when no session falls in the window: the unused ones have
    # not started, so they are still usable, and the open session is still open.
    assert live(data.alice, NOW + timedelta(days=30)) == LiveUsage(1, 1)
    assert live(data.bob, NOW + timedelta(days=30)) == LiveUsage(0, 1)


def test_activity_per_bucket(uow_factory: UnitOfWorkFactory, data: Data) -> None:
    day = Window.ending_at(Period.DAY, NOW)
    week = Window.ending_at(Period.WEEK, NOW)
    with uow_factory() as uow:
        assert uow.analytics.activity(day, limit=10).buckets == [
            ActivityBucketRow(
                0, new_users=1, proxy_requests=30, bytes_transferred=2300, active_users=2
            ),
            ActivityBucketRow(
                1,
                token_purchases=1,
                bundle_purchases=1,
                revenue=Decimal("55.50"),
                proxy_requests=5,
                bytes_transferred=3,
                active_users=1,
            ),
            ActivityBucketRow(2, refunds=Decimal("10.00")),
            ActivityBucketRow(
                23,
                new_users=1,
                referral_bonuses=Decimal("1.05"),
                proxy_requests=5,
                bytes_transferred=30,
                active_users=1,
            ),
        ]
        assert uow.analytics.activity(week, limit=10).buckets == [
            ActivityBucketRow(
                5,
                token_purchases=1,
                revenue=Decimal("3.10"),
                proxy_requests=7,
                bytes_transferred=7,
                active_users=1,
            ),
            ActivityBucketRow(
                6,
                new_users=2,
                token_purchases=1,
                bundle_purchases=1,
                revenue=Decimal("55.50"),
                refunds=Decimal("10.00"),
                referral_bonuses=Decimal("1.05"),
                proxy_requests=40,
                bytes_transferred=2333,
                active_users=2,
            ),
        ]
        month = uow.analytics.activity(Window.ending_at(Period.MONTH, NOW), limit=10).buckets
        assert [(row.index, row.new_users) for row in month if row.new_users] == [(22, 1), (29, 2)]


def test_active_and_top_users(uow_factory: UnitOfWorkFactory, data: Data) -> None:
    with uow_factory() as uow:

        def active(period: Period, end: datetime, limit: int = 10) -> tuple[int, int]:
            found = uow.analytics.activity(Window.ending_at(period, end), limit=limit)
            return found.active_users, found.daily_active_users

        # Alice and bob in the last day; every one of them is counted, whatever the limit.
        for limit in (10, 1, 0):
            assert active(Period.DAY, NOW, limit) == (2, 2)
            assert active(Period.WEEK, NOW, limit) == (2, 2)
        # An hour later bob's only session (at DAY_START + 30 min) has left the last day, not
        # the week; and a week that ends before any session has no one.
        assert active(Period.DAY, NOW + timedelta(hours=1)) == (1, 1)
        assert active(Period.WEEK, NOW + timedelta(hours=1)) == (2, 1)
        assert active(Period.MONTH, NOW + timedelta(hours=1)) == (2, 1)
        assert active(Period.DAY, NOW + timedelta(hours=25)) == (0, 0)
        assert active(Period.WEEK, DAY_START - MICRO) == (0, 0)
        # Ending a microsecond after alice's earliest session: she alone, in both.
        assert active(Period.WEEK, DAY_START) == (1, 1)

        def top(end: datetime, limit: int = 10) -> list[TopUser]:
            window = Window.ending_at(Period.DAY, end)
            return uow.analytics.activity(window, limit=limit).top_users

        # Buckets that do not tile the last day (five hours, the day starting inside one):
        # still the users of exactly the last 24 hours. Bob's session at DAY_START + 30 min
        # is in it, alice's at DAY_START - 1 us only in the window.
        odd = Window(Period.DAY, NOW - 30 * HOUR, NOW, BucketUnit.HOUR, 5 * HOUR, 6)
        found = uow.analytics.activity(odd, limit=10)
        assert (found.active_users, found.daily_active_users) == (2, 2)
        later = Window(Period.DAY, NOW - 29 * HOUR, NOW + HOUR, BucketUnit.HOUR, 5 * HOUR, 6)
        found = uow.analytics.activity(later, limit=10)
        assert (found.active_users, found.daily_active_users) == (2, 1)

        assert top(NOW) == [
            TopUser(data.bob.id, "bob@example.com", 20, 2000),
            TopUser(data.alice.id, "alice@example.com", 20, 333),
        ]
        # A microsecond earlier: alice's session at DAY_START - MICRO joins, 27 requests put
        # her first, and a limit of one leaves bob out.
        assert top(NOW - MICRO, limit=1) == [TopUser(data.alice.id, "alice@example.com", 27, 340)]
        # Ending where alice's earliest session starts: the end is exclusive.
        assert top(DAY_START - MICRO) == []


# --- Random data against a plain reference, boundaries favoured. ---

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
#: A now with a fraction of a second, so no bucket boundary falls on a whole second.
ODD_NOW = datetime(2026, 11, 27, 12, 0, 0, 500_001, tzinfo=UTC)

offsets = st.one_of(
    # On a bucket boundary of some window, a microsecond either side of it, or at the end of
    # a second (SQLite's own time functions round .9995 and above up to the next second).
    st.builds(
        lambda k, unit, nudge: -k * unit + nudge,
        st.integers(0, 31),
        st.sampled_from([HOUR_US, DAY_US]),
        st.sampled_from([-1, 0, 1, 499_998]),
    ),
    st.integers(-32 * DAY_US, DAY_US),
)
LEDGER_KINDS = [
    (TransactionType.PURCHASE, TOKEN_REFERENCE, -1),
    (TransactionType.PURCHASE, BUNDLE_PURCHASE_REFERENCE, -1),
    (TransactionType.REFUND, TOKEN_REFERENCE, 1),
    (TransactionType.REFERRAL_BONUS, TOKEN_REFERENCE, 1),
    (TransactionType.REFERRAL_CLAWBACK, TOKEN_REFERENCE, -1),
    (TransactionType.ADJUSTMENT, "audit_log", 1),
]


@dataclass(frozen=True)
class SessionSpec:
    user: int
    start: int
    length: int | None
    requests: int
    bytes_in: int
    bytes_out: int


@dataclass(frozen=True)
class EntrySpec:
    user: int
    kind: int
    cents: int
    at: int


@dataclass(frozen=True)
class Scenario:
    created: list[int]
    sessions: list[SessionSpec]
    entries: list[EntrySpec]


scenarios = st.integers(1, 4).flatmap(
    lambda n: st.builds(
        Scenario,
        created=st.lists(offsets.filter(lambda o: o < 0), min_size=n, max_size=n),
        sessions=st.lists(
            st.builds(
                SessionSpec,
                user=st.integers(0, n - 1),
                start=offsets,
                length=st.one_of(st.none(), st.integers(0, 3 * DAY_US)),
                requests=st.integers(0, 10**6),
                bytes_in=st.integers(0, 10**10),
                bytes_out=st.integers(0, 10**10),
            ),
            max_size=12,
        ),
        entries=st.lists(
            st.builds(
                EntrySpec,
                user=st.integers(0, n - 1),
                kind=st.integers(0, len(LEDGER_KINDS) - 1),
                cents=st.integers(1, 10_000),
                at=offsets,
            ),
            max_size=10,
        ),
    )
)


def _at(offset: int) -> datetime:
    return ODD_NOW + offset * MICRO


def _build(
    uow_factory: UnitOfWorkFactory, clock: FixedClock, make_user: UserMaker, s: Scenario
) -> list[User]:
    people = []
    for number, created in enumerate(s.created):
        clock.set(_at(created))
        people.append(make_user(uow_factory, f"user{number}", balance=Decimal("1000000.00")))
    with uow_factory() as uow:
        for entry in s.entries:
            kind, reference, sign = LEDGER_KINDS[entry.kind]
            clock.set(_at(entry.at))
            post_entry(
                uow,
                clock,
                user_id=people[entry.user].id,
                amount=Decimal(sign * entry.cents) / 100,
                transaction_type=kind,
                description="test",
                reference_type=reference,
                reference_id=str(new_id()),
            )
        for spec in s.sessions:
            started = _at(spec.start)
            owner = people[spec.user]
            token = issue_token(
                user_id=owner.id,
                duration_hours=24,
                scope=TokenScope.FULL,
                price_paid=Decimal("1.00"),
                created_at=started,
            ).token
            uow.tokens.add_all([token])
            assert uow.proxy_sessions.start(
                ProxySession(
                    id=new_id(),
                    token_id=token.id,
                    user_id=owner.id,
                    device_id="device",
                    started_at=started,
                    last_activity=started,
                    ended_at=None if spec.length is None else started + spec.length * MICRO,
                    request_count=spec.requests,
                    bytes_in=spec.bytes_in,
                    bytes_out=spec.bytes_out,
                )
            )
        uow.commit()
    clock.set(ODD_NOW)
    return people


def _expected_usage(s: Scenario, user: int, window: Window) -> list[UsageBucketRow]:
    rows: dict[int, list[int]] = {}
    for spec in s.sessions:
        started = _at(spec.start)
        if spec.user != user or not window.start <= started < window.end:
            continue
        lasted = window.end - started
        if spec.length is not None:
            lasted = min(lasted, spec.length * MICRO)
        row = rows.setdefault((started - window.start) // window.width, [0, 0, 0, 0])
        row[0] += spec.requests
        row[1] += spec.bytes_in + spec.bytes_out
        row[2] += 1
        row[3] += lasted // MICRO
    return [UsageBucketRow(i, *values) for i, values in sorted(rows.items())]


def _expected_activity(s: Scenario, window: Window) -> list[ActivityBucketRow]:
    rows: dict[int, dict[str, Any]] = {}

    def add(moment: datetime, name: str, amount: Any) -> None:
        if window.start <= moment < window.end:
            row = rows.setdefault((moment - window.start) // window.width, {})
            row[name] = row.get(name, 0) + amount

    for created in s.created:
        add(_at(created), "new_users", 1)
    for entry in s.entries:
        kind, reference, _ = LEDGER_KINDS[entry.kind]
        amount = Decimal(entry.cents) / 100
        if kind == TransactionType.PURCHASE:
            add(_at(entry.at), "revenue", amount)
            name = "token_purchases" if reference == TOKEN_REFERENCE else "bundle_purchases"
            add(_at(entry.at), name, 1)
        elif kind == TransactionType.REFUND:
            add(_at(entry.at), "refunds", amount)
        elif kind == TransactionType.REFERRAL_BONUS:
            add(_at(entry.at), "referral_bonuses", amount)
    seen: dict[int, set[int]] = {}
    for spec in s.sessions:
        started = _at(spec.start)
        add(started, "proxy_requests", spec.requests)
        add(started, "bytes_transferred", spec.bytes_in + spec.bytes_out)
        if window.start <= started < window.end:
            seen.setdefault((started - window.start) // window.width, set()).add(spec.user)
    for index, who in seen.items():
        rows[index]["active_users"] = len(who)
    return [ActivityBucketRow(i, **values) for i, values in sorted(rows.items())]


def _expected_top(s: Scenario, people: list[User], start: datetime, end: datetime) -> list:
    sums: dict[int, list[int]] = {}
    for spec in s.sessions:
        if start <= _at(spec.start) < end:
            row = sums.setdefault(spec.user, [0, 0])
            row[0] += spec.requests
            row[1] += spec.bytes_in + spec.bytes_out
    ranked = sorted(sums.items(), key=lambda kv: (-kv[1][0], -kv[1][1], people[kv[0]].id))
    return [
        TopUser(people[user].id, people[user].email, requests, moved)
        for user, (requests, moved) in ranked[:10]
    ]


def test_the_store_sums_random_data_like_the_rules_say(
    store_maker: StoreMaker, clock: FixedClock, make_user: UserMaker
) -> None:
    @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(scenarios)
    def check(s: Scenario) -> None:
        uow_factory = store_maker()
        people = _build(uow_factory, clock, make_user, s)
        with uow_factory() as uow:
            for period in Period:
                window = Window.ending_at(period, ODD_NOW)
                for number, person in enumerate(people):
                    assert uow.analytics.usage(person.id, window) == (
                        _expected_usage(s, number, window),
                        LiveUsage(
                            active_sessions=sum(
                                1 for x in s.sessions if x.user == number and x.length is None
                            ),
                            active_tokens=sum(1 for x in s.sessions if x.user == number),
                        ),
                    ), (period, number)
                active, daily = (
                    len({x.user for x in s.sessions if start <= _at(x.start) < window.end})
                    for start in (window.start, window.end - timedelta(hours=24))
                )
                assert uow.analytics.activity(window, limit=10) == Activity(
                    buckets=_expected_activity(s, window),
                    top_users=_expected_top(s, people, window.start, window.end),
                    active_users=active,
                    daily_active_users=daily,
                )

    check()
