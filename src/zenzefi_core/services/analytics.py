"""Usage analytics: a user's own usage, and the operators' view of the whole business.

Each report is read in one unit of work: the store sums per bucket (`AnalyticsQueries`), the
core fills in the empty buckets and the totals (`zenzefi_core.analytics`). Nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from zenzefi_core.analytics import (
    TOP_USERS,
    GlobalReport,
    Period,
    UsageReport,
    Window,
    global_report,
    usage_report,
)
from zenzefi_core.ports import Clock, UnitOfWorkFactory
from zenzefi_core.services.admin import require_superuser
from zenzefi_core.services.tokens import active_user


@dataclass(frozen=True, slots=True)
class UsageQuery:
    user_id: UUID
    period: Period = Period.DAY
    #: The login's session version when the caller came through a login token: an ended
    #: login (password changed, account deactivated since) is refused like a forged one.
    session_version: int | None = None


class GetUsageStats:
    """The caller's own proxy usage over the period ending now: only their sessions and
    tokens are read, whoever else used the proxy."""

    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow_factory = uow_factory
        self._clock = clock

    def __call__(self, query: UsageQuery) -> UsageReport:
        window = Window.ending_at(query.period, self._clock.now())
        with self._uow_factory() as uow:
            user = active_user(uow, query.user_id, query.session_version)
            rows, live = uow.analytics.usage(user.id, window)
        return usage_report(window, rows, live)


@dataclass(frozen=True, slots=True)
class GlobalStatsQuery:
    actor_id: UUID
    period: Period = Period.DAY


class GetGlobalStats:
    """New users, purchases, money and proxy traffic over the period ending now, for
    operators: the actor is re-read and checked inside the same unit of work, like every
    operator action."""

    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow_factory = uow_factory
        self._clock = clock

    def __call__(self, query: GlobalStatsQuery) -> GlobalReport:
        window = Window.ending_at(query.period, self._clock.now())
        with self._uow_factory() as uow:
            require_superuser(uow.users.get(query.actor_id))
            activity = uow.analytics.activity(window, limit=TOP_USERS)
        return global_report(
            window,
            activity.buckets,
            active_users=activity.active_users,
            daily_active_users=activity.daily_active_users,
            top_users=activity.top_users,
        )
