"""Access tokens: buying one, listing them, and revoking an unused one for a refund.

A purchase is one transaction: the debit (a `purchase` entry naming the token), the token, the
referrer's pending bonus share and the events. A refund is one too: the revocation, a `refund`
of exactly the price paid, and the cancellation of the token's pending bonus share (or, for a
bonus credited at purchase before shares existed, its clawback).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from zenzefi_core.domain import TransactionType, User
from zenzefi_core.domain.tokens import TOKEN_REFERENCE, AccessToken, TokenScope
from zenzefi_core.errors import AccountDisabled, TokenAlreadyRevoked, TokenNotFound, UserNotFound
from zenzefi_core.ids import new_id
from zenzefi_core.money import ZERO, format_amount
from zenzefi_core.paging import DEFAULT_LIMIT, check_page
from zenzefi_core.policy import ShopPolicy
from zenzefi_core.ports import AccessCache, Clock, Page, UnitOfWork, UnitOfWorkFactory
from zenzefi_core.pricing import parse_scope, refund_for
from zenzefi_core.referrals import Clawback
from zenzefi_core.security import new_access_token
from zenzefi_core.services.events import record_event
from zenzefi_core.services.idempotency import IdempotencyKey, Kept, ReplaySecrets, run_once
from zenzefi_core.services.proxy import DEFAULT_CACHE_SECONDS, forget_token
from zenzefi_core.services.referrals import (
    cancel_referral_bonus,
    claw_back_referral_bonus,
    hold_referral_bonus,
)
from zenzefi_core.services.users import LoginSession, session_user
from zenzefi_core.services.wallet import post_entry


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: AccessToken
    #: The secret itself, in the purchase's result, and in an Idempotency-Key replay of it
    #: while the key lives. None in a replay that has no secrets kept (see `run_once`).
    plaintext: str | None


def active_user(uow: UnitOfWork, user_id: UUID, session_version: int | None = None) -> User:
    """The account acting, read in the caller's transaction. With `session_version` (the
    caller came through a login token) the login must also still be valid (`session_user`)."""
    user = uow.users.get(user_id)
    if user is None:
        raise UserNotFound(user_id)
    if session_version is not None:
        return session_user(user, LoginSession(user_id, session_version))
    if not user.is_active:
        raise AccountDisabled()
    return user


def issue_token(
    *,
    user_id: UUID,
    duration_hours: int,
    scope: TokenScope,
    price_paid: Decimal,
    created_at: datetime,
    bundle_purchase_id: UUID | None = None,
) -> IssuedToken:
    """A new token with a fresh secret, not yet stored."""
    secret = new_access_token()
    token = AccessToken(
        id=new_id(),
        user_id=user_id,
        token_hash=secret.hash,
        token_prefix=secret.prefix,
        duration_hours=duration_hours,
        scope=scope,
        price_paid=price_paid,
        created_at=created_at,
        bundle_purchase_id=bundle_purchase_id,
    )
    return IssuedToken(token=token, plaintext=secret.plaintext)


def _moment(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_moment(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def token_to_json(token: AccessToken) -> dict[str, Any]:
    """A token as JSON, for an Idempotency-Key's stored result (never with the secret)."""
    return {
        "id": str(token.id),
        "user_id": str(token.user_id),
        "token_hash": token.token_hash,
        "token_prefix": token.token_prefix,
        "duration_hours": token.duration_hours,
        "scope": token.scope.value,
        "price_paid": format_amount(token.price_paid),
        "created_at": token.created_at.isoformat(),
        "bundle_purchase_id": None
        if token.bundle_purchase_id is None
        else str(token.bundle_purchase_id),
        "activated_at": _moment(token.activated_at),
        "expires_at": _moment(token.expires_at),
        "revoked_at": _moment(token.revoked_at),
    }


