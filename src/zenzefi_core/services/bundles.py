"""Token bundles: the catalogue, buying one, and the operator's changes to it.

Bundle prices are derived from the price table, the token count and the discount
(`pricing.price_bundle`) whenever a bundle is created or changed; nobody types a price in. A
purchase is one debit and one ledger entry for the whole bundle, and each of its tokens records
its exact share of the price, so refunding one returns that share.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

from zenzefi_core.domain import TransactionType, User
from zenzefi_core.domain.bundles import BundlePurchase, TokenBundle
from zenzefi_core.domain.tokens import BUNDLE_PURCHASE_REFERENCE, TokenScope
from zenzefi_core.errors import BundleNotFound, InvalidInput
from zenzefi_core.ids import new_id
from zenzefi_core.money import format_amount
from zenzefi_core.policy import ShopPolicy
from zenzefi_core.ports import Clock, UnitOfWork, UnitOfWorkFactory
from zenzefi_core.pricing import (
    PriceTable,
    parse_discount,
    parse_scope,
    price_bundle,
    split_price,
)
from zenzefi_core.services.accounts import one_line_text
from zenzefi_core.services.admin import require_superuser
from zenzefi_core.services.events import record_event
from zenzefi_core.services.idempotency import IdempotencyKey, Kept, ReplaySecrets, run_once
from zenzefi_core.services.referrals import hold_referral_bonus
from zenzefi_core.services.tokens import (
    IssuedToken,
    active_user,
    issue_token,
    token_from_json,
    token_to_json,
)
from zenzefi_core.services.wallet import post_entry

T = TypeVar("T")

NAME_MAX = 100
DESCRIPTION_MAX = 500


# --- the catalogue ---------------------------------------------------------------------------


def _visible(uow: UnitOfWork, bundle: TokenBundle | None, actor_id: UUID | None) -> TokenBundle:
    """A bundle on sale, or any bundle for an operator; everything else is "not found"."""
    if bundle is None:
        raise BundleNotFound()
    if bundle.is_active:
        return bundle
    actor = uow.users.get(actor_id) if actor_id is not None else None
    if actor is None or not actor.is_active or not actor.is_superuser:
        raise BundleNotFound()
    return bundle


@dataclass(frozen=True, slots=True)
class BundleQuery:
    #: False lists withdrawn bundles too, which only an operator (`actor_id`) may see.
    active_only: bool = True
    actor_id: UUID | None = None


class ListBundles:
    """The catalogue, cheapest first."""

    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(self, query: BundleQuery) -> list[TokenBundle]:
        with self._uow_factory() as uow:
            if not query.active_only:
                require_superuser(uow.users.get(query.actor_id) if query.actor_id else None)
            return uow.bundles.catalogue(active_only=query.active_only)


@dataclass(frozen=True, slots=True)
class BundleLookup:
    bundle_id: UUID
    #: An operator also sees a withdrawn bundle; anyone else gets "not found" for it.
    actor_id: UUID | None = None


class GetBundle:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(self, lookup: BundleLookup) -> TokenBundle:
        with self._uow_factory() as uow:
            return _visible(uow, uow.bundles.get(lookup.bundle_id), lookup.actor_id)


# --- buying one ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BundleOrder:
    user_id: UUID
    bundle_id: UUID
    #: The client's Idempotency-Key: a repeat returns the first result and charges nothing.
    idempotency_key: str | None = None
    #: The `session_version` of the caller's login token, when the order came through one.
    session_version: int | None = None


@dataclass(frozen=True, slots=True)
class PurchasedBundle:
    purchase: BundlePurchase
    #: In issue order; the first token's price carries the cents the split left over.
    tokens: tuple[IssuedToken, ...]
    new_balance: Decimal
    #: True when this is the stored result of an earlier request with the same key; the tokens'
    #: plaintexts are then the ones kept with the key (None when none were kept).
    replayed: bool = False

    @property
    def cost(self) -> Decimal:
        return self.purchase.total_price


def _purchase_to_json(purchase: BundlePurchase) -> dict[str, Any]:
    return {
        "id": str(purchase.id),
        "user_id": str(purchase.user_id),
        "bundle_id": str(purchase.bundle_id),
        "bundle_name": purchase.bundle_name,
        "token_count": purchase.token_count,
        "duration_hours": purchase.duration_hours,
        "scope": purchase.scope.value,
        "total_price": format_amount(purchase.total_price),
        "created_at": purchase.created_at.isoformat(),
    }


def _purchase_from_json(data: dict[str, Any]) -> BundlePurchase:
    return BundlePurchase(
        id=UUID(data["id"]),
        user_id=UUID(data["user_id"]),
        bundle_id=UUID(data["bundle_id"]),
        bundle_name=data["bundle_name"],
        token_count=int(data["token_count"]),
        duration_hours=int(data["duration_hours"]),
        scope=TokenScope(data["scope"]),
        total_price=Decimal(data["total_price"]),
        created_at=datetime.fromisoformat(data["created_at"]),
    )


def _save_bundle_purchase(result: PurchasedBundle) -> Kept:
    plaintexts = tuple(issued.plaintext for issued in result.tokens)
    return Kept(
        response={
            "purchase": _purchase_to_json(result.purchase),
            "tokens": [token_to_json(issued.token) for issued in result.tokens],
            "new_balance": format_amount(result.new_balance),
        },
        # All of them or none: the secrets are matched to the tokens by position.
        secrets=() if None in plaintexts else tuple(p for p in plaintexts if p is not None),
    )


def _load_bundle_purchase(data: dict[str, Any], secrets: tuple[str, ...] | None) -> PurchasedBundle:
    tokens = [token_from_json(token) for token in data["tokens"]]
    plaintexts: list[str | None] = [None] * len(tokens)
    if secrets is not None and len(secrets) == len(tokens):
        plaintexts = list(secrets)
    return PurchasedBundle(
        purchase=_purchase_from_json(data["purchase"]),
        tokens=tuple(
            IssuedToken(token=token, plaintext=plaintext)
            for token, plaintext in zip(tokens, plaintexts, strict=True)
        ),
        new_balance=Decimal(data["new_balance"]),
        replayed=True,
    )


class PurchaseBundle:
    """Buy a bundle on sale: one debit of its total price, its tokens, the referrer's bonus on
    that total (held as pending shares of the tokens), and a `bundle.purchased` event, in one
    transaction."""

    operation = "bundle.purchase"

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        policy: ShopPolicy,
        vault: ReplaySecrets | None = None,
    ) -> None:
        """`vault` keeps the tokens' secrets, encrypted, with an Idempotency-Key's record, so
        a retry shows them again; without one a replay's plaintexts are None."""
        self._uow_factory = uow_factory
        self._clock = clock
        self._policy = policy
        self._vault = vault

    def __call__(self, order: BundleOrder) -> PurchasedBundle:
        key = IdempotencyKey.for_request(
            order.user_id,
            order.idempotency_key,
            self.operation,
            {"bundle_id": str(order.bundle_id)},
        )

        def buyer(uow: UnitOfWork) -> User:
            return active_user(uow, order.user_id, order.session_version)

        def work(uow: UnitOfWork) -> PurchasedBundle:
            return self._purchase(uow, order.bundle_id, buyer)

        return run_once(
            self._uow_factory,
            self._clock,
            key,
            work,
            save=_save_bundle_purchase,
            load=_load_bundle_purchase,
            authorize=buyer,
            vault=self._vault,
        )

    def _purchase(
        self, uow: UnitOfWork, bundle_id: UUID, account: Callable[[UnitOfWork], User]
    ) -> PurchasedBundle:
        bundle = uow.bundles.get(bundle_id)
        if bundle is None or not bundle.is_active:
            raise BundleNotFound()
        buyer = account(uow)
        now = self._clock.now()
        purchase = BundlePurchase(
            id=new_id(),
            user_id=buyer.id,
            bundle_id=bundle.id,
            bundle_name=bundle.name,
            token_count=bundle.token_count,
            duration_hours=bundle.duration_hours,
            scope=bundle.scope,
            total_price=bundle.total_price,
            created_at=now,
        )
        entry = post_entry(
            uow,
            self._clock,
            user_id=buyer.id,
            amount=-bundle.total_price,
            transaction_type=TransactionType.PURCHASE,
            description=f"Bundle purchase: {bundle.name} ({bundle.token_count} tokens)",
            reference_type=BUNDLE_PURCHASE_REFERENCE,
            reference_id=str(purchase.id),
            low_balance_threshold=self._policy.low_balance_threshold,
        )
        uow.bundles.add_purchase(purchase)
        # Ids increase in issue order, so the first token (the one with the leftover cents)
        # is also the first when its share of the bonus is worked out.
        issued = tuple(
            issue_token(
                user_id=buyer.id,
                duration_hours=bundle.duration_hours,
                scope=bundle.scope,
                price_paid=share,
                created_at=now,
                bundle_purchase_id=purchase.id,
            )
            for share in split_price(bundle.total_price, bundle.token_count)
        )
        uow.tokens.add_all([item.token for item in issued])
        record_event(
            uow,
            self._clock,
            "bundle.purchased",
            {
                "user_id": str(buyer.id),
                "bundle_id": str(bundle.id),
                "bundle_name": bundle.name,
                "bundle_purchase_id": str(purchase.id),
                "tokens_generated": bundle.token_count,
                "token_ids": [str(item.token.id) for item in issued],
                "cost_znc": format_amount(bundle.total_price),
                "new_balance": format_amount(entry.balance_after),
            },
            user_id=buyer.id,
        )
        hold_referral_bonus(
            uow,
            self._clock,
            self._policy.referrals,
            buyer=buyer,
            purchase_type=BUNDLE_PURCHASE_REFERENCE,
            purchase_id=purchase.id,
            amount=bundle.total_price,
            tokens=[item.token for item in issued],
        )
        return PurchasedBundle(purchase=purchase, tokens=issued, new_balance=entry.balance_after)


