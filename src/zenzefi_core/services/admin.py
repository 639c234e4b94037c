"""Operator actions: adjusting balances, managing accounts and roles, reading the audit log.

Every use case here re-reads the acting operator inside its own transaction and checks
`require_superuser`, so a role revoked a moment ago cannot be used; every change writes an audit
entry in that same transaction, so no operator action happens without its record.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from zenzefi_core.domain import AuditAction, AuditEntry, LedgerEntry, TransactionType, User
from zenzefi_core.errors import (
    AccountDisabled,
    ActionRefused,
    InvalidInput,
    PermissionDenied,
    UserNotFound,
)
from zenzefi_core.ids import new_id
from zenzefi_core.money import DEFAULT_MAXIMUM, Sign, format_amount, parse_amount
from zenzefi_core.money_audit import AUDIT_REFERENCE
from zenzefi_core.paging import DEFAULT_LIMIT, check_page
from zenzefi_core.ports import AccessCache, Clock, Page, UnitOfWork, UnitOfWorkFactory
from zenzefi_core.services.accounts import one_line_text
from zenzefi_core.services.proxy import DEFAULT_CACHE_SECONDS, forget_user_tokens
from zenzefi_core.services.wallet import post_entry

REASON_MAX = 500
SEARCH_MAX = 254
TARGET_ID_MAX = 64
CLIENT_ADDRESS_MAX = 64


def require_superuser(user: User | None) -> User:
    """The rule for every operator action: an active account with the superuser role."""
    if user is None:
        raise PermissionDenied("Superuser privileges required")
    if not user.is_active:
        raise AccountDisabled()
    if not user.is_superuser:
        raise PermissionDenied("Superuser privileges required")
    return user


def _operator(uow: UnitOfWork, actor_id: UUID) -> User:
    return require_superuser(uow.users.get(actor_id))


def _target(uow: UnitOfWork, user_id: UUID) -> User:
    user = uow.users.get(user_id)
    if user is None:
        raise UserNotFound(user_id)
    return user


def record_audit(
    uow: UnitOfWork,
    clock: Clock,
    *,
    actor: User,
    action: AuditAction,
    target_type: str,
    target_id: str,
    details: dict[str, Any],
    client_address: str | None,
    entry_id: UUID | None = None,
) -> AuditEntry:
    """Write the audit entry of an operator action inside the action's own unit of work."""
    entry = AuditEntry(
        id=entry_id or new_id(),
        actor_id=actor.id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        details=details,
        client_address=client_address[:CLIENT_ADDRESS_MAX] if client_address else None,
        created_at=clock.now(),
    )
    uow.audit.add(entry)
    return entry


@dataclass(frozen=True, slots=True)
class BalanceAdjustment:
    actor_id: UUID
    user_id: UUID
    #: Signed: positive credits, negative debits; never takes the balance below zero.
    amount: Decimal
    reason: str
    client_address: str | None = None


@dataclass(frozen=True, slots=True)
class Adjusted:
    entry: LedgerEntry
    audit: AuditEntry


