"""The analytics port in SQL: every figure is a grouped aggregate, bucketed in the database.

A row's bucket is `floor((moment - window.start) / width)`, computed exactly, in integer
microseconds, on both engines:

- PostgreSQL: `date_part('epoch', moment - :start)` is a double holding the interval's exact
  microsecond count divided by a million; times a million and rounded back to `bigint` it is
  that count again (a month is ~2.6e12 microseconds, far inside a double's exact integers), and
  float arithmetic is several times cheaper than `EXTRACT`'s `numeric` over millions of rows;
- SQLite stores a moment as the text `YYYY-MM-DD HH:MM:SS.ffffff` (see `types.UtcDateTime`):
  `strftime('%s', …)` of its first 19 characters gives its whole seconds, and characters 21 to
  26 its microseconds.

Floating point (`julianday`) would put a moment lying on a bucket boundary on either side of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    String,
    Subquery,
    Uuid,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    true,
    type_coerce,
    union_all,
)
from sqlalchemy.sql.elements import ColumnElement

from zenzefi_core.adapters.sqlalchemy.tables import (
    access_tokens,
    proxy_sessions,
    transactions,
    users,
)
from zenzefi_core.adapters.sqlalchemy.types import Money, UtcDateTime
from zenzefi_core.analytics import (
    ActivityBucketRow,
    LiveUsage,
    TopUser,
    UsageBucketRow,
    Window,
)
from zenzefi_core.domain import TransactionType
from zenzefi_core.domain.tokens import BUNDLE_PURCHASE_REFERENCE, TOKEN_REFERENCE
from zenzefi_core.money import ZERO

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _moment(value: datetime) -> ColumnElement[datetime]:
    return literal(value, UtcDateTime())


def _whole_microseconds(interval: Any) -> Any:
    """A PostgreSQL interval as an integer count of microseconds (the cast rounds)."""
    return cast(func.date_part("epoch", interval) * 1_000_000, BigInteger)


#: A user's report on PostgreSQL in one statement and one round trip: each bucket's range of
#: the covering `(user_id, started_at)` index summed (`LATERAL`, so no bucket is computed per
#: session and nothing is sorted), and the two live counts from their partial indexes. Every
#: bucket comes back, empty ones with zero sessions, so the live counts arrive even without
#: sessions. The bucket bounds are the core's (`Window.buckets`), passed as two arrays.
#:
#: A fixed text, not built per call: building the 30-way `UNION` of bucket bounds and its
#: cache key with SQLAlchemy cost more CPU than the statement took in the database. It is
#: also the one analytics statement left to PostgreSQL's plan cache (no `plan_cache_mode`):
#: the bounds come from `unnest` at run time whatever the plan, so a generic plan is the very
#: nested loop of index ranges a custom one is (checked with `EXPLAIN` on the bench database,
#: heavy and light users alike), minus the planning.
_POSTGRES_USAGE = text(
    """
SELECT CAST(e.i - 1 AS integer), per.requests, per.moved, per.sessions, per.lasted,
       live.open_sessions, live.usable
FROM unnest(CAST(:lo AS timestamptz[]), CAST(:hi AS timestamptz[])) WITH ORDINALITY
     AS e(lo, hi, i)
