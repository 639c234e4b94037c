"""The scheduled scan for tokens about to expire: one `token.expiring` event per token, ever.

A token's clock starts at its first proxied request, so its `expires_at` is only known once it
has been used; the scan looks at every token whose end falls within the notice window (24 hours
by default) and has not been told about yet. Emails (and, later, webhooks) follow from the
event, so the scan itself never talks to a mail server and runs in the same few statements
however many tokens there are.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from zenzefi_core.domain import OutboxEvent
from zenzefi_core.ids import new_id
from zenzefi_core.notifications import DEFAULT_EXPIRY_NOTICE
from zenzefi_core.ports import Clock, UnitOfWorkFactory

#: Tokens one scan transaction claims at most; the job repeats until a batch comes back short.
DEFAULT_SCAN_BATCH = 1000


class ScanExpiringTokens:
    """Claim one batch of tokens expiring within `notice` and record a `token.expiring` event
    for each, in one transaction. Returns how many tokens it claimed.

    Running it twice, or in two processes at once, tells about each token once: the claim is a
    row per token under a unique key, and a token another scan claimed is left out.
    """

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        *,
        notice: timedelta = DEFAULT_EXPIRY_NOTICE,
        batch_size: int = DEFAULT_SCAN_BATCH,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._notice = notice
        self._batch_size = batch_size
        #: Where the walk through the window stands: the last `expires_at` claimed, so the next
        #: batch starts there instead of skipping every token claimed before (which made a large
        #: backlog quadratic). Reset once a batch comes back short, i.e. the walk reached the end.
        self._cursor: datetime | None = None

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def __call__(self) -> int:
        now = self._clock.now()
        with self._uow_factory() as uow:
            tokens = uow.token_notices.claim_expiring(
                now, now + self._notice, limit=self._batch_size, after=self._cursor
            )
            uow.outbox.add_all(
                [
                    OutboxEvent(
                        id=new_id(),
                        event_type="token.expiring",
                        payload={
                            "user_id": str(token.user_id),
                            "token_id": str(token.id),
                            "token_prefix": token.token_prefix,
                            "duration_hours": token.duration_hours,
                            "scope": token.scope.value,
                            "expires_at": token.expires_at.isoformat()
                            if token.expires_at
                            else None,
                        },
                        created_at=now,
                        user_id=token.user_id,
                    )
                    for token in tokens
                ]
            )
            uow.commit()
        last = tokens[-1].expires_at if tokens else None
        self._cursor = last if len(tokens) >= self._batch_size else None
        return len(tokens)
