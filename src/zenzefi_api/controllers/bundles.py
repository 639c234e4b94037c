"""Token bundles: the public catalogue, buying one, and the operators' changes to it.

Prices are never accepted from a client: the core derives them from the token count, the
duration's unit price and the discount, so a body carrying a price field is refused (422).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, TypeVar
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.exceptions import ValidationException
from litestar.params import FromPath, JSONBody, QueryParameter

from zenzefi_api.auth import (
    BEARER,
    account_checked_by_use_case,
    authenticated_user,
    superuser_required,
    token_required,
)
from zenzefi_api.context import CoreDep, CurrentLogin, CurrentUser
from zenzefi_api.controllers.tokens import IssuedTokenOut, Scope
from zenzefi_api.schemas import (
    REPLAYED_HEADER,
    REPLAYED_RESPONSE_HEADERS,
    IdempotencyKeyHeader,
    Money,
    Timestamp,
    error_responses,
    money,
    replay_headers,
    timestamp,
)
from zenzefi_core.domain.bundles import TokenBundle
from zenzefi_core.domain.tokens import TokenScope
from zenzefi_core.errors import InvalidInput
from zenzefi_core.pricing import MAX_BUNDLE_TOKENS, parse_discount
from zenzefi_core.services.bundles import (
    DESCRIPTION_MAX,
    NAME_MAX,
    BundleChange,
    BundleDraft,
    BundleLookup,
    BundleOrder,
    BundleQuery,
    BundleRef,
    CreateBundle,
    DeactivateBundle,
    GetBundle,
    ListBundles,
    PurchaseBundle,
    UpdateBundle,
)

T = TypeVar("T")

#: Room for any percentage with two decimals; anything longer is not one.
DISCOUNT_TEXT_MAX = 32

Name = Annotated[str, msgspec.Meta(max_length=NAME_MAX, examples=["Starter Pack"])]
Description = Annotated[str, msgspec.Meta(max_length=DESCRIPTION_MAX)]
TokenCount = Annotated[
    int, msgspec.Meta(description=f"1 to {MAX_BUNDLE_TOKENS} tokens", examples=[5])
]
Duration = Annotated[
    int,
    msgspec.Meta(description="Hours per token: a duration on sale (another is 400)", examples=[24]),
]
Discount = (
    Annotated[
        str,
        msgspec.Meta(
            max_length=DISCOUNT_TEXT_MAX,
            description="Percent off the base price, 0 or more and below 100, at most two "
            'decimals: a string such as "10.00", or a whole number',
            examples=["10.00"],
        ),
    ]
    | int
)


class BundleOut(msgspec.Struct, kw_only=True):
    id: UUID
    name: str
    description: str | None
    token_count: int
    duration_hours: int
    scope: TokenScope
    discount_percent: Annotated[str, msgspec.Meta(description="Percent, two decimals")]
    base_price: Annotated[Money, msgspec.Meta(description="token_count x unit price")]
    total_price: Annotated[Money, msgspec.Meta(description="base_price less the discount")]
    savings: Annotated[Money, msgspec.Meta(description="base_price - total_price")]
    price_per_token: Annotated[Money, msgspec.Meta(description="total_price / token_count")]
    is_active: bool
    created_at: Timestamp

    @classmethod
    def of(cls, bundle: TokenBundle) -> BundleOut:
        return cls(
            id=bundle.id,
            name=bundle.name,
            description=bundle.description,
            token_count=bundle.token_count,
            duration_hours=bundle.duration_hours,
            scope=bundle.scope,
            discount_percent=money(bundle.discount_percent),
            base_price=money(bundle.base_price),
            total_price=money(bundle.total_price),
            savings=money(bundle.savings),
            price_per_token=money(bundle.price_per_token),
            is_active=bundle.is_active,
            created_at=timestamp(bundle.created_at),
        )


class BundleList(msgspec.Struct, kw_only=True):
    items: list[BundleOut]


class BundlePurchaseOut(msgspec.Struct, kw_only=True):
    bundle_name: str
    tokens_generated: int
    cost_znc: Money
    new_balance: Money
    tokens: list[IssuedTokenOut]


class BundleIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A new bundle. No price fields: the prices follow from count, duration and discount."""

    name: Name
    description: Description | None = None
    token_count: TokenCount
    duration_hours: Duration
    discount_percent: Discount = 0
    scope: Scope = TokenScope.FULL.value
    is_active: bool = True


class BundleChangeIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Only the fields sent change; `description: null` removes it. The prices are derived
    again from the result."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType | None = msgspec.UNSET
    token_count: TokenCount | msgspec.UnsetType = msgspec.UNSET
    duration_hours: Duration | msgspec.UnsetType = msgspec.UNSET
    discount_percent: Discount | msgspec.UnsetType = msgspec.UNSET
    scope: Scope | msgspec.UnsetType = msgspec.UNSET
    is_active: bool | msgspec.UnsetType = msgspec.UNSET


def _discount(value: str | int) -> Decimal:
    """Parse the discount at the edge, like an amount: a bad one is a 422 naming the field."""
    try:
        return parse_discount(value)
    except InvalidInput as error:
        raise ValidationException(
            detail="Validation failed",
            extra=[{"key": "discount_percent", "message": str(error), "source": "body"}],
        ) from None


def _given(value: T | msgspec.UnsetType) -> T | None:
    return None if isinstance(value, msgspec.UnsetType) else value


class BundlesController(Controller):
    path = "/bundles"
    tags = ("Bundles",)

    @get(
        operation_id="listBundles",
        summary="The bundle catalogue, cheapest first",
        description="Public. `active_only=false` also lists withdrawn bundles, for operators "
        "only: it needs a superuser's bearer token (401 without one, 403 for anyone else).",
        security=[{}, *BEARER],
        responses=error_responses(401, 403, 422, 503),
    )
    async def list_bundles(
        self,
        request: Request[Any, Any, Any],
        core: CoreDep,
        active_only: Annotated[
            bool, QueryParameter(description="false: withdrawn bundles too (operators only)")
        ] = True,
    ) -> BundleList:
        actor_id = None
        if not active_only:
            actor_id = (await authenticated_user(request)).id
        query = BundleQuery(active_only=active_only, actor_id=actor_id)
        bundles = await anyio.to_thread.run_sync(ListBundles(core.uow), query)
        return BundleList(items=[BundleOut.of(bundle) for bundle in bundles])

    @get(
        "/{bundle_id:uuid}",
        operation_id="getBundle",
        summary="One bundle on sale",
        description="Public. A withdrawn or unknown bundle is 404.",
        responses=error_responses(404, 503),
        sync_to_thread=True,
    )
    def get_bundle(self, core: CoreDep, bundle_id: FromPath[UUID]) -> BundleOut:
        return BundleOut.of(GetBundle(core.uow)(BundleLookup(bundle_id=bundle_id)))

    @post(
        "/{bundle_id:uuid}/purchase",
        operation_id="purchaseBundle",
        summary="Buy a bundle",
        description="One debit of the bundle's total price; each token costs its share of it "
        "(the first carries any leftover cents), which is what revoking it refunds. The "
        "tokens' secrets are shown in this response only. 402 when the balance is short "
        "(nothing is charged), 404 for a withdrawn or unknown bundle.\n\n"
        "With an `Idempotency-Key`, a retry within 24 hours returns the first purchase again, "
        "whole, and charges nothing: same status and body, every token's secret included, and "
        f"the header `{REPLAYED_HEADER}: true`. The same key for another bundle is 409.",
        guards=[token_required],
        security=BEARER,
        status_code=200,
        response_headers=REPLAYED_RESPONSE_HEADERS,
        responses=error_responses(400, 401, 402, 403, 404, 409, 422, 503),
        sync_to_thread=True,
    )
    def purchase(
        self,
        core: CoreDep,
        current_login: CurrentLogin,
        bundle_id: FromPath[UUID],
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[BundlePurchaseOut]:
        order = BundleOrder(
            user_id=current_login.user_id,
            bundle_id=bundle_id,
            idempotency_key=idempotency_key,
            session_version=current_login.session_version,
        )
        with account_checked_by_use_case():
            bought = PurchaseBundle(core.uow, core.clock, core.policy, core.replay_secrets)(order)
        now = core.clock.now()
        body = BundlePurchaseOut(
            bundle_name=bought.purchase.bundle_name,
            tokens_generated=len(bought.tokens),
            cost_znc=money(bought.cost),
            new_balance=money(bought.new_balance),
            tokens=[IssuedTokenOut.of(issued, now) for issued in bought.tokens],
        )
        return Response(body, status_code=200, headers=replay_headers(bought.replayed))

    @post(
        operation_id="createBundle",
        summary="Add a bundle to the catalogue (operators)",
        description="`base_price`, `total_price`, `savings` and `price_per_token` are derived "
        "from `token_count`, the unit price of `duration_hours` and `discount_percent`; a body "
        "that carries them is 422.",
        guards=[superuser_required],
        security=BEARER,
        status_code=201,
        responses=error_responses(400, 401, 403, 413, 422, 503),
        sync_to_thread=True,
    )
    def create(
        self, core: CoreDep, current_user: CurrentUser, data: JSONBody[BundleIn]
    ) -> BundleOut:
        bundle = CreateBundle(core.uow, core.clock, core.policy.prices)(
            BundleDraft(
                actor_id=current_user.id,
                name=data.name,
                description=data.description,
                token_count=data.token_count,
                duration_hours=data.duration_hours,
                discount_percent=_discount(data.discount_percent),
                scope=data.scope,
                is_active=data.is_active,
            )
        )
        return BundleOut.of(bundle)

    @patch(
        "/{bundle_id:uuid}",
        operation_id="updateBundle",
        summary="Change a bundle (operators)",
        description="Only the fields sent change. The prices are derived again from the "
        "result and the current price table; a body that carries them is 422. Withdrawn "
        "bundles can be changed too (and put back on sale with `is_active: true`).",
        guards=[superuser_required],
        security=BEARER,
        responses=error_responses(400, 401, 403, 404, 413, 422, 503),
        sync_to_thread=True,
    )
    def update(
        self,
        core: CoreDep,
        current_user: CurrentUser,
        bundle_id: FromPath[UUID],
        data: JSONBody[BundleChangeIn],
    ) -> BundleOut:
        discount = data.discount_percent
        bundle = UpdateBundle(core.uow, core.policy.prices)(
            BundleChange(
                actor_id=current_user.id,
                bundle_id=bundle_id,
                name=_given(data.name),
                # Blank removes the description in the core; null says the same on the wire.
                description="" if data.description is None else _given(data.description),
                token_count=_given(data.token_count),
                duration_hours=_given(data.duration_hours),
                scope=_given(data.scope),
                discount_percent=None
                if isinstance(discount, msgspec.UnsetType)
                else _discount(discount),
                is_active=_given(data.is_active),
            )
        )
        return BundleOut.of(bundle)

    @delete(
        "/{bundle_id:uuid}",
        operation_id="deactivateBundle",
        summary="Withdraw a bundle from sale (operators)",
        description="A soft delete: the bundle stays, because purchases and tokens name it, "
        "but it leaves the public catalogue and can no longer be bought. Answers the bundle.",
        guards=[superuser_required],
        security=BEARER,
        status_code=200,
        responses=error_responses(401, 403, 404, 503),
        sync_to_thread=True,
    )
    def deactivate(
        self, core: CoreDep, current_user: CurrentUser, bundle_id: FromPath[UUID]
    ) -> BundleOut:
        bundle = DeactivateBundle(core.uow)(
            BundleRef(actor_id=current_user.id, bundle_id=bundle_id)
        )
        return BundleOut.of(bundle)
