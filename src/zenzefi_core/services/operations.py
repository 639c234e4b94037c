"""What an operator's dashboard asks of the database: the state of the whole system right now.

The numbers describe every process at once (the outbox, the open proxy sessions, the tokens in
use), so they are read from the database when they are wanted rather than counted in one
process. Each is one indexed aggregate, cheap enough to run at every metrics scrape.
"""

from __future__ import annotations

from dataclasses import dataclass

from zenzefi_core.ports import Clock, UnitOfWorkFactory


@dataclass(frozen=True, slots=True)
class SystemGauges:
    #: Outbox events the broker has not accepted yet.
    outbox_pending: int
    #: How long the oldest of them has waited, in seconds; 0 when there is none.
    outbox_oldest_age_seconds: float
    #: Proxy sessions not ended: devices holding a token.
    open_sessions: int
    #: Tokens activated and not yet expired.
    running_tokens: int


class ReadSystemGauges:
    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow_factory = uow_factory
        self._clock = clock

    def __call__(self) -> SystemGauges:
        now = self._clock.now()
        with self._uow_factory() as uow:
            backlog = uow.outbox.backlog()
            open_sessions = uow.proxy_sessions.count_open()
            running = uow.tokens.count_running(now)
        oldest = backlog.oldest_created_at
        age = 0.0 if oldest is None else max((now - oldest).total_seconds(), 0.0)
        return SystemGauges(
            outbox_pending=backlog.pending,
            outbox_oldest_age_seconds=age,
            open_sessions=open_sessions,
            running_tokens=running,
        )
