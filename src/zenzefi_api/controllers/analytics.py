"""Usage analytics: the caller's own usage, and the operators' figures for the whole service.

Both take `period` (`day`, `week`, `month`; `day` when absent) and answer a window ending now,
cut into hourly (`day`) or daily buckets, every bucket present, zeros included. A session's
usage counts in the bucket of its start.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, get
from litestar.params import QueryParameter

from zenzefi_api.auth import BEARER, account_checked_by_use_case, superuser_required, token_required
from zenzefi_api.context import CoreDep, CurrentLogin, CurrentUser
from zenzefi_api.schemas import Money, Timestamp, error_responses, money, timestamp
from zenzefi_core.analytics import (
    ActivityPoint,
    BucketUnit,
    GlobalReport,
    Period,
    TopUser,
    UsagePoint,
    UsageReport,
)
from zenzefi_core.services.analytics import (
    GetGlobalStats,
    GetUsageStats,
    GlobalStatsQuery,
    UsageQuery,
)

PeriodParam = Annotated[
    Period,
    QueryParameter(
        description="`day` (the default: last 24 h, hourly buckets), `week` (last 7 days, "
        "daily) or `month` (last 30 days, daily); another value is 422"
    ),
]


class UsagePointOut(msgspec.Struct, kw_only=True):
    start: Timestamp
    end: Timestamp
    requests: int
    bytes_transferred: int
    sessions: Annotated[int, msgspec.Meta(description="Sessions started in this bucket")]

    @classmethod
    def of(cls, point: UsagePoint) -> UsagePointOut:
        return cls(
            start=timestamp(point.start),
            end=timestamp(point.end),
            requests=point.requests,
            bytes_transferred=point.bytes_transferred,
            sessions=point.sessions,
        )


class UsageOut(msgspec.Struct, kw_only=True):
    """The caller's proxy usage: sessions started in the window, summed per bucket."""

    period: Period
    start_time: Timestamp
    end_time: Timestamp
    bucket: Annotated[BucketUnit, msgspec.Meta(description="`hour` for a day, else `day`")]
    total_requests: int
    total_bytes_transferred: Annotated[int, msgspec.Meta(description="Bytes in and out")]
    active_sessions: Annotated[int, msgspec.Meta(description="Sessions open now")]
    active_tokens: Annotated[
        int, msgspec.Meta(description="Tokens usable now: not revoked, not expired")
    ]
    avg_session_duration_minutes: Annotated[
        float,
        msgspec.Meta(
            description="Mean length of the window's sessions, open ones counted up to now; "
            "two decimals, 0 without sessions"
        ),
    ]
    series: list[UsagePointOut]

    @classmethod
    def of(cls, report: UsageReport) -> UsageOut:
        window = report.window
        return cls(
            period=window.period,
            start_time=timestamp(window.start),
            end_time=timestamp(window.end),
            bucket=window.unit,
            total_requests=report.total_requests,
            total_bytes_transferred=report.total_bytes_transferred,
            active_sessions=report.active_sessions,
            active_tokens=report.active_tokens,
            avg_session_duration_minutes=report.avg_session_duration_minutes,
            series=[UsagePointOut.of(point) for point in report.series],
        )


class TopUserOut(msgspec.Struct, kw_only=True):
    user_id: UUID
    email: str
    requests: int
    bytes_transferred: int

    @classmethod
    def of(cls, user: TopUser) -> TopUserOut:
        return cls(
            user_id=user.user_id,
            email=user.email,
            requests=user.requests,
            bytes_transferred=user.bytes_transferred,
        )


class ActivityPointOut(msgspec.Struct, kw_only=True):
    start: Timestamp
    end: Timestamp
    new_users: int
    token_purchases: int
    bundle_purchases: int
    revenue_znc: Money
    refunds_znc: Money
    referral_bonuses_paid_znc: Money
    proxy_requests: int
    bytes_transferred: int
    active_users: Annotated[
        int, msgspec.Meta(description="Distinct users with a session started in this bucket")
    ]

    @classmethod
    def of(cls, point: ActivityPoint) -> ActivityPointOut:
        return cls(
            start=timestamp(point.start),
            end=timestamp(point.end),
            new_users=point.new_users,
            token_purchases=point.token_purchases,
            bundle_purchases=point.bundle_purchases,
            revenue_znc=money(point.revenue),
            refunds_znc=money(point.refunds),
            referral_bonuses_paid_znc=money(point.referral_bonuses),
            proxy_requests=point.proxy_requests,
            bytes_transferred=point.bytes_transferred,
            active_users=point.active_users,
        )


