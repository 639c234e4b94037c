"""The bundle catalogue and bundle purchases in SQL."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Row, func, insert, select, text, update

from zenzefi_core.adapters.sqlalchemy.engine import take_write_lock
from zenzefi_core.adapters.sqlalchemy.tables import bundle_purchases, token_bundles
from zenzefi_core.domain.bundles import BundlePurchase, TokenBundle
from zenzefi_core.domain.tokens import TokenScope


def _bundle(row: Row[Any]) -> TokenBundle:
    return TokenBundle(
        id=row.id,
        name=row.name,
        description=row.description,
        token_count=row.token_count,
        duration_hours=row.duration_hours,
        scope=TokenScope(row.scope),
        discount_percent=row.discount_percent,
        base_price=row.base_price,
        total_price=row.total_price,
        is_active=row.is_active,
        created_at=row.created_at,
    )


def _purchase(row: Row[Any]) -> BundlePurchase:
    return BundlePurchase(
        id=row.id,
        user_id=row.user_id,
        bundle_id=row.bundle_id,
        bundle_name=row.bundle_name,
        token_count=row.token_count,
        duration_hours=row.duration_hours,
        scope=TokenScope(row.scope),
        total_price=row.total_price,
        created_at=row.created_at,
    )


class SqlBundleRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def _values(self, bundle: TokenBundle) -> dict[str, Any]:
        return {
            "name": bundle.name,
            "description": bundle.description,
            "token_count": bundle.token_count,
            "duration_hours": bundle.duration_hours,
            "scope": bundle.scope.value,
            "discount_percent": bundle.discount_percent,
            "base_price": bundle.base_price,
            "total_price": bundle.total_price,
            "is_active": bundle.is_active,
        }

    def add(self, bundle: TokenBundle) -> None:
        self._c.execute(
            insert(token_bundles).values(
                id=bundle.id, created_at=bundle.created_at, **self._values(bundle)
            )
        )

    def get(self, bundle_id: UUID) -> TokenBundle | None:
        row = self._c.execute(select(token_bundles).where(token_bundles.c.id == bundle_id)).first()
        return None if row is None else _bundle(row)

    def get_for_update(self, bundle_id: UUID) -> TokenBundle | None:
        row = self._c.execute(
            select(token_bundles).where(token_bundles.c.id == bundle_id).with_for_update()
        ).first()
        return None if row is None else _bundle(row)

    def update(self, bundle: TokenBundle) -> None:
        self._c.execute(
            update(token_bundles)
            .where(token_bundles.c.id == bundle.id)
            .values(**self._values(bundle))
        )

    def catalogue(self, *, active_only: bool) -> list[TokenBundle]:
        query = select(token_bundles).order_by(
            token_bundles.c.total_price, token_bundles.c.name, token_bundles.c.id
        )
        if active_only:
            query = query.where(token_bundles.c.is_active.is_(True))
        return [_bundle(row) for row in self._c.execute(query)]

    def count(self) -> int:
        return self._c.execute(select(func.count()).select_from(token_bundles)).scalar_one()

    def lock_catalogue(self) -> None:
        # SQLite takes the database's write lock. On PostgreSQL this mode conflicts with itself
        # and with writers, but not with readers of the catalogue.
        take_write_lock(self._c)
        if self._c.dialect.name == "postgresql":
            self._c.execute(text("LOCK TABLE token_bundles IN SHARE ROW EXCLUSIVE MODE"))

    def add_purchase(self, purchase: BundlePurchase) -> None:
        self._c.execute(
            insert(bundle_purchases).values(
                id=purchase.id,
                user_id=purchase.user_id,
                bundle_id=purchase.bundle_id,
                bundle_name=purchase.bundle_name,
                token_count=purchase.token_count,
                duration_hours=purchase.duration_hours,
                scope=purchase.scope.value,
                total_price=purchase.total_price,
                created_at=purchase.created_at,
            )
        )

    def get_purchase(self, purchase_id: UUID) -> BundlePurchase | None:
        row = self._c.execute(
            select(bundle_purchases).where(bundle_purchases.c.id == purchase_id)
        ).first()
        return None if row is None else _purchase(row)
