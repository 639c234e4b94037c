"""The analytics port in SQL: every figure is an aggregate computed in the database.

PostgreSQL answers each report with one fixed statement (`_POSTGRES_USAGE`,
`_POSTGRES_ACTIVITY`) that reads every bucket as its own range of an index (`LATERAL` over the
bucket bounds, which the core computes and passes as two arrays): no bucket is computed per
row, nothing is sorted, and the statement text never changes, so SQLAlchemy does not build a
statement per call and psycopg can prepare it.

SQLite groups by a bucket computed per row, exactly, in integer microseconds: it stores a
moment as the text `YYYY-MM-DD HH:MM:SS.ffffff` (see `types.UtcDateTime`), `strftime('%s', …)`
of its first 19 characters gives its whole seconds, and characters 21 to 26 its microseconds.
Floating point (`julianday`) would put a moment lying on a bucket boundary on either side of it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Connection,
    Integer,
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
    type_coerce,
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
    DAU_SPAN,
    Activity,
    ActivityBucketRow,
    LiveUsage,
    TopUser,
    UsageBucketRow,
    Window,
)
from zenzefi_core.domain import TransactionType
from zenzefi_core.domain.tokens import BUNDLE_PURCHASE_REFERENCE, TOKEN_REFERENCE
from zenzefi_core.money import ZERO, quantize

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# On plans: both statements are left to PostgreSQL's plan cache. Their bucket bounds come
# from `unnest` at run time whatever the plan, so a generic plan is the very nested loop of
# index ranges a custom plan is (checked with `EXPLAIN` on the bench database, a heavy user's
# month and the whole month alike), minus the planning. The statements built per call before
# them had to force custom plans: with the bounds as parameters a generic plan could not see
# whether a window held a day or a month, and made a month's figures several times slower.

#: A user's report in one statement and one round trip: each bucket's range of the covering
#: `(user_id, started_at)` index summed, the durations to `:now` for sessions still open (or
#: ended after it) in exact microseconds (`date_part('epoch', …)` is a double holding the
#: interval's microsecond count over a million, exact far beyond a month), and the two live
#: counts from their partial indexes. Every bucket comes back, empty ones with zero sessions,
#: so the live counts arrive even without sessions.
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

#: The operators' report in one statement. Per bucket: the users created (an index range),
#: the ledger (ranges of the covering `(transaction_type, created_at)` index) and the
#: sessions summed per user (a range of the covering `started_at` index, hashed by user: a
#: few thousand users, never spilled). Those per-user sums (`per`) are rolled up into the
#: buckets and, grouped by user, into the ranking, whose rows also carry how many users there
#: were (the window's active users) and how many of them had a session from bucket
#: `:recent_from` on (the last 24 hours): one pass over the window's sessions for all of it.
#: Rows with a bucket are the buckets' (all of them), rows without one the top users'.
_POSTGRES_ACTIVITY = text(
    """
WITH edges AS MATERIALIZED (
    SELECT CAST(e.i - 1 AS integer) AS i, e.lo, e.hi
    FROM unnest(CAST(:lo AS timestamptz[]), CAST(:hi AS timestamptz[])) WITH ORDINALITY
         AS e(lo, hi, i)
), per AS MATERIALIZED (
    SELECT e.i, p.user_id, p.requests, p.moved
    FROM edges AS e
    CROSS JOIN LATERAL (
        SELECT s.user_id, sum(s.request_count) AS requests,
               sum(s.bytes_in + s.bytes_out) AS moved
        FROM proxy_sessions AS s
        WHERE s.started_at >= e.lo AND s.started_at < e.hi
        GROUP BY s.user_id
    ) AS p
), ranked AS (
    SELECT user_id, sum(requests) AS requests, sum(moved) AS moved,
           count(*) OVER () AS active,
           sum(CASE WHEN max(i) >= :recent_from THEN 1 ELSE 0 END) OVER () AS recent
    FROM per
    GROUP BY user_id
)
SELECT e.i, NULL AS user_id, NULL AS email, joined.n, ledger.tokens, ledger.bundles,
       ledger.revenue, ledger.refunds, ledger.bonuses,
       CAST(coalesce(proxy.requests, 0) AS bigint), CAST(coalesce(proxy.moved, 0) AS bigint),
       coalesce(proxy.people, 0)