# --- the operator's changes ------------------------------------------------------------------


def _name(value: str) -> str:
    name = one_line_text(value, "name", NAME_MAX)
    if name is None:
        raise InvalidInput("name must not be empty")
    return name


def _description(value: str | None) -> str | None:
    return None if value is None else one_line_text(value, "description", DESCRIPTION_MAX)


@dataclass(frozen=True, slots=True)
class BundleDraft:
    actor_id: UUID
    name: str
    token_count: int
    duration_hours: int
    #: Percent off the base price: 0 or more, below 100, at most two decimals.
    discount_percent: Decimal
    scope: str = TokenScope.FULL.value
    description: str | None = None
    is_active: bool = True


def _priced(
    prices: PriceTable,
    *,
    token_count: int,
    duration_hours: int,
    discount_percent: Decimal,
) -> dict[str, Any]:
    discount = parse_discount(discount_percent)
    price = price_bundle(token_count, prices.price_for(duration_hours), discount)
    return {
        "token_count": token_count,
        "duration_hours": duration_hours,
        "discount_percent": discount,
        "base_price": price.base_price,
        "total_price": price.total_price,
    }


class CreateBundle:
    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock, prices: PriceTable) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._prices = prices

    def __call__(self, draft: BundleDraft) -> TokenBundle:
        bundle = TokenBundle(
            id=new_id(),
            name=_name(draft.name),
            description=_description(draft.description),
            scope=parse_scope(draft.scope),
            is_active=draft.is_active,
            created_at=self._clock.now(),
            **_priced(
                self._prices,
                token_count=draft.token_count,
                duration_hours=draft.duration_hours,
                discount_percent=draft.discount_percent,
            ),
        )
        with self._uow_factory() as uow:
            require_superuser(uow.users.get(draft.actor_id))
            uow.bundles.add(bundle)
            uow.commit()
        return bundle


