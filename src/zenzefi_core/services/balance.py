"""Reading a wallet: its balance and its ledger, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from zenzefi_core.domain import LedgerEntry, TransactionType
from zenzefi_core.errors import UserNotFound
from zenzefi_core.paging import DEFAULT_LIMIT, check_page
from zenzefi_core.ports import Page, UnitOfWorkFactory


class GetBalance:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(self, user_id: UUID) -> Decimal:
        with self._uow_factory() as uow:
            user = uow.users.get(user_id)
        if user is None:
            raise UserNotFound(user_id)
        return user.balance


@dataclass(frozen=True, slots=True)
class TransactionQuery:
    user_id: UUID
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    transaction_type: TransactionType | None = None


class ListTransactions:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(self, query: TransactionQuery) -> Page[LedgerEntry]:
        check_page(query.limit, query.offset)
        with self._uow_factory() as uow:
            return uow.ledger.list_for_user(
                query.user_id,
                limit=query.limit,
                offset=query.offset,
                transaction_type=query.transaction_type,
            )
