"""Usage analytics: period windows, their buckets, and the reports assembled from aggregates.

The database does the counting (one row per non-empty bucket, summed in SQL); this module holds
the rules around it, with no I/O, so they are property-tested on their own:

- a window ends at the clock's now and lasts 24 hours (`day`), 7 days (`week`) or 30 days
  (`month`); it is cut into 24 hourly or 7 or 30 daily buckets starting at its start, which
  cover `[start, end)` exactly, with no gap and no overlap;
- a session's whole usage counts in the bucket holding its `started_at` (sessions carry
  counters, not per-request timestamps), and a session counts in a window when it started in it;
- the average session lasts from its start to its end, or to now while it is still open;
- buckets with nothing in them are reported with zeros, so every series has its full length and
  sums to the totals beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TypeVar
from uuid import UUID

from zenzefi_core.money import ZERO

#: How many top users the global report lists.
TOP_USERS = 10
#: Daily active users are those seen in this trailing span, whatever the report's period.
DAU_SPAN = timedelta(hours=24)
_MICROSECOND = timedelta(microseconds=1)


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class BucketUnit(StrEnum):
    HOUR = "hour"
    DAY = "day"


_SHAPES: dict[Period, tuple[BucketUnit, timedelta, int]] = {
    Period.DAY: (BucketUnit.HOUR, timedelta(hours=1), 24),
    Period.WEEK: (BucketUnit.DAY, timedelta(days=1), 7),
    Period.MONTH: (BucketUnit.DAY, timedelta(days=1), 30),
}


@dataclass(frozen=True, slots=True)
class Bucket:
    """One slice of a window: `[start, end)`."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Window:
    """`[start, end)` cut into `count` buckets of `width`, the first one starting at `start`."""

    period: Period
    start: datetime
    end: datetime
    unit: BucketUnit
    width: timedelta
    count: int

    @classmethod
    def ending_at(cls, period: Period, now: datetime) -> Window:
        if now.tzinfo is None:
            raise ValueError("a window needs a timezone-aware end")
        unit, width, count = _SHAPES[Period(period)]
        end = now.astimezone(UTC)
        return cls(
            period=Period(period),
            start=end - width * count,
            end=end,
            unit=unit,
            width=width,
            count=count,
        )

    @property
    def width_microseconds(self) -> int:
        return self.width // _MICROSECOND

    def buckets(self) -> list[Bucket]:
        return [
            Bucket(self.start + self.width * i, self.start + self.width * (i + 1))
            for i in range(self.count)
        ]

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def bucket_index(self, moment: datetime) -> int:
        """The bucket holding `moment`, which must lie in the window (integer arithmetic on
        microseconds, the same the SQL adapter does, so a moment on a boundary is never
        placed by rounding)."""
        if not self.contains(moment):
            raise ValueError(f"{moment.isoformat()} is outside the window")
        return (moment - self.start) // self.width


# --- What the queries return: one row per bucket that has something in it. ---


@dataclass(frozen=True, slots=True)
class UsageBucketRow:
    """A user's sessions started in one bucket, summed by the store."""

    index: int
    requests: int
    bytes_transferred: int
    sessions: int
    #: Sum over those sessions of (end, or now while open) minus start.
    duration_microseconds: int


@dataclass(frozen=True, slots=True)
class LiveUsage:
    """What a user has going right now."""

    #: Sessions not ended.
    active_sessions: int
    #: Tokens neither revoked nor expired (including those not used yet).
    active_tokens: int


@dataclass(frozen=True, slots=True)
class ActivityBucketRow:
    """Everything that happened in one bucket, across all users, summed by the store.

    A field the store has nothing for in this bucket is zero.
    """

    index: int
    new_users: int = 0
    token_purchases: int = 0
    bundle_purchases: int = 0
    #: What purchases took from wallets (a positive amount; refunds are not subtracted).
    revenue: Decimal = ZERO
    #: What refunds gave back (positive).
    refunds: Decimal = ZERO
    #: Referral bonuses credited (positive; clawbacks are not subtracted).
    referral_bonuses: Decimal = ZERO
    proxy_requests: int = 0
    bytes_transferred: int = 0
    #: Distinct users with a session started in the bucket.
    active_users: int = 0


@dataclass(frozen=True, slots=True)
class TopUser:
    user_id: UUID
    email: str
    requests: int
    bytes_transferred: int


@dataclass(frozen=True, slots=True)
class Activity:
    """What the store sums for the operators' report over a window."""

    #: One row per bucket with anything in it, in bucket order.
    buckets: list[ActivityBucketRow]
    #: The users with the most requests in sessions started in the window, most first (ties:
    #: more bytes first, then by id).
    top_users: list[TopUser]
    #: Distinct users with a session started in the window.
    active_users: int
    #: Distinct users with a session started in the `DAU_SPAN` before the window's end.
    daily_active_users: int


# --- The reports. ---


@dataclass(frozen=True, slots=True)
class UsagePoint:
    start: datetime
    end: datetime
    requests: int
    bytes_transferred: int
    sessions: int


