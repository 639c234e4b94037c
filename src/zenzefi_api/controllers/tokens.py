"""Access tokens: buy one, list the caller's, revoke an unused one for a refund."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from zenzefi_api.auth import BEARER, account_checked_by_use_case, login_required, token_required
from zenzefi_api.context import CoreDep, CurrentLogin, CurrentUser
from zenzefi_api.schemas import (
    REPLAYED_HEADER,
    REPLAYED_RESPONSE_HEADERS,
    IdempotencyKeyHeader,
    Limit,
    Money,
    Offset,
    OptionalTimestamp,
    Timestamp,
    error_responses,
    money,
    page_of,
    replay_headers,
    timestamp,
)
from zenzefi_core.domain.tokens import AccessToken, TokenScope, TokenStatus
from zenzefi_core.paging import DEFAULT_LIMIT
from zenzefi_core.services.tokens import (
    IssuedToken,
    ListTokens,
    PurchaseToken,
    RevokeToken,
    TokenOrder,
    TokenQuery,
    TokenRevocation,
)

#: Longer than any scope's name; anything longer is refused before it reaches the core.
SCOPE_TEXT_MAX = 64

Scope = Annotated[
    str,
    msgspec.Meta(
        max_length=SCOPE_TEXT_MAX,
        description="`full` (the whole server) or `certificates_only`; another value is 400",
        examples=["full"],
    ),
]


def _moment(value: datetime | None) -> str | None:
    return None if value is None else timestamp(value)


class IssuedTokenOut(msgspec.Struct, kw_only=True):
    """A token just bought, with its secret: the only time the secret is ever shown."""

    id: UUID
    token: Annotated[
        str | None,
        msgspec.Meta(
            description="The secret to send as `X-Access-Token`. Shown in this response only; "
            "also in a replay of the purchase (Idempotency-Key) while its key lives (24 h)"
        ),
    ]
    duration_hours: int
    scope: TokenScope
    cost_znc: Annotated[Money, msgspec.Meta(description="What this token cost")]
    created_at: Timestamp
    activated_at: OptionalTimestamp
    expires_at: OptionalTimestamp
    is_active: bool

    @classmethod
    def of(cls, issued: IssuedToken, now: datetime) -> IssuedTokenOut:
        token = issued.token
        return cls(
            id=token.id,
            token=issued.plaintext,
            duration_hours=token.duration_hours,
            scope=token.scope,
            cost_znc=money(token.price_paid),
            created_at=timestamp(token.created_at),
            activated_at=_moment(token.activated_at),
            expires_at=_moment(token.expires_at),
            is_active=token.is_active_at(now),
        )


class TokenPurchaseIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    duration_hours: Annotated[
        int,
        msgspec.Meta(
            description="One of the durations on sale (by default 1, 12, 24, 168, 720); "
            "another is 400",
            examples=[24],
        ),
    ]
    scope: Scope = TokenScope.FULL.value


class AccessTokenOut(msgspec.Struct, kw_only=True):
    """A token as its owner sees it later: identified by its prefix, never its secret."""

    id: UUID
    token_prefix: Annotated[str, msgspec.Meta(description="The first characters of the secret")]
    duration_hours: int
    scope: TokenScope
    cost_znc: Annotated[
        Money, msgspec.Meta(description="The price paid: a share of the bundle for its tokens")
    ]
    bundle_purchase_id: UUID | None
    created_at: Timestamp
    activated_at: OptionalTimestamp
    expires_at: OptionalTimestamp
    revoked_at: OptionalTimestamp
    is_active: Annotated[bool, msgspec.Meta(description="Usable: ready or active")]
    status: Annotated[
        TokenStatus,
        msgspec.Meta(
            description="`ready` (never used, refundable), `active` (clock running), "
            "`expired` or `revoked`"
        ),
    ]
    time_remaining_seconds: Annotated[
        int,
        msgspec.Meta(
            description="The full duration until first use, then what is left of it; "
            "0 once expired or revoked"
        ),
    ]

    @classmethod
    def of(cls, token: AccessToken, now: datetime) -> AccessTokenOut:
        return cls(
            id=token.id,
            token_prefix=token.token_prefix,
            duration_hours=token.duration_hours,
            scope=token.scope,
            cost_znc=money(token.price_paid),
            bundle_purchase_id=token.bundle_purchase_id,
            created_at=timestamp(token.created_at),
            activated_at=_moment(token.activated_at),
            expires_at=_moment(token.expires_at),
            revoked_at=_moment(token.revoked_at),
            is_active=token.is_active_at(now),
            status=token.status_at(now),
            time_remaining_seconds=token.seconds_left_at(now),
        )


class AccessTokenPage(msgspec.Struct, kw_only=True):
    items: list[AccessTokenOut]
    total: int
    limit: int
    offset: int


class RevokedTokenOut(msgspec.Struct, kw_only=True):
    revoked: bool
    refund_amount: Annotated[Money, msgspec.Meta(description="Exactly what the token cost")]
    new_balance: Money


class TokensController(Controller):
    path = "/tokens"
    tags = ("Tokens",)
    security = BEARER

    @post(
        "/purchase",
        operation_id="purchaseToken",
        summary="Buy an access token",
        description="Debits the token's listed price and returns the token with its secret, "
        "which is shown in this response only (the server keeps a hash). A duration not on "
        "sale or an unknown scope is 400; a balance short of the price is 402 `Insufficient "
        "balance. Required: X ZNC, Available: Y ZNC`, and nothing is charged.\n\n"
        "With an `Idempotency-Key`, a retry within 24 hours returns the first purchase again, "
        "whole, and charges nothing: same status and body, the token's secret included, and "
        f"the header `{REPLAYED_HEADER}: true`. The same key with another body is 409.",
        status_code=201,
        guards=[token_required],
        response_headers=REPLAYED_RESPONSE_HEADERS,
        responses=error_responses(400, 401, 402, 403, 409, 413, 422, 503),
        sync_to_thread=True,
    )
    def purchase(
        self,
        core: CoreDep,
        current_login: CurrentLogin,
        data: JSONBody[TokenPurchaseIn],
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[IssuedTokenOut]:
        order = TokenOrder(
            user_id=current_login.user_id,
            duration_hours=data.duration_hours,
            scope=data.scope,
            idempotency_key=idempotency_key,
            session_version=current_login.session_version,
        )
        with account_checked_by_use_case():
            bought = PurchaseToken(core.uow, core.clock, core.policy, core.replay_secrets)(order)
        issued = IssuedToken(token=bought.token, plaintext=bought.plaintext)
        return Response(
            IssuedTokenOut.of(issued, core.clock.now()),
            status_code=201,
            headers=replay_headers(bought.replayed),
        )

    @get(
        "/my-tokens",
        operation_id="listMyTokens",
        guards=[login_required],
        summary="The caller's tokens, newest first",
        description="Without secrets: `token_prefix` identifies each. `active_only=true` "
        "leaves out revoked and expired tokens.",
        responses=error_responses(401, 403, 422, 503),
        sync_to_thread=True,
    )
    def my_tokens(
        self,
        core: CoreDep,
        current_user: CurrentUser,
        active_only: Annotated[
            bool, QueryParameter(description="Only tokens still usable (ready or active)")
        ] = False,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> AccessTokenPage:
        page = ListTokens(core.uow, core.clock)(
            TokenQuery(user_id=current_user.id, active_only=active_only, limit=limit, offset=offset)
        )
        now = core.clock.now()
        return page_of(AccessTokenPage, page, lambda token: AccessTokenOut.of(token, now))

    @delete(
        "/{token_id:uuid}",
        operation_id="revokeToken",
        guards=[login_required],
        summary="Revoke a never-used token for a refund",
        description="Refunds exactly the price paid (a bundle token: its share of the bundle "
        "price) and revokes the token. A token already used or already revoked is 400; "
        "someone else's or an unknown one is 404.",
        status_code=200,
        responses=error_responses(400, 401, 403, 404, 503),
        sync_to_thread=True,
    )
    def revoke(
        self, core: CoreDep, current_user: CurrentUser, token_id: FromPath[UUID]
    ) -> RevokedTokenOut:
        revoked = RevokeToken(
            core.uow, core.clock, core.policy, core.access_cache, core.settings.proxy.cache_seconds
        )(TokenRevocation(user_id=current_user.id, token_id=token_id))
        return RevokedTokenOut(
            revoked=True,
            refund_amount=money(revoked.refund_amount),
            new_balance=money(revoked.new_balance),
        )