def token_from_json(data: dict[str, Any]) -> AccessToken:
    bundle_purchase_id = data["bundle_purchase_id"]
    return AccessToken(
        id=UUID(data["id"]),
        user_id=UUID(data["user_id"]),
        token_hash=data["token_hash"],
        token_prefix=data["token_prefix"],
        duration_hours=int(data["duration_hours"]),
        scope=TokenScope(data["scope"]),
        price_paid=Decimal(data["price_paid"]),
        created_at=datetime.fromisoformat(data["created_at"]),
        bundle_purchase_id=None if bundle_purchase_id is None else UUID(bundle_purchase_id),
        activated_at=_parse_moment(data["activated_at"]),
        expires_at=_parse_moment(data["expires_at"]),
        revoked_at=_parse_moment(data["revoked_at"]),
    )


@dataclass(frozen=True, slots=True)
class TokenOrder:
    user_id: UUID
    duration_hours: int
    scope: str = TokenScope.FULL.value
    #: The client's Idempotency-Key: a repeat returns the first result and charges nothing.
    idempotency_key: str | None = None
    #: The `session_version` of the caller's login token, when the order came through one.
    session_version: int | None = None


@dataclass(frozen=True, slots=True)
class PurchasedToken:
    token: AccessToken
    #: Shown in the purchase's result and its Idempotency-Key replays (see `IssuedToken`).
    plaintext: str | None
    new_balance: Decimal
    #: True when this is the stored result of an earlier request with the same key.
    replayed: bool = False

    @property
    def cost(self) -> Decimal:
        return self.token.price_paid


def _save_token_purchase(result: PurchasedToken) -> Kept:
    return Kept(
        response={
            "token": token_to_json(result.token),
            "new_balance": format_amount(result.new_balance),
        },
        secrets=() if result.plaintext is None else (result.plaintext,),
    )


def _load_token_purchase(data: dict[str, Any], secrets: tuple[str, ...] | None) -> PurchasedToken:
    return PurchasedToken(
        token=token_from_json(data["token"]),
        plaintext=secrets[0] if secrets else None,
        new_balance=Decimal(data["new_balance"]),
        replayed=True,
    )


class PurchaseToken:
    """Buy one token of a duration the price table sells, paying its listed price."""

    operation = "token.purchase"

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        policy: ShopPolicy,
        vault: ReplaySecrets | None = None,
    ) -> None:
        """`vault` keeps the token's secret, encrypted, with an Idempotency-Key's record, so
        a retry shows it again; without one a replay's `plaintext` is None."""
        self._uow_factory = uow_factory
        self._clock = clock
        self._policy = policy
        self._vault = vault

    def __call__(self, order: TokenOrder) -> PurchasedToken:
        scope = parse_scope(order.scope)
        price = self._policy.prices.price_for(order.duration_hours)
        key = IdempotencyKey.for_request(
            order.user_id,
            order.idempotency_key,
            self.operation,
            {"duration_hours": order.duration_hours, "scope": scope.value},
        )

        def buyer(uow: UnitOfWork) -> User:
            return active_user(uow, order.user_id, order.session_version)

        def work(uow: UnitOfWork) -> PurchasedToken:
            return self._purchase(uow, buyer(uow), order.duration_hours, scope, price)

        return run_once(
            self._uow_factory,
            self._clock,
            key,
            work,
            save=_save_token_purchase,
            load=_load_token_purchase,
            authorize=buyer,
            vault=self._vault,
        )

    def _purchase(
        self, uow: UnitOfWork, buyer: User, duration_hours: int, scope: TokenScope, price: Decimal
    ) -> PurchasedToken:
        issued = issue_token(
            user_id=buyer.id,
            duration_hours=duration_hours,
            scope=scope,
            price_paid=price,
            created_at=self._clock.now(),
        )
        token = issued.token
        entry = post_entry(
            uow,
            self._clock,
            user_id=buyer.id,
            amount=-price,
            transaction_type=TransactionType.PURCHASE,
            description=f"Access token: {duration_hours} h, {scope.value}",
            reference_type=TOKEN_REFERENCE,
            reference_id=str(token.id),
            low_balance_threshold=self._policy.low_balance_threshold,
        )
        uow.tokens.add_all([token])
        record_event(
            uow,
            self._clock,
            "token.purchased",
            {
                "user_id": str(buyer.id),
                "token_id": str(token.id),
                "token_prefix": token.token_prefix,
                "duration_hours": duration_hours,
                "scope": scope.value,
                "cost_znc": format_amount(price),
                "new_balance": format_amount(entry.balance_after),
            },
            user_id=buyer.id,
        )
        hold_referral_bonus(
            uow,
            self._clock,
            self._policy.referrals,
            buyer=buyer,
            purchase_type=TOKEN_REFERENCE,
            purchase_id=token.id,
            amount=price,
            tokens=[token],
        )
        return PurchasedToken(
            token=token, plaintext=issued.plaintext, new_balance=entry.balance_after
        )