CROSS JOIN LATERAL (
    SELECT CAST(coalesce(sum(s.request_count), 0) AS bigint) AS requests,
           CAST(coalesce(sum(s.bytes_in + s.bytes_out), 0) AS bigint) AS moved,
           count(*) AS sessions,
           CAST(coalesce(sum(CAST(date_part('epoch',
                    CASE WHEN s.ended_at IS NULL OR s.ended_at > :now THEN :now
                         ELSE s.ended_at END - s.started_at) * 1000000 AS bigint)), 0)
                AS bigint) AS lasted
    FROM proxy_sessions AS s
    WHERE s.user_id = :user_id AND s.started_at >= e.lo AND s.started_at < e.hi
) AS per
CROSS JOIN (
    SELECT (SELECT count(*) FROM proxy_sessions AS o
            WHERE o.user_id = :user_id AND o.ended_at IS NULL) AS open_sessions,
           (SELECT count(*) FROM access_tokens AS t
            WHERE t.user_id = :user_id AND t.revoked_at IS NULL
              AND (t.expires_at IS NULL OR t.expires_at > :now)) AS usable
) AS live
ORDER BY e.i
"""
)


class SqlAnalyticsQueries:
    def __init__(self, connection: Connection) -> None:
        self._c = connection
        self._sqlite = connection.dialect.name == "sqlite"

    def _plan_per_window(self) -> None:
        """On PostgreSQL, plan every query of this port for its own window.

        psycopg prepares a statement run five times on a connection, and PostgreSQL may then
        reuse one generic plan whatever the window: a plan that cannot see whether the window
        holds a day or a month of sessions. On the bench database (`bench/analytics.py`) the
        generic plans made a month's active users 60 -> 1,400 ms and its top users
        480 -> 2,900 ms. The setting lasts until the transaction ends, so every call makes it
        again (a unit of work may commit between two).
        """
        if not self._sqlite:
            self._c.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))

    # --- Exact time arithmetic, one spelling per engine. ---

    def _microseconds_since(self, column: ColumnElement[Any], origin: datetime) -> Any:
        """`column - origin` in whole microseconds, as an integer expression."""
        if self._sqlite:
            # Without the fraction: SQLite keeps times in milliseconds internally and would
            # round `…:59.9996` up into the next second.
            seconds = cast(func.strftime("%s", func.substr(column, 1, 19)), Integer)
            fraction = cast(func.substr(column, 21, 6), Integer)
            origin_us = (origin - _EPOCH) // _MICROSECOND
            return seconds * 1_000_000 + fraction - origin_us
        return _whole_microseconds(column - _moment(origin))

    def _bucket(self, column: ColumnElement[Any], window: Window) -> Any:
        # Integer division of a non-negative offset: the floor.
        offset = self._microseconds_since(column, window.start)
        return (offset // window.width_microseconds).label("bucket")

    def _session_duration(self, now: datetime) -> Any:
        """Microseconds from a session's start to its end, or to `now` while it is open."""
        ended = proxy_sessions.c.ended_at
        until = case((or_(ended.is_(None), ended > _moment(now)), _moment(now)), else_=ended)
        if self._sqlite:
            # `until` is text here; the difference of two offsets from one origin is exact.
            return self._microseconds_since(until, _EPOCH) - self._microseconds_since(
                proxy_sessions.c.started_at, _EPOCH
            )
        return _whole_microseconds(until - proxy_sessions.c.started_at)

    @staticmethod
    def _money_sum(condition: ColumnElement[bool], amount: Any) -> Any:
        # ROUND: SQLite sums NUMERIC as binary floating point; Money quantises on the way out.
        return type_coerce(func.round(func.sum(case((condition, amount), else_=0)), 2), Money())

    @staticmethod
    def _count_where(condition: ColumnElement[bool]) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    @staticmethod
    def _edges(window: Window) -> Subquery:
        """The window's buckets as rows `(i, lo, hi)`, their bounds computed by the core.

        PostgreSQL reads each bucket as its own range of an index (`LATERAL`) instead of
        grouping by a computed bucket: the planner cannot know that such an expression has at
        most 30 values, so it sorts every row of the window first (100,000 for a heavy user's
        month, spilling to disk), and a `COUNT(DISTINCT)` per bucket forces that sort anyway.
        """
        return union_all(
            *(
                select(
                    literal(index, Integer).label("i"),
                    _moment(bucket.start).label("lo"),
                    _moment(bucket.end).label("hi"),
                )
                for index, bucket in enumerate(window.buckets())
            )
        ).subquery("edges")

    @staticmethod
    def _started_in(start: datetime, end: datetime) -> ColumnElement[bool]:
        started = proxy_sessions.c.started_at
        return and_(started >= start, started < end)

    # --- The port. ---

    def usage(self, user_id: UUID, window: Window) -> tuple[list[UsageBucketRow], LiveUsage]:
        if self._sqlite:
            return self._sqlite_usage_by_bucket(user_id, window), self._sqlite_live_usage(
                user_id, window.end
            )
        buckets = window.buckets()
        rows: list[UsageBucketRow] = []
        live = LiveUsage(active_sessions=0, active_tokens=0)
        for index, requests, moved, sessions, lasted, open_sessions, usable in self._c.execute(
            _POSTGRES_USAGE,
            {
                "user_id": user_id,
                "lo": [bucket.start for bucket in buckets],
                "hi": [bucket.end for bucket in buckets],
                "now": window.end,
            },
        ):
            live = LiveUsage(active_sessions=open_sessions, active_tokens=usable)
            if sessions:
                rows.append(UsageBucketRow(index, requests, moved, sessions, lasted))
        return rows, live

    def _sqlite_usage_by_bucket(self, user_id: UUID, window: Window) -> list[UsageBucketRow]:
        c = proxy_sessions.c
        bucket = self._bucket(c.started_at, window)
        query = (
            select(
                bucket,
                func.sum(c.request_count),
                func.sum(c.bytes_in + c.bytes_out),
                func.count(),
                func.sum(self._session_duration(window.end)),
            )
            .where(c.user_id == user_id, self._started_in(window.start, window.end))
            .group_by(bucket)
            .order_by(bucket)
        )
        return [
            UsageBucketRow(
                index=int(index),
                requests=int(requests),
                bytes_transferred=int(transferred),
                sessions=int(sessions),
                duration_microseconds=int(duration),
            )
            for index, requests, transferred, sessions, duration in self._c.execute(query)
        ]

    def _sqlite_live_usage(self, user_id: UUID, now: datetime) -> LiveUsage:
        open_sessions = (
            select(func.count())
            .select_from(proxy_sessions)
            .where(proxy_sessions.c.user_id == user_id, proxy_sessions.c.ended_at.is_(None))
            .scalar_subquery()
        )
        usable_tokens = (
            select(func.count())
            .select_from(access_tokens)
            .where(
                access_tokens.c.user_id == user_id,
                access_tokens.c.revoked_at.is_(None),
                or_(access_tokens.c.expires_at.is_(None), access_tokens.c.expires_at > now),
            )
            .scalar_subquery()
        )
        sessions, tokens = self._c.execute(select(open_sessions, usable_tokens)).one()
        return LiveUsage(active_sessions=int(sessions), active_tokens=int(tokens))

    def activity_with_top_users(
        self, window: Window, *, limit: int
    ) -> tuple[list[ActivityBucketRow], list[TopUser]]:
        if self._sqlite:
            proxy_rows = self._c.execute(self._sqlite_proxy_activity(window))
            return self._activity(window, proxy_rows), self._sqlite_top_users(window, limit)
        self._plan_per_window()
        proxy: list[tuple[Any, Any, Any, Any]] = []
        top: list[TopUser] = []
        for index, user_id, email, requests, moved, people in self._c.execute(
            self._proxy_activity_with_top_users(window, limit)
        ):
            if index is None:
                top.append(TopUser(user_id, email, int(requests), int(moved)))
            else:
                proxy.append((index, requests, moved, people))
        top.sort(key=lambda user: (-user.requests, -user.bytes_transferred, user.user_id))
        return self._activity(window, proxy), top

    def _activity(self, window: Window, proxy: Iterable[Sequence[Any]]) -> list[ActivityBucketRow]:
        """The window's users and ledger per bucket, merged with the proxy's `(bucket,
        requests, bytes, users)` rows."""
        rows: dict[int, dict[str, Any]] = {}

        def merge(index: Any, **values: Any) -> None:
            rows.setdefault(int(index), {}).update(values)

        created = self._bucket(users.c.created_at, window)
        for index, count in self._c.execute(
            select(created, func.count())
            .where(users.c.created_at >= window.start, users.c.created_at < window.end)
            .group_by(created)
        ):
            merge(index, new_users=int(count))

        for index, tokens, bundles, revenue, refunds, bonuses in self._c.execute(
            self._ledger_activity(window)
        ):
            merge(
                index,
                token_purchases=int(tokens),
                bundle_purchases=int(bundles),
                revenue=revenue if revenue is not None else ZERO,
                refunds=refunds if refunds is not None else ZERO,
                referral_bonuses=bonuses if bonuses is not None else ZERO,
            )

        for index, requests, transferred, people in proxy:
            merge(
                index,
                proxy_requests=int(requests),
                bytes_transferred=int(transferred),
                active_users=int(people),
            )
        return [ActivityBucketRow(index, **values) for index, values in sorted(rows.items())]

    def _ledger_activity(self, window: Window) -> Any:
        """Per bucket: purchases of tokens and of bundles, revenue, refunds, bonuses credited."""
        t = transactions.c
        purchase = t.transaction_type == TransactionType.PURCHASE.value
        sums = (
            self._count_where(and_(purchase, t.reference_type == TOKEN_REFERENCE)).label("tokens"),
            self._count_where(and_(purchase, t.reference_type == BUNDLE_PURCHASE_REFERENCE)).label(
                "bundles"
            ),
            self._money_sum(purchase, -t.amount).label("revenue"),
            self._money_sum(t.transaction_type == TransactionType.REFUND.value, t.amount).label(
                "refunds"
            ),
            self._money_sum(
                t.transaction_type == TransactionType.REFERRAL_BONUS.value, t.amount
            ).label("bonuses"),
        )
        counted = t.transaction_type.in_(
            [
                TransactionType.PURCHASE.value,
                TransactionType.REFUND.value,
                TransactionType.REFERRAL_BONUS.value,
            ]
        )
        if self._sqlite:
            entry_bucket = self._bucket(t.created_at, window)
            return (
                select(entry_bucket, *sums)
                .where(counted, t.created_at >= window.start, t.created_at < window.end)
                .group_by(entry_bucket)
            )
        # Each bucket's ranges of the (transaction_type, created_at) index, which carries the
        # reference type and amount: no bucket computed per entry, no grouping of them.
        edges = self._edges(window)
        per = (
            select(*sums, func.count().label("entries"))
            .where(counted, t.created_at >= edges.c.lo, t.created_at < edges.c.hi)
            .lateral("per")
        )
        return (
            select(
                edges.c.i, per.c.tokens, per.c.bundles, per.c.revenue, per.c.refunds, per.c.bonuses
            )
            .select_from(edges.join(per, true()))
            .where(per.c.entries > 0)
        )

    def _sqlite_proxy_activity(self, window: Window) -> Any:
        """Per bucket: requests, bytes and distinct users of the sessions started in it."""
        c = proxy_sessions.c
        started = self._bucket(c.started_at, window)
        return (
            select(
                started,
                func.sum(c.request_count),
                func.sum(c.bytes_in + c.bytes_out),
                func.count(c.user_id.distinct()),
            )
            .where(self._started_in(window.start, window.end))
            .group_by(started)
        )

    def _proxy_activity_with_top_users(self, window: Window, limit: int) -> Any:
        """Per bucket the requests, bytes and distinct users of the sessions started in it, and
        the top users, from one pass over the window's sessions (PostgreSQL): each bucket's
        range of the `started_at` index is summed per user (a hash of a few thousand users,
        never spilled), and those sums (`per`) are rolled up both ways: distinct users without
        a sort. Rows with a bucket are the buckets', rows without one the top users', in no
        particular order."""
        c = proxy_sessions.c
        edges = self._edges(window)
        per_user = (
            select(
                c.user_id,
                func.sum(c.request_count).label("requests"),
                func.sum(c.bytes_in + c.bytes_out).label("moved"),
            )
            .where(c.started_at >= edges.c.lo, c.started_at < edges.c.hi)
            .group_by(c.user_id)
            .lateral("per_user")
        )
        per = (
            select(edges.c.i, per_user.c.user_id, per_user.c.requests, per_user.c.moved)
            .select_from(edges.join(per_user, true()))
            .cte("per")
        )
        buckets = select(
            per.c.i,
            cast(None, Uuid),
            cast(None, String),
            func.sum(per.c.requests),
            func.sum(per.c.moved),
            func.count(),
        ).group_by(per.c.i)
        requests = func.sum(per.c.requests).label("requests")
        moved = func.sum(per.c.moved).label("moved")
        ranked = (
            select(per.c.user_id, requests, moved)
            .group_by(per.c.user_id)
            .order_by(requests.desc(), moved.desc(), per.c.user_id)
            .limit(bindparam("top", limit))
            .subquery("ranked")
        )
        top = select(
            cast(None, Integer),
            ranked.c.user_id,
            users.c.email,
            ranked.c.requests,
            ranked.c.moved,
            cast(None, BigInteger),
        ).select_from(ranked.join(users, users.c.id == ranked.c.user_id))
        return union_all(buckets, top)

    def active_users(self, start: datetime, end: datetime) -> int:
        self._plan_per_window()
        # One probe of the `(user_id, started_at)` index per user, instead of collecting the
        # distinct users of every session in the window (two million in a busy month).
        s = proxy_sessions.c
        count = self._c.execute(
            select(func.count())
            .select_from(users)
            .where(exists().where(s.user_id == users.c.id, self._started_in(start, end)))
        ).scalar_one()
        return int(count)

    def _sqlite_top_users(self, window: Window, limit: int) -> list[TopUser]:
        c = proxy_sessions.c
        requests = func.sum(c.request_count).label("requests")
        transferred = func.sum(c.bytes_in + c.bytes_out).label("transferred")
        ranked = (
            select(c.user_id, requests, transferred)
            .where(self._started_in(window.start, window.end))
            .group_by(c.user_id)
            .order_by(requests.desc(), transferred.desc(), c.user_id)
            .limit(bindparam("top", limit))
            .subquery()
        )
        rows = self._c.execute(
            select(ranked.c.user_id, users.c.email, ranked.c.requests, ranked.c.transferred)
            .join(users, users.c.id == ranked.c.user_id)
            .order_by(ranked.c.requests.desc(), ranked.c.transferred.desc(), ranked.c.user_id)
        )
        return [
            TopUser(
                user_id=user_id,
                email=email,
                requests=int(total),
                bytes_transferred=int(moved),
            )
            for user_id, email, total, moved in rows
        ]