FROM edges AS e
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM users AS u WHERE u.created_at >= e.lo AND u.created_at < e.hi
) AS joined
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE x.transaction_type = :purchase
                              AND x.reference_type = :token) AS tokens,
           count(*) FILTER (WHERE x.transaction_type = :purchase
                              AND x.reference_type = :bundle) AS bundles,
           sum(-x.amount) FILTER (WHERE x.transaction_type = :purchase) AS revenue,
           sum(x.amount) FILTER (WHERE x.transaction_type = :refund) AS refunds,
           sum(x.amount) FILTER (WHERE x.transaction_type = :bonus) AS bonuses
    FROM transactions AS x
    WHERE x.transaction_type IN (:purchase, :refund, :bonus)
      AND x.created_at >= e.lo AND x.created_at < e.hi
) AS ledger
LEFT JOIN (
    SELECT i, sum(requests) AS requests, sum(moved) AS moved, count(*) AS people
    FROM per
    GROUP BY i
) AS proxy ON proxy.i = e.i
UNION ALL
SELECT NULL, r.user_id, u.email, r.active, r.recent, NULL, NULL, NULL, NULL,
       CAST(r.requests AS bigint), CAST(r.moved AS bigint), NULL
FROM (SELECT * FROM ranked ORDER BY requests DESC, moved DESC, user_id LIMIT :rank) AS r
JOIN users AS u ON u.id = r.user_id
"""
)


def _moment(value: datetime) -> ColumnElement[datetime]:
    return literal(value, UtcDateTime())


def _money(amount: Any) -> Any:
    return ZERO if amount is None else quantize(amount)


def _recent_bucket(window: Window) -> int | None:
    """The first bucket of the window's last `DAU_SPAN`, when that span is whole buckets of
    it (a day's hours, a week's or a month's last day); None otherwise."""
    offset = window.end - DAU_SPAN - window.start
    if offset < timedelta(0) or offset % window.width:
        return None
    return offset // window.width


class SqlAnalyticsQueries:
    def __init__(self, connection: Connection) -> None:
        self._c = connection
        self._sqlite = connection.dialect.name == "sqlite"

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

    def activity(self, window: Window, *, limit: int) -> Activity:
        recent: int | None = None
        if self._sqlite:
            buckets = self._sqlite_activity(window)
            top = self._sqlite_top_users(window, limit)
            active = self._active_users(window.start, window.end)
        else:
            buckets, top, active, recent = self._postgres_activity(window, limit)
        if recent is None:
            recent = self._active_users(window.end - DAU_SPAN, window.end)
        return Activity(
            buckets=buckets, top_users=top, active_users=active, daily_active_users=recent
        )

    # --- PostgreSQL. ---

    def _postgres_activity(
        self, window: Window, limit: int
    ) -> tuple[list[ActivityBucketRow], list[TopUser], int, int | None]:
        """The buckets, top users and active users from `_POSTGRES_ACTIVITY`, and the last
        day's active users, or None when that day is not whole buckets of the window."""
        recent_from = _recent_bucket(window)
        buckets = window.buckets()
        rows: list[ActivityBucketRow] = []
        top: list[TopUser] = []
        active, recent = 0, 0
        for index, user_id, email, *counts, requests, moved, people in self._c.execute(
            _POSTGRES_ACTIVITY,
            {
                "lo": [bucket.start for bucket in buckets],
                "hi": [bucket.end for bucket in buckets],
                # Past the last bucket when the span is not whole buckets: counted apart.
                "recent_from": window.count if recent_from is None else recent_from,
                # At least one row, which carries the active users whatever `limit` is.
                "rank": max(limit, 1),
                "purchase": TransactionType.PURCHASE.value,
                "refund": TransactionType.REFUND.value,
                "bonus": TransactionType.REFERRAL_BONUS.value,
                "token": TOKEN_REFERENCE,
                "bundle": BUNDLE_PURCHASE_REFERENCE,
            },
        ):
            if index is None:
                active, recent = int(counts[0]), int(counts[1])
                top.append(TopUser(user_id, email, requests, moved))
                continue
            joined, tokens, bundles, revenue, refunds, bonuses = counts
            row = ActivityBucketRow(
                index,
                new_users=joined,
                token_purchases=tokens,
                bundle_purchases=bundles,
                revenue=_money(revenue),
                refunds=_money(refunds),
                referral_bonuses=_money(bonuses),
                proxy_requests=requests,
                bytes_transferred=moved,
                active_users=people,
            )
            if row != ActivityBucketRow(index):
                rows.append(row)
        top.sort(key=lambda user: (-user.requests, -user.bytes_transferred, user.user_id))
        return rows, top[:limit], active, None if recent_from is None else recent

    # --- Both engines. ---

    def _active_users(self, start: datetime, end: datetime) -> int:
        # One probe of the `(user_id, started_at)` index per user, instead of collecting the
        # distinct users of every session in the span.
        s = proxy_sessions.c
        count = self._c.execute(
            select(func.count())
            .select_from(users)
            .where(exists().where(s.user_id == users.c.id, self._started_in(start, end)))
        ).scalar_one()
        return int(count)

    @staticmethod
    def _started_in(start: datetime, end: datetime) -> ColumnElement[bool]:
        started = proxy_sessions.c.started_at
        return and_(started >= start, started < end)

    # --- SQLite: exact time arithmetic on its text timestamps, grouped by bucket. ---

    @staticmethod
    def _microseconds_since(column: ColumnElement[Any], origin: datetime) -> Any:
        """`column - origin` in whole microseconds, as an integer expression."""
        # Without the fraction: SQLite keeps times in milliseconds internally and would round
        # `…:59.9996` up into the next second.
        seconds = cast(func.strftime("%s", func.substr(column, 1, 19)), Integer)
        fraction = cast(func.substr(column, 21, 6), Integer)
        origin_us = (origin - _EPOCH) // _MICROSECOND
        return seconds * 1_000_000 + fraction - origin_us

    def _bucket(self, column: ColumnElement[Any], window: Window) -> Any:
        # Integer division of a non-negative offset: the floor.
        offset = self._microseconds_since(column, window.start)
        return (offset // window.width_microseconds).label("bucket")

    def _session_duration(self, now: datetime) -> Any:
        """Microseconds from a session's start to its end, or to `now` while it is open."""
        ended = proxy_sessions.c.ended_at
        until = case((or_(ended.is_(None), ended > _moment(now)), _moment(now)), else_=ended)
        # `until` is text here; the difference of two offsets from one origin is exact.
        return self._microseconds_since(until, _EPOCH) - self._microseconds_since(
            proxy_sessions.c.started_at, _EPOCH
        )

    @staticmethod
    def _money_sum(condition: ColumnElement[bool], amount: Any) -> Any:
        # ROUND: SQLite sums NUMERIC as binary floating point; Money quantises on the way out.
        return type_coerce(func.round(func.sum(case((condition, amount), else_=0)), 2), Money())

    @staticmethod
    def _count_where(condition: ColumnElement[bool]) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

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

    def _sqlite_activity(self, window: Window) -> list[ActivityBucketRow]:
        """The window's new users, ledger and proxy use per bucket, merged."""
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

        t = transactions.c
        purchase = t.transaction_type == TransactionType.PURCHASE.value
        entry_bucket = self._bucket(t.created_at, window)
        for index, tokens, bundles, revenue, refunds, bonuses in self._c.execute(
            select(
                entry_bucket,
                self._count_where(and_(purchase, t.reference_type == TOKEN_REFERENCE)),
                self._count_where(and_(purchase, t.reference_type == BUNDLE_PURCHASE_REFERENCE)),
                self._money_sum(purchase, -t.amount),
                self._money_sum(t.transaction_type == TransactionType.REFUND.value, t.amount),
                self._money_sum(
                    t.transaction_type == TransactionType.REFERRAL_BONUS.value, t.amount
                ),
            )
            .where(
                t.transaction_type.in_(
                    [
                        TransactionType.PURCHASE.value,
                        TransactionType.REFUND.value,
                        TransactionType.REFERRAL_BONUS.value,
                    ]
                ),
                t.created_at >= window.start,
                t.created_at < window.end,
            )
            .group_by(entry_bucket)
        ):
            merge(
                index,
                token_purchases=int(tokens),
                bundle_purchases=int(bundles),
                revenue=revenue if revenue is not None else ZERO,
                refunds=refunds if refunds is not None else ZERO,
                referral_bonuses=bonuses if bonuses is not None else ZERO,
            )

        c = proxy_sessions.c
        started = self._bucket(c.started_at, window)
        for index, requests, transferred, people in self._c.execute(
            select(
                started,
                func.sum(c.request_count),
                func.sum(c.bytes_in + c.bytes_out),
                func.count(c.user_id.distinct()),
            )
            .where(self._started_in(window.start, window.end))
            .group_by(started)
        ):
            merge(
                index,
                proxy_requests=int(requests),
                bytes_transferred=int(transferred),
                active_users=int(people),
            )
        return [ActivityBucketRow(index, **values) for index, values in sorted(rows.items())]

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