class GlobalStatsOut(msgspec.Struct, kw_only=True):
    """The whole service over the window: sign-ups, sales, money and proxy traffic."""

    period: Period
    start_time: Timestamp
    end_time: Timestamp
    bucket: Annotated[BucketUnit, msgspec.Meta(description="`hour` for a day, else `day`")]
    new_users: int
    token_purchases: Annotated[int, msgspec.Meta(description="Single tokens bought")]
    bundle_purchases: int
    revenue_znc: Annotated[
        Money, msgspec.Meta(description="What purchases debited, refunds not subtracted")
    ]
    refunds_znc: Annotated[Money, msgspec.Meta(description="What refunds credited back")]
    referral_bonuses_paid_znc: Annotated[
        Money,
        msgspec.Meta(description="Referral bonuses credited; clawbacks are not subtracted"),
    ]
    total_proxy_requests: int
    total_bytes_transferred: int
    active_users: Annotated[
        int, msgspec.Meta(description="Distinct users with a session started in the window")
    ]
    daily_active_users: Annotated[
        int, msgspec.Meta(description="Distinct users with a session started in the last 24 h")
    ]
    top_users: Annotated[
        list[TopUserOut],
        msgspec.Meta(description="Up to 10 users with the most requests in the window"),
    ]
    series: list[ActivityPointOut]

    @classmethod
    def of(cls, report: GlobalReport) -> GlobalStatsOut:
        window = report.window
        return cls(
            period=window.period,
            start_time=timestamp(window.start),
            end_time=timestamp(window.end),
            bucket=window.unit,
            new_users=report.new_users,
            token_purchases=report.token_purchases,
            bundle_purchases=report.bundle_purchases,
            revenue_znc=money(report.revenue),
            refunds_znc=money(report.refunds),
            referral_bonuses_paid_znc=money(report.referral_bonuses),
            total_proxy_requests=report.total_proxy_requests,
            total_bytes_transferred=report.total_bytes_transferred,
            active_users=report.active_users,
            daily_active_users=report.daily_active_users,
            top_users=[TopUserOut.of(user) for user in report.top_users],
            series=[ActivityPointOut.of(point) for point in report.series],
        )


class AnalyticsController(Controller):
    path = "/analytics"
    tags = ("Analytics",)
    security = BEARER

    @get(
        "/usage",
        operation_id="getUsageStats",
        # The use case reads and checks the account in its own transaction: no second read,
        # round trip and thread hop in a guard first (see `token_required`).
        guards=[token_required],
        summary="The caller's proxy usage over a day, a week or a month",
        description="Only the caller's own sessions and tokens. A session's requests and "
        "bytes count in the bucket of its start; a session counts when it started in the "
        "window. `series` has 24 hourly buckets for `day`, 7 or 30 daily ones otherwise.",
        responses=error_responses(401, 403, 422, 503),
        sync_to_thread=True,
    )
    def usage(
        self, core: CoreDep, current_login: CurrentLogin, period: PeriodParam = Period.DAY
    ) -> UsageOut:
        query = UsageQuery(current_login.user_id, period, current_login.session_version)
        with account_checked_by_use_case():
            report = GetUsageStats(core.uow, core.clock)(query)
        return UsageOut.of(report)

    @get(
        "/admin/global-stats",
        operation_id="getGlobalStats",
        guards=[superuser_required],
        summary="Sign-ups, sales, money and proxy traffic over a day, a week or a month",
        description="For operators (403 otherwise). Money comes from the ledger: `revenue_znc` "
        "is what purchases debited, `refunds_znc` what refunds gave back, "
        "`referral_bonuses_paid_znc` the bonuses credited (clawbacks not subtracted). Proxy "
        "figures count sessions started in the window, in the bucket of their start.",
        responses=error_responses(401, 403, 422, 503),
        sync_to_thread=True,
    )
    def global_stats(
        self, core: CoreDep, current_user: CurrentUser, period: PeriodParam = Period.DAY
    ) -> GlobalStatsOut:
        report = GetGlobalStats(core.uow, core.clock)(GlobalStatsQuery(current_user.id, period))
        return GlobalStatsOut.of(report)