@dataclass(frozen=True, slots=True)
class BundleChange:
    """Fields to change; None leaves a field as it is (a blank description removes it)."""

    actor_id: UUID
    bundle_id: UUID
    name: str | None = None
    description: str | None = None
    token_count: int | None = None
    duration_hours: int | None = None
    scope: str | None = None
    discount_percent: Decimal | None = None
    is_active: bool | None = None


class UpdateBundle:
    """Change a bundle. Its prices are derived again from the current price table, so what a
    bundle costs always follows from its size, duration and discount. The row is read locked:
    two operators changing one bundle at once (one its discount, the other its size, or
    withdrawing it) take turns, and neither undoes the other."""

    def __init__(self, uow_factory: UnitOfWorkFactory, prices: PriceTable) -> None:
        self._uow_factory = uow_factory
        self._prices = prices

    def __call__(self, change: BundleChange) -> TokenBundle:
        with self._uow_factory() as uow:
            require_superuser(uow.users.get(change.actor_id))
            current = uow.bundles.get_for_update(change.bundle_id)
            if current is None:
                raise BundleNotFound()
            updated = dataclasses.replace(
                current,
                name=current.name if change.name is None else _name(change.name),
                description=current.description
                if change.description is None
                else _description(change.description),
                scope=current.scope if change.scope is None else parse_scope(change.scope),
                is_active=current.is_active if change.is_active is None else change.is_active,
                **_priced(
                    self._prices,
                    token_count=_pick(change.token_count, current.token_count),
                    duration_hours=_pick(change.duration_hours, current.duration_hours),
                    discount_percent=_pick(change.discount_percent, current.discount_percent),
                ),
            )
            uow.bundles.update(updated)
            uow.commit()
        return updated


