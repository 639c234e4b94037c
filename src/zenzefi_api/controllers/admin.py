"""Operator routes: users (search, inspect, credit, activate, promote) and the audit log.

Every route needs an active superuser (guard, 403 otherwise); the core checks it again inside
each use case's transaction and writes the audit entry there.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from zenzefi_api.auth import BEARER, superuser_required
from zenzefi_api.context import ClientAddress, CoreDep, CurrentUser
from zenzefi_api.controllers.currency import TransactionOut
from zenzefi_api.errors import amount_field
from zenzefi_api.schemas import (
    Limit,
    Money,
    Offset,
    Timestamp,
    error_responses,
    money,
    page_of,
    timestamp,
)
from zenzefi_core.bootstrap import Core
from zenzefi_core.domain import AuditAction, AuditEntry, User
from zenzefi_core.money import Sign
from zenzefi_core.paging import DEFAULT_LIMIT
from zenzefi_core.services.admin import (
    REASON_MAX,
    SEARCH_MAX,
    TARGET_ID_MAX,
    AccountChange,
    AdjustBalance,
    AuditQuery,
    BalanceAdjustment,
    ListAuditLog,
    ListUsers,
    SetSuperuser,
    SetUserActive,
    ShowUser,
    UserLookup,
    UserQuery,
)

#: Room for a sign, digits and two decimals; anything longer is not an amount.
AMOUNT_TEXT_MAX = 32


class AdminUserOut(msgspec.Struct, kw_only=True):
    id: UUID
    email: str
    username: str
    full_name: str | None
    referral_code: str
    referred_by_id: UUID | None
    is_active: bool
    is_superuser: bool
    balance: Money
    created_at: Timestamp

    @classmethod
    def of(cls, user: User) -> AdminUserOut:
        return cls(
            id=user.id,
            email=user.email,
            username=user.username,
            full_name=user.full_name,
            referral_code=user.referral_code,
            referred_by_id=user.referred_by_id,
            is_active=user.is_active,
            is_superuser=user.is_superuser,
            balance=money(user.balance),
            created_at=timestamp(user.created_at),
        )


class AdminUserPage(msgspec.Struct, kw_only=True):
    items: list[AdminUserOut]
    total: int
    limit: int
    offset: int


class CreditIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    amount: Annotated[
        str,
        msgspec.Meta(
            max_length=AMOUNT_TEXT_MAX,
            description="Signed ZNC amount with at most two decimals: positive credits, "
            "negative debits (never below zero)",
            examples=["50.00", "-12.50"],
        ),
    ]
    reason: Annotated[str, msgspec.Meta(max_length=REASON_MAX, examples=["Goodwill credit"])]


class CreditOut(msgspec.Struct, kw_only=True):
    transaction: TransactionOut
    new_balance: Money
    audit_entry_id: UUID


class AuditEntryOut(msgspec.Struct, kw_only=True):
    id: UUID
    actor_id: UUID | None
    action: AuditAction
    target_type: str
    target_id: str
    details: dict[str, Any]
    client_address: ClientAddress
    created_at: Timestamp

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        return cls(
            id=entry.id,
            actor_id=entry.actor_id,
            action=entry.action,
            target_type=entry.target_type,
            target_id=entry.target_id,
            details=entry.details,
            client_address=entry.client_address,
            created_at=timestamp(entry.created_at),
        )


class AuditPage(msgspec.Struct, kw_only=True):
    items: list[AuditEntryOut]
    total: int
    limit: int
    offset: int


_ACCOUNT_ERRORS = error_responses(400, 401, 403, 404, 503)


class AdminUsersController(Controller):
    path = "/admin/users"
    tags = ("Admin",)
    guards = (superuser_required,)
    security = BEARER

    @get(
        operation_id="adminListUsers",
        summary="Search users",
        description="`q` matches part of an email or username, regardless of case. Newest first.",
        responses=error_responses(401, 403, 422, 503),
        sync_to_thread=True,
    )
    def list_users(
        self,
        core: CoreDep,
        current_user: CurrentUser,
        q: Annotated[str | None, QueryParameter(max_length=SEARCH_MAX)] = None,
        is_active: FromQuery[bool | None] = None,
        is_superuser: FromQuery[bool | None] = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> AdminUserPage:
        page = ListUsers(core.uow)(
            UserQuery(
                actor_id=current_user.id,
                search=q,
                is_active=is_active,
                is_superuser=is_superuser,
                limit=limit,
                offset=offset,
            )
        )
        return page_of(AdminUserPage, page, AdminUserOut.of)

    @get(
        "/{user_id:uuid}",
        operation_id="adminGetUser",
        summary="One user, with balance",
        responses=error_responses(401, 403, 404, 503),
        sync_to_thread=True,
    )
    def get_user(
        self, core: CoreDep, current_user: CurrentUser, user_id: FromPath[UUID]
    ) -> AdminUserOut:
        return AdminUserOut.of(ShowUser(core.uow)(UserLookup(current_user.id, user_id)))

    @post(
        "/{user_id:uuid}/credit",
        operation_id="adminCreditUser",
        summary="Credit or debit a wallet (audited)",
        description="Writes an `adjustment` ledger entry and its audit entry in one "
        "transaction. A debit larger than the balance is 402 and changes nothing; an amount "
        "of zero, with more than two decimals or above the maximum is 422.",
        responses=error_responses(401, 402, 403, 404, 413, 422, 503),
        sync_to_thread=True,
    )
    def credit(
        self,
        core: CoreDep,
        current_user: CurrentUser,
        client_address: ClientAddress,
        user_id: FromPath[UUID],
        data: JSONBody[CreditIn],
    ) -> CreditOut:
        amount = amount_field(
            data.amount, "amount", sign=Sign.ANY, maximum=core.settings.max_amount
        )
        adjusted = AdjustBalance(core.uow, core.clock, core.settings.max_amount)(
            BalanceAdjustment(
                actor_id=current_user.id,
                user_id=user_id,
                amount=amount,
                reason=data.reason,
                client_address=client_address,
            )
        )
        return CreditOut(
            transaction=TransactionOut.of(adjusted.entry),
            new_balance=money(adjusted.entry.balance_after),
            audit_entry_id=adjusted.audit.id,
        )

    def _set_active(
        self, core: Core, actor: User, user_id: UUID, address: str | None, enable: bool
    ) -> AdminUserOut:
        change = AccountChange(actor.id, user_id, enable, address)
        use_case = SetUserActive(
            core.uow, core.clock, core.access_cache, core.settings.proxy.cache_seconds
        )
        return AdminUserOut.of(use_case(change))

    def _set_superuser(
        self, core: Core, actor: User, user_id: UUID, address: str | None, enable: bool
    ) -> AdminUserOut:
        change = AccountChange(actor.id, user_id, enable, address)
        return AdminUserOut.of(SetSuperuser(core.uow, core.clock)(change))

    @post(
        "/{user_id:uuid}/activate",
        operation_id="adminActivateUser",
        summary="Reactivate an account (audited)",
        status_code=200,
        responses=_ACCOUNT_ERRORS,
        sync_to_thread=True,
    )
    def activate(
        self,
        core: CoreDep,
        current_user: CurrentUser,
        client_address: ClientAddress,
        user_id: FromPath[UUID],
    ) -> AdminUserOut:
        return self._set_active(core, current_user, user_id, client_address, True)

    @post(
        "/{user_id:uuid}/deactivate",
        operation_id="adminDeactivateUser",
        summary="Deactivate an account (audited)",
        description="Takes effect at once: the user's login tokens stop working. Operators "
        "cannot deactivate themselves (400).",
        status_code=200,
        responses=_ACCOUNT_ERRORS,
        sync_to_thread=True,
    )
    def deactivate(
        self,
        core: CoreDep,
        current_user: CurrentUser,
        client_address: ClientAddress,
        user_id: FromPath[UUID],
    ) -> AdminUserOut:
        return self._set_active(core, current_user, user_id, client_address, False)

    @post(
        "/{user_id:uuid}/grant-superuser",
        operation_id="adminGrantSuperuser",
        summary="Make a user an operator (audited)",
        status_code=200,
        responses=_ACCOUNT_ERRORS,
        sync_to_thread=True,
    )
    def grant_superuser(
        self,
        core: CoreDep,
        current_user: CurrentUser,
        client_address: ClientAddress,
        user_id: FromPath[UUID],
    ) -> AdminUserOut:
        return self._set_superuser(core, current_user, user_id, client_address, True)

    @post(
        "/{user_id:uuid}/revoke-superuser",
        operation_id="adminRevokeSuperuser",
        summary="Take the operator role away (audited)",
        description="Operators cannot revoke their own role (400).",
        status_code=200,
        responses=_ACCOUNT_ERRORS,
        sync_to_thread=True,
    )
    def revoke_superuser(
        self,
        core: CoreDep,
        current_user: CurrentUser,
        client_address: ClientAddress,
        user_id: FromPath[UUID],
    ) -> AdminUserOut:
        return self._set_superuser(core, current_user, user_id, client_address, False)


class AuditLogController(Controller):
    path = "/admin/audit-log"
    tags = ("Admin",)
    guards = (superuser_required,)
    security = BEARER

    @get(
        operation_id="adminListAuditLog",
        summary="Operator actions, newest first",
        responses=error_responses(401, 403, 422, 503),
        sync_to_thread=True,
    )
    def list_entries(
        self,
        core: CoreDep,
        current_user: CurrentUser,
        action: FromQuery[AuditAction | None] = None,
        target_id: Annotated[
            str | None,
            QueryParameter(max_length=TARGET_ID_MAX, description="e.g. a user id"),
        ] = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> AuditPage:
        page = ListAuditLog(core.uow)(
            AuditQuery(
                actor_id=current_user.id,
                action=action,
                target_id=target_id,
                limit=limit,
                offset=offset,
            )
        )
        return page_of(AuditPage, page, AuditEntryOut.of)
