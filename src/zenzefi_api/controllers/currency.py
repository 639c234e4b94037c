"""The caller's ZNC wallet: balance and ledger."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, get
from litestar.params import QueryParameter

from zenzefi_api.auth import BEARER, login_required
from zenzefi_api.context import CoreDep, CurrentUser
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
from zenzefi_core.domain import LedgerEntry, TransactionType
from zenzefi_core.money import CURRENCY
from zenzefi_core.paging import DEFAULT_LIMIT
from zenzefi_core.services.balance import ListTransactions, TransactionQuery


class BalanceOut(msgspec.Struct, kw_only=True):
    balance: Money
    currency: str


class TransactionOut(msgspec.Struct, kw_only=True):
    id: UUID
    amount: Annotated[Money, msgspec.Meta(description="Signed: credits positive, debits negative")]
    transaction_type: TransactionType
    description: str
    created_at: Timestamp

    @classmethod
    def of(cls, entry: LedgerEntry) -> TransactionOut:
        return cls(
            id=entry.id,
            amount=money(entry.amount),
            transaction_type=entry.transaction_type,
            description=entry.description,
            created_at=timestamp(entry.created_at),
        )


class TransactionPage(msgspec.Struct, kw_only=True):
    items: list[TransactionOut]
    total: int
    limit: int
    offset: int


class CurrencyController(Controller):
    path = "/currency"
    tags = ("Currency",)
    guards = (login_required,)
    security = BEARER

    @get(
        "/balance",
        operation_id="getBalance",
        summary="The caller's balance",
        responses=error_responses(401, 403, 503),
        sync_to_thread=False,
    )
    def balance(self, current_user: CurrentUser) -> BalanceOut:
        """The balance on the account row the login check has just read: one database round
        trip for the whole request, and no thread hop for the handler, which blocks on nothing.
        """
        return BalanceOut(balance=money(current_user.balance), currency=CURRENCY)

    @get(
        "/transactions",
        operation_id="listTransactions",
        summary="The caller's ledger, newest first",
        responses=error_responses(401, 403, 422, 503),
        sync_to_thread=True,
    )
    def transactions(
        self,
        core: CoreDep,
        current_user: CurrentUser,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
        transaction_type: Annotated[
            TransactionType | None, QueryParameter(description="Only entries of this type")
        ] = None,
    ) -> TransactionPage:
        page = ListTransactions(core.uow)(
            TransactionQuery(
                user_id=current_user.id,
                limit=limit,
                offset=offset,
                transaction_type=transaction_type,
            )
        )
        return page_of(TransactionPage, page, TransactionOut.of)