def _pick(new: T | None, current: T) -> T:
    return current if new is None else new


@dataclass(frozen=True, slots=True)
class BundleRef:
    actor_id: UUID
    bundle_id: UUID


class DeactivateBundle:
    """Withdraw a bundle from sale. It stays in the database: purchases and tokens name it."""

    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(self, ref: BundleRef) -> TokenBundle:
        with self._uow_factory() as uow:
            require_superuser(uow.users.get(ref.actor_id))
            current = uow.bundles.get_for_update(ref.bundle_id)
            if current is None:
                raise BundleNotFound()
            updated = dataclasses.replace(current, is_active=False)
            uow.bundles.update(updated)
            uow.commit()
        return updated


# --- the defaults of a new database ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BundleSpec:
    name: str
    description: str
    token_count: int
    duration_hours: int
    discount_percent: Decimal


#: The product documents' bundles: 81.00, 153.00 and 1600.00 ZNC at the default prices.
DEFAULT_BUNDLES: tuple[BundleSpec, ...] = (
    BundleSpec("Starter Pack", "5 tokens of 24 hours, 10 % off", 5, 24, Decimal("10.00")),
    BundleSpec("Pro Bundle", "10 tokens of 24 hours, 15 % off", 10, 24, Decimal("15.00")),
    BundleSpec("Ultimate Package", "20 tokens of 7 days, 20 % off", 20, 168, Decimal("20.00")),
)


class SeedDefaultBundles:
    """Put the default bundles in an empty catalogue; a catalogue with any bundle in it, even a
    withdrawn one, is left alone, so running this again (every start) changes nothing.

    A default whose duration the configured price table does not sell is skipped.
    """

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        prices: PriceTable,
        defaults: tuple[BundleSpec, ...] = DEFAULT_BUNDLES,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._prices = prices
        self._defaults = defaults

    def __call__(self) -> list[TokenBundle]:
        now = self._clock.now()
        bundles = [
            TokenBundle(
                id=new_id(),
                name=spec.name,
                description=spec.description,
                scope=TokenScope.FULL,
                is_active=True,
                created_at=now,
                **_priced(
                    self._prices,
                    token_count=spec.token_count,
                    duration_hours=spec.duration_hours,
                    discount_percent=spec.discount_percent,
                ),
            )
            for spec in self._defaults
            if spec.duration_hours in self._prices.durations
        ]
        with self._uow_factory() as uow:
            uow.bundles.lock_catalogue()
            if uow.bundles.count() > 0:
                return []
            for bundle in bundles:
                uow.bundles.add(bundle)
            uow.commit()
        return bundles