class AdjustBalance:
    """An operator credits or debits a wallet with an `adjustment` entry, giving a reason."""

    def __init__(
        self, uow_factory: UnitOfWorkFactory, clock: Clock, maximum: Decimal = DEFAULT_MAXIMUM
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._maximum = maximum

    def __call__(self, request: BalanceAdjustment) -> Adjusted:
        amount = parse_amount(request.amount, sign=Sign.ANY, maximum=self._maximum)
        reason = one_line_text(request.reason, "reason", REASON_MAX)
        if reason is None:
            raise InvalidInput("reason must not be empty")
        with self._uow_factory() as uow:
            actor = _operator(uow, request.actor_id)
            target = _target(uow, request.user_id)
            audit_id = new_id()
            entry = post_entry(
                uow,
                self._clock,
                user_id=target.id,
                amount=amount,
                transaction_type=TransactionType.ADJUSTMENT,
                description=reason,
                reference_type=AUDIT_REFERENCE,
                reference_id=str(audit_id),
            )
            audit = record_audit(
                uow,
                self._clock,
                actor=actor,
                action=AuditAction.BALANCE_ADJUSTED,
                target_type="user",
                target_id=str(target.id),
                details={
                    "amount": format_amount(amount),
                    "reason": reason,
                    "transaction_id": str(entry.id),
                    "balance_after": format_amount(entry.balance_after),
                },
                client_address=request.client_address,
                entry_id=audit_id,
            )
            uow.commit()
        return Adjusted(entry=entry, audit=audit)


@dataclass(frozen=True, slots=True)
class UserQuery:
    actor_id: UUID
    #: Part of an email or username, case-insensitive; blank lists everyone.
    search: str | None = None
    is_active: bool | None = None
    is_superuser: bool | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0


class ListUsers:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(self, query: UserQuery) -> Page[User]:
        check_page(query.limit, query.offset)
        search = None
        if query.search is not None:
            search = one_line_text(query.search, "search", SEARCH_MAX)
        with self._uow_factory() as uow:
            _operator(uow, query.actor_id)
            return uow.users.search(
                limit=query.limit,
                offset=query.offset,
                query=search,
                is_active=query.is_active,
                is_superuser=query.is_superuser,
            )


@dataclass(frozen=True, slots=True)
class UserLookup:
    actor_id: UUID
    user_id: UUID


class ShowUser:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(self, lookup: UserLookup) -> User:
        with self._uow_factory() as uow:
            _operator(uow, lookup.actor_id)
            return _target(uow, lookup.user_id)


@dataclass(frozen=True, slots=True)
class AccountChange:
    """Set one flag of an account: `active` for activation, `superuser` for the role."""

    actor_id: UUID
    user_id: UUID
    enable: bool
    client_address: str | None = None


class _ChangeAccountFlag:
    field: str
    granted: AuditAction
    revoked: AuditAction
    #: Why an operator may not remove this flag from themselves.
    refusal: str

    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow_factory = uow_factory
        self._clock = clock

    def _flag(self, user: User) -> bool:
        raise NotImplementedError

    def _write(self, uow: UnitOfWork, user_id: UUID, value: bool) -> User | None:
        """Store the flag: its own column only, so a concurrent change to anything else of
        the account (a profile change, the other flag) is kept."""
        raise NotImplementedError

    def __call__(self, change: AccountChange) -> User:
        with self._uow_factory() as uow:
            actor = _operator(uow, change.actor_id)
            if change.user_id == actor.id and not change.enable:
                raise ActionRefused(self.refusal)
            target = _target(uow, change.user_id)
            before = self._flag(target)
            updated = target
            if before != change.enable:
                updated = self._write(uow, target.id, change.enable) or target
            record_audit(
                uow,
                self._clock,
                actor=actor,
                action=self.granted if change.enable else self.revoked,
                target_type="user",
                target_id=str(target.id),
                details={"field": self.field, "before": before, "after": change.enable},
                client_address=change.client_address,
            )
            uow.commit()
        return updated


class SetUserActive(_ChangeAccountFlag):
    """Activate or deactivate an account; a deactivated one can neither log in nor use a
    session it already has, nor any of its access tokens: with `access_cache` given, the proxy's
    cache entries of the user's tokens are tombstoned once the change has committed (see
    `services.proxy` for why that order is safe)."""

    field = "is_active"
    granted = AuditAction.USER_ACTIVATED
    revoked = AuditAction.USER_DEACTIVATED
    refusal = "You cannot deactivate your own account"

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        access_cache: AccessCache | None = None,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
    ) -> None:
        super().__init__(uow_factory, clock)
        self._access_cache = access_cache
        self._cache_seconds = cache_seconds

    def __call__(self, change: AccountChange) -> User:
        user = super().__call__(change)
        if not change.enable and self._access_cache is not None:
            forget_user_tokens(
                self._uow_factory, self._clock, self._access_cache, user.id, self._cache_seconds
            )
        return user

    def _flag(self, user: User) -> bool:
        return user.is_active

    def _write(self, uow: UnitOfWork, user_id: UUID, value: bool) -> User | None:
        uow.users.set_active(user_id, value)
        # Deactivating ends every login at once; reactivating ends none that could still be
        # running, but raising the version then too means a session from before a
        # deactivation can never come back, however the account was switched off.
        return uow.users.end_sessions(user_id)


class SetSuperuser(_ChangeAccountFlag):
    """Grant or revoke the superuser role. Nobody can demote themselves, so the last operator
    cannot lock everyone out by accident."""

    field = "is_superuser"
    granted = AuditAction.SUPERUSER_GRANTED
    revoked = AuditAction.SUPERUSER_REVOKED
    refusal = "You cannot revoke your own superuser role"

    def _flag(self, user: User) -> bool:
        return user.is_superuser

    def _write(self, uow: UnitOfWork, user_id: UUID, value: bool) -> User | None:
        return uow.users.set_superuser(user_id, value)


@dataclass(frozen=True, slots=True)
class AuditQuery:
    actor_id: UUID
    action: AuditAction | None = None
    target_id: str | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0


class ListAuditLog:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(self, query: AuditQuery) -> Page[AuditEntry]:
        check_page(query.limit, query.offset)
        target_id = None
        if query.target_id is not None:
            target_id = one_line_text(query.target_id, "target_id", TARGET_ID_MAX)
        with self._uow_factory() as uow:
            _operator(uow, query.actor_id)
            return uow.audit.list_entries(
                limit=query.limit, offset=query.offset, action=query.action, target_id=target_id
            )
