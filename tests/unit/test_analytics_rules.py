"""The analytics rules as properties: windows, buckets, zero-filled series, average durations."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zenzefi_core.analytics import (
    ActivityBucketRow,
    BucketUnit,
    LiveUsage,
    Period,
    TopUser,
    UsageBucketRow,
    Window,
    average_minutes,
    global_report,
    session_microseconds,
    usage_report,
)
from zenzefi_core.ids import new_id
from zenzefi_core.money import ZERO

SHAPES = {
    Period.DAY: (BucketUnit.HOUR, timedelta(hours=1), 24),
    Period.WEEK: (BucketUnit.DAY, timedelta(days=1), 7),
    Period.MONTH: (BucketUnit.DAY, timedelta(days=1), 30),
}

# Hypothesis draws naive bounds and attaches the zone itself.
moments = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
periods = st.sampled_from(list(Period))
counts = st.integers(min_value=0, max_value=10**12)
money = st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False)


@given(periods, moments)
def test_buckets_cover_the_window_exactly(period: Period, now: datetime) -> None:
    window = Window.ending_at(period, now)
    unit, width, count = SHAPES[period]
    assert (window.unit, window.width, window.count) == (unit, width, count)
    assert window.end == now
    assert window.end - window.start == width * count
    buckets = window.buckets()
    assert len(buckets) == count
    assert buckets[0].start == window.start
    assert buckets[-1].end == window.end
    for bucket in buckets:
        assert bucket.end - bucket.start == width
    for before, after in itertools.pairwise(buckets):
        assert before.end == after.start  # no gap, no overlap


@given(periods, moments, st.data())
def test_every_moment_of_the_window_is_in_the_one_bucket_that_holds_it(
    period: Period, now: datetime, data: st.DataObject
) -> None:
    window = Window.ending_at(period, now)
    offset = data.draw(st.integers(0, window.width_microseconds * window.count - 1))
    moment = window.start + timedelta(microseconds=offset)
    index = window.bucket_index(moment)
    bucket = window.buckets()[index]
    assert bucket.start <= moment < bucket.end
    # The boundaries themselves: a bucket's start is in it, its end in the next one.
    assert window.bucket_index(bucket.start) == index
    if index + 1 < window.count:
        assert window.bucket_index(bucket.end) == index + 1


@given(periods, moments)
def test_moments_outside_the_window_have_no_bucket(period: Period, now: datetime) -> None:
    window = Window.ending_at(period, now)
    for outside in (window.end, window.start - timedelta(microseconds=1)):
        assert not window.contains(outside)
        with pytest.raises(ValueError, match="outside the window"):
            window.bucket_index(outside)


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Window.ending_at(Period.DAY, datetime(2026, 11, 26, 12, 0))  # noqa: DTZ001


def _usage_rows(count: int) -> st.SearchStrategy[list[UsageBucketRow]]:
    row = st.builds(
        UsageBucketRow,
        index=st.just(0),
        requests=counts,
        bytes_transferred=counts,
        sessions=st.integers(1, 1000),
        duration_microseconds=counts,
    )
    return st.dictionaries(st.integers(0, count - 1), row).map(
        lambda found: [
            UsageBucketRow(i, r.requests, r.bytes_transferred, r.sessions, r.duration_microseconds)
            for i, r in sorted(found.items())
        ]
    )


@given(periods, moments, st.data(), st.integers(0, 50), st.integers(0, 50))
def test_the_usage_series_is_full_and_sums_to_the_totals(
    period: Period, now: datetime, data: st.DataObject, sessions_open: int, tokens: int
) -> None:
    window = Window.ending_at(period, now)
    rows = data.draw(_usage_rows(window.count))
    report = usage_report(window, rows, LiveUsage(sessions_open, tokens))
    assert [(p.start, p.end) for p in report.series] == [(b.start, b.end) for b in window.buckets()]
    assert report.total_requests == sum(p.requests for p in report.series)
    assert report.total_requests == sum(r.requests for r in rows)
    assert report.total_bytes_transferred == sum(p.bytes_transferred for p in report.series)
    assert report.total_bytes_transferred == sum(r.bytes_transferred for r in rows)
    assert report.total_sessions == sum(p.sessions for p in report.series)
    filled = {r.index for r in rows}
    for index, point in enumerate(report.series):
        if index not in filled:
            assert (point.requests, point.bytes_transferred, point.sessions) == (0, 0, 0)
    assert (report.active_sessions, report.active_tokens) == (sessions_open, tokens)


def _activity_rows(count: int) -> st.SearchStrategy[list[ActivityBucketRow]]:
    row = st.builds(
        ActivityBucketRow,
        index=st.just(0),
        new_users=counts,
        token_purchases=counts,
        bundle_purchases=counts,
        revenue=money,
        refunds=money,
        referral_bonuses=money,
        proxy_requests=counts,
        bytes_transferred=counts,
        active_users=counts,
    )
    return st.dictionaries(st.integers(0, count - 1), row).map(
        lambda found: [
            ActivityBucketRow(
                i,
                r.new_users,
                r.token_purchases,
                r.bundle_purchases,
                r.revenue,
                r.refunds,
                r.referral_bonuses,
                r.proxy_requests,
                r.bytes_transferred,
                r.active_users,
            )
            for i, r in sorted(found.items())
        ]
    )


@given(periods, moments, st.data())
def test_the_global_series_is_full_and_sums_to_the_totals(
    period: Period, now: datetime, data: st.DataObject
) -> None:
    window = Window.ending_at(period, now)
    rows = data.draw(_activity_rows(window.count))
    top = [TopUser(new_id(), f"u{i}@example.com", 100 - i, i) for i in range(12)]
    report = global_report(window, rows, active_users=7, daily_active_users=3, top_users=top)
    series = report.series
    assert len(series) == window.count
    assert [(p.start, p.end) for p in series] == [(b.start, b.end) for b in window.buckets()]
    for total, name in (
        (report.new_users, "new_users"),
        (report.token_purchases, "token_purchases"),
        (report.bundle_purchases, "bundle_purchases"),
        (report.revenue, "revenue"),
        (report.refunds, "refunds"),
        (report.referral_bonuses, "referral_bonuses"),
        (report.total_proxy_requests, "proxy_requests"),
        (report.total_bytes_transferred, "bytes_transferred"),
    ):
        assert total == sum((getattr(p, name) for p in series), ZERO)
        assert total == sum((getattr(r, name) for r in rows), ZERO)
    filled = {r.index for r in rows}
    empty = [p for i, p in enumerate(series) if i not in filled]
    assert all(p.revenue == ZERO and p.proxy_requests == 0 for p in empty)
    assert (report.active_users, report.daily_active_users) == (7, 3)
    assert report.top_users == top[:10]


@pytest.mark.parametrize(
    "rows",
    [
        [UsageBucketRow(24, 1, 1, 1, 1)],
        [UsageBucketRow(-1, 1, 1, 1, 1)],
        [UsageBucketRow(3, 1, 1, 1, 1), UsageBucketRow(3, 1, 1, 1, 1)],
    ],
)
def test_rows_outside_the_window_or_twice_are_refused(rows: list[UsageBucketRow]) -> None:
    window = Window.ending_at(Period.DAY, datetime(2026, 11, 26, tzinfo=UTC))
    with pytest.raises(ValueError, match="bucket"):
        usage_report(window, rows, LiveUsage(0, 0))


session_spans = st.tuples(
    st.integers(0, 30 * 24 * 3600 * 10**6),  # starts this long before now
    st.one_of(st.none(), st.integers(0, 60 * 24 * 3600 * 10**6)),  # lasts this long, or open
)


@given(moments, st.lists(session_spans, min_size=1, max_size=20))
def test_open_sessions_last_until_now(now: datetime, spans: list[tuple[int, int | None]]) -> None:
    micro = timedelta(microseconds=1)
    expected = []
    total = 0
    for ago, length in spans:
        started = now - ago * micro
        ended = None if length is None else started + length * micro
        lasted = session_microseconds(started, ended, now)
        # Open, or ended after now: up to now. Ended before now: to its end.
        assert lasted == (ago if length is None else min(length, ago))
        expected.append(Decimal(lasted) / 60_000_000)
        total += lasted
    average = average_minutes(total, len(spans))
    assert average == pytest.approx(float(sum(expected) / len(expected)), abs=0.005)


def test_the_average_of_no_sessions_is_zero() -> None:
    assert average_minutes(0, 0) == 0.0
    assert average_minutes(90 * 60_000_000, 4) == 22.5