@dataclass(frozen=True, slots=True)
class UsageReport:
    window: Window
    total_requests: int
    total_bytes_transferred: int
    total_sessions: int
    active_sessions: int
    active_tokens: int
    avg_session_duration_minutes: float
    series: list[UsagePoint]


@dataclass(frozen=True, slots=True)
class ActivityPoint:
    start: datetime
    end: datetime
    new_users: int
    token_purchases: int
    bundle_purchases: int
    revenue: Decimal
    refunds: Decimal
    referral_bonuses: Decimal
    proxy_requests: int
    bytes_transferred: int
    active_users: int


@dataclass(frozen=True, slots=True)
class GlobalReport:
    window: Window
    new_users: int
    token_purchases: int
    bundle_purchases: int
    revenue: Decimal
    refunds: Decimal
    referral_bonuses: Decimal
    total_proxy_requests: int
    total_bytes_transferred: int
    #: Distinct users with a session started in the window (not the sum of the buckets': a
    #: user active in two buckets is one user).
    active_users: int
    #: Distinct users with a session started in the last 24 hours.
    daily_active_users: int
    top_users: list[TopUser] = field(default_factory=list)
    series: list[ActivityPoint] = field(default_factory=list)


Row = TypeVar("Row", UsageBucketRow, ActivityBucketRow)


def _by_index(window: Window, rows: Iterable[Row]) -> dict[int, Row]:
    found: dict[int, Row] = {}
    for row in rows:
        if not 0 <= row.index < window.count:
            raise ValueError(f"bucket {row.index} is outside a window of {window.count}")
        if row.index in found:
            raise ValueError(f"bucket {row.index} reported twice")
        found[row.index] = row
    return found


def average_minutes(total_microseconds: int, sessions: int) -> float:
    """The mean duration in minutes, to two decimals; 0 without sessions."""
    if sessions == 0:
        return 0.0
    minutes = Decimal(total_microseconds) / Decimal(sessions) / Decimal(60_000_000)
    return float(minutes.quantize(Decimal("0.01")))


def usage_report(window: Window, rows: Sequence[UsageBucketRow], live: LiveUsage) -> UsageReport:
    """A user's report: every bucket of the window, zero where the store had no row."""
    found = _by_index(window, rows)
    empty = UsageBucketRow(0, 0, 0, 0, 0)
    series = []
    for index, bucket in enumerate(window.buckets()):
        row = found.get(index, empty)
        series.append(
            UsagePoint(
                start=bucket.start,
                end=bucket.end,
                requests=row.requests,
                bytes_transferred=row.bytes_transferred,
                sessions=row.sessions,
            )
        )
    sessions = sum(row.sessions for row in found.values())
    return UsageReport(
        window=window,
        total_requests=sum(point.requests for point in series),
        total_bytes_transferred=sum(point.bytes_transferred for point in series),
        total_sessions=sessions,
        active_sessions=live.active_sessions,
        active_tokens=live.active_tokens,
        avg_session_duration_minutes=average_minutes(
            sum(row.duration_microseconds for row in found.values()), sessions
        ),
        series=series,
    )


def global_report(
    window: Window,
    rows: Sequence[ActivityBucketRow],
    *,
    active_users: int,
    daily_active_users: int,
    top_users: Sequence[TopUser],
) -> GlobalReport:
    """The operators' report: every bucket of the window, zero where the store had no row."""
    found = _by_index(window, rows)
    series = []
    for index, bucket in enumerate(window.buckets()):
        row = found.get(index, ActivityBucketRow(index))
        series.append(
            ActivityPoint(
                start=bucket.start,
                end=bucket.end,
                new_users=row.new_users,
                token_purchases=row.token_purchases,
                bundle_purchases=row.bundle_purchases,
                revenue=row.revenue,
                refunds=row.refunds,
                referral_bonuses=row.referral_bonuses,
                proxy_requests=row.proxy_requests,
                bytes_transferred=row.bytes_transferred,
                active_users=row.active_users,
            )
        )
    return GlobalReport(
        window=window,
        new_users=sum(p.new_users for p in series),
        token_purchases=sum(p.token_purchases for p in series),
        bundle_purchases=sum(p.bundle_purchases for p in series),
        revenue=sum((p.revenue for p in series), ZERO),
        refunds=sum((p.refunds for p in series), ZERO),
        referral_bonuses=sum((p.referral_bonuses for p in series), ZERO),
        total_proxy_requests=sum(p.proxy_requests for p in series),
        total_bytes_transferred=sum(p.bytes_transferred for p in series),
        active_users=active_users,
        daily_active_users=daily_active_users,
        top_users=list(top_users[:TOP_USERS]),
        series=series,
    )


def session_microseconds(started_at: datetime, ended_at: datetime | None, now: datetime) -> int:
    """How long a session has lasted by `now`: to its end, or to now while open (an end after
    now is cut at now). The rule the SQL adapter computes in its SUM."""
    until = now if ended_at is None else min(ended_at, now)
    return (until - started_at) // _MICROSECOND