@dataclass(frozen=True, slots=True)
class TokenRevocation:
    user_id: UUID
    token_id: UUID


@dataclass(frozen=True, slots=True)
class RevokedToken:
    token: AccessToken
    refund_amount: Decimal
    new_balance: Decimal
    #: What the refund took back from the buyer's referrer of a bonus credited at purchase
    #: (before shares); None when there was none. For the operator and tests, like
    #: `bonus_cancelled`: the buyer must not be shown the referrer's affairs.
    clawback: Clawback | None
    #: The token's pending referral share that the refund cancelled; ZERO when it had none.
    bonus_cancelled: Decimal = ZERO


class RevokeToken:
    """Revoke a token never used, refunding exactly what it cost and cancelling its share of
    the referral bonus its purchase holds. Someone else's token is "not found", an activated one
    is refused. With the proxy's `access_cache`, the token's status entry is tombstoned once the
    revocation has committed, so `/proxy/status` says 401 at once."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        policy: ShopPolicy,
        access_cache: AccessCache | None = None,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._policy = policy
        self._access_cache = access_cache
        self._cache_seconds = cache_seconds

    def __call__(self, request: TokenRevocation) -> RevokedToken:
        with self._uow_factory() as uow:
            token = uow.tokens.get(request.token_id)
            if token is None or token.user_id != request.user_id:
                raise TokenNotFound()
            owner = active_user(uow, token.user_id)
            refund = refund_for(token)
            now = self._clock.now()
            if not uow.tokens.revoke(token.id, now):
                # Activated or revoked since it was read: say which.
                current = uow.tokens.get(token.id) or token
                refund_for(current)
                raise TokenAlreadyRevoked()
            entry = post_entry(
                uow,
                self._clock,
                user_id=owner.id,
                amount=refund,
                transaction_type=TransactionType.REFUND,
                description=f"Refund of unused access token {token.token_prefix}…",
                reference_type=TOKEN_REFERENCE,
                reference_id=str(token.id),
            )
            cancelled = cancel_referral_bonus(uow, self._clock, token)
            clawback = claw_back_referral_bonus(
                uow,
                self._clock,
                token,
                low_balance_threshold=self._policy.low_balance_threshold,
            )
            record_event(
                uow,
                self._clock,
                "token.revoked",
                {
                    "user_id": str(owner.id),
                    "token_id": str(token.id),
                    "refund_amount": format_amount(refund),
                    "new_balance": format_amount(entry.balance_after),
                },
                user_id=owner.id,
            )
            uow.commit()
        if self._access_cache is not None:
            forget_token(self._access_cache, token.token_hash, self._cache_seconds)
        return RevokedToken(
            token=dataclasses.replace(token, revoked_at=now),
            refund_amount=refund,
            new_balance=entry.balance_after,
            clawback=clawback,
            bonus_cancelled=cancelled,
        )


@dataclass(frozen=True, slots=True)
class TokenQuery:
    user_id: UUID
    #: Only tokens neither revoked nor expired.
    active_only: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0


class ListTokens:
    """The user's tokens, newest first, without their secrets (the prefix identifies each)."""

    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow_factory = uow_factory
        self._clock = clock

    def __call__(self, query: TokenQuery) -> Page[AccessToken]:
        check_page(query.limit, query.offset)
        with self._uow_factory() as uow:
            return uow.tokens.list_for_user(
                query.user_id,
                now=self._clock.now(),
                active_only=query.active_only,
                limit=query.limit,
                offset=query.offset,
            )
