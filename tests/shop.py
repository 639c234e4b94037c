"""Helpers for the token, bundle and referral tests: accounts, wired use cases, ledger reads."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from zenzefi_core.adapters.cache import InProcessCache
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import LedgerEntry, OutboxEvent, TransactionType, User
from zenzefi_core.domain.bundles import TokenBundle
from zenzefi_core.domain.tokens import AccessToken
from zenzefi_core.policy import ShopPolicy
from zenzefi_core.ports import UnitOfWorkFactory
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.accounts import add_user
from zenzefi_core.services.bundles import (
    CreateBundle,
    DeactivateBundle,
    GetBundle,
    ListBundles,
    PurchaseBundle,
    SeedDefaultBundles,
    UpdateBundle,
)
from zenzefi_core.services.proxy import ProxyAccess, ProxyRequest
from zenzefi_core.services.tokens import ListTokens, PurchaseToken, RevokeToken
from zenzefi_core.services.wallet import post_entry

_HASHER = fast_password_hasher()


def open_account(
    uow_factory: UnitOfWorkFactory,
    clock: FixedClock,
    username: str,
    *,
    balance: Decimal | str = "0.00",
    referrer: User | None = None,
    superuser: bool = False,
) -> User:
    """A committed user, funded by a deposit so that the ledger explains the balance."""
    amount = Decimal(balance)
    with uow_factory() as uow:
        user = add_user(
            uow,
            clock,
            _HASHER,
            email=f"{username}@example.com",
            username=username,
            password="correct horse",
            referred_by_id=None if referrer is None else referrer.id,
            is_superuser=superuser,
        )
        if amount:
            post_entry(
                uow,
                clock,
                user_id=user.id,
                amount=amount,
                transaction_type=TransactionType.DEPOSIT,
                description="Opening deposit",
                reference_type="test",
                reference_id=str(user.id),
            )
        uow.commit()
        stored = uow.users.get(user.id)
    assert stored is not None
    return stored


def deposit(uow_factory: UnitOfWorkFactory, clock: FixedClock, user: User, amount: str) -> None:
    with uow_factory() as uow:
        post_entry(
            uow,
            clock,
            user_id=user.id,
            amount=Decimal(amount),
            transaction_type=TransactionType.DEPOSIT,
            description="Top-up",
            reference_type="test",
            reference_id=amount,
        )
        uow.commit()


def balance_of(uow_factory: UnitOfWorkFactory, user_id: UUID) -> Decimal:
    with uow_factory() as uow:
        user = uow.users.get(user_id)
    assert user is not None
    return user.balance


def ledger_of(
    uow_factory: UnitOfWorkFactory, user_id: UUID, kind: TransactionType | None = None
) -> list[LedgerEntry]:
    """The user's entries, oldest first."""
    with uow_factory() as uow:
        page = uow.ledger.list_for_user(user_id, limit=1000, offset=0, transaction_type=kind)
    return list(reversed(page.items))


def events_of(uow_factory: UnitOfWorkFactory, event_type: str | None = None) -> list[OutboxEvent]:
    with uow_factory() as uow:
        events = uow.outbox.pending(limit=10_000)
    return [e for e in events if event_type is None or e.event_type == event_type]


@dataclass
class Shop:
    """Every use case of the shop, wired to one store, one clock and one policy."""

    uow_factory: UnitOfWorkFactory
    clock: FixedClock
    policy: ShopPolicy

    def __post_init__(self) -> None:
        f, c, p = self.uow_factory, self.clock, self.policy
        self.purchase_token = PurchaseToken(f, c, p)
        self.purchase_bundle = PurchaseBundle(f, c, p)
        self.revoke = RevokeToken(f, c, p)
        self.list_tokens = ListTokens(f, c)
        self.list_bundles = ListBundles(f)
        self.get_bundle = GetBundle(f)
        self.create_bundle = CreateBundle(f, c, p.prices)
        self.update_bundle = UpdateBundle(f, p.prices)
        self.deactivate_bundle = DeactivateBundle(f)
        self.seed = SeedDefaultBundles(f, c, p.prices)
        self.proxy = ProxyAccess(f, c, InProcessCache(), referrals=p.referrals)

    def use(self, token: AccessToken, device_id: str = "desk-0001") -> None:
        """The token's first proxied request: it starts the token's clock, and so pays its
        referral share."""
        self.proxy.authorize(ProxyRequest(token_hash=token.token_hash, device_id=device_id))

    def seeded(self) -> dict[str, TokenBundle]:
        """The default bundles, by name."""
        return {bundle.name: bundle for bundle in self.seed()}
