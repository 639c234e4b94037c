"""Random sequences of what users and an operator do to the referral economy, against a model,
on memory, SQLite and PostgreSQL.

Users register with or without a referrer, top up through a payment, get operator adjustments,
buy tokens and bundles, use tokens (the proxy's first request), refund unused ones, and are
deactivated and reactivated. After every step each wallet holds what the model says; together
they hold exactly deposits + adjustments - the price of what was bought and not refunded + the
bonuses paid on tokens that were used; each referrer's earned and pending bonuses are the
model's; and `CheckLedger` (with its money-supply audit) finds nothing wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.conftest import StoreMaker
from tests.shop import Shop, open_account
from zenzefi_core.adapters.cache import InProcessCache
from zenzefi_core.adapters.payments import HmacPaymentProvider
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import PaymentStatus
from zenzefi_core.domain.tokens import AccessToken
from zenzefi_core.errors import (
    AccountDisabled,
    InsufficientBalance,
    InvalidInput,
    InvalidReferralCode,
    TokenAlreadyActivated,
    TokenAlreadyRevoked,
    TokenNotFound,
)
from zenzefi_core.money import ZERO, quantize
from zenzefi_core.policy import ShopPolicy
from zenzefi_core.pricing import split_price
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.admin import (
    AccountChange,
    AdjustBalance,
    BalanceAdjustment,
    SetUserActive,
)
from zenzefi_core.services.bundles import BundleDraft, BundleOrder
from zenzefi_core.services.ledger_check import CheckLedger
from zenzefi_core.services.payments import (
    ConfirmPaymentManually,
    CreatePaymentIntent,
    ManualSettlement,
)
from zenzefi_core.services.proxy import InvalidAccessToken
from zenzefi_core.services.tokens import TokenOrder, TokenRevocation
from zenzefi_core.services.users import (
    GetReferralSummary,
    ReferralQuery,
    RegisterUser,
    Registration,
)

NAMES = ("ann", "ben", "cat", "dan", "eve")
HOURS = st.sampled_from([1, 12, 24, 168])
AMOUNTS = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("400.00"), places=2)
TEN = Decimal("10")

SETTINGS = settings(
    max_examples=6,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass
class Token:
    """The model of one token: its price, its owner, and the share its first use pays."""

    token: AccessToken
    owner: str
    #: (referrer, amount) held at purchase, None when the purchase earned nothing.
    share: tuple[str, Decimal] | None
    used: bool = False
    refunded: bool = False


@dataclass
class Model:
    balances: dict[str, Decimal] = field(default_factory=dict)
    active: dict[str, bool] = field(default_factory=dict)
    referrer: dict[str, str | None] = field(default_factory=dict)
    tokens: list[Token] = field(default_factory=list)
    deposits: Decimal = ZERO
    adjustments: Decimal = ZERO
    paid: dict[str, Decimal] = field(default_factory=dict)

    def kept_spend(self) -> Decimal:
        return sum((t.token.price_paid for t in self.tokens if not t.refunded), ZERO)

    def pending(self, name: str) -> Decimal:
        return sum(
            (
                t.share[1]
                for t in self.tokens
                if t.share and t.share[0] == name and not t.used and not t.refunded
            ),
            ZERO,
        )

    def unused(self) -> list[Token]:
        return [t for t in self.tokens if not t.used and not t.refunded]


def test_the_referral_economy_creates_no_money(store_maker: StoreMaker) -> None:
    class Economy(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.uow = store_maker()
            self.clock = FixedClock(datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
            self.shop = Shop(self.uow, self.clock, ShopPolicy())
            self.hasher = fast_password_hasher()
            self.operator = open_account(self.uow, self.clock, "operator", superuser=True)
            self.cache = InProcessCache()
            self.set_active = SetUserActive(self.uow, self.clock, self.cache)
            self.adjust = AdjustBalance(self.uow, self.clock)
            provider = HmacPaymentProvider(
                secret="state-machine", checkout_url="https://pay.example", clock=self.clock
            )
            self.create_payment = CreatePaymentIntent(self.uow, self.clock, provider)
            self.confirm_payment = ConfirmPaymentManually(self.uow, self.clock)
            starter = self.shop.seeded()["Starter Pack"]
            odd = self.shop.create_bundle(
                BundleDraft(
                    actor_id=self.operator.id,
                    name="Odd",
                    token_count=3,
                    duration_hours=12,
                    discount_percent=Decimal("66.6"),
                )
            )
            self.offers = [starter, odd]
            self.ids: dict[str, UUID] = {}
            self.codes: dict[str, str] = {}
            self.model = Model()

        # --- helpers -------------------------------------------------------------------------

        def tick(self) -> None:
            self.clock.advance(timedelta(seconds=7))

        def hold(self, buyer: str, tokens: list[AccessToken], total: Decimal) -> list[Token]:
            """The model's shares: 10 % of the purchase, split like its price, held when the
            buyer's referrer is active at purchase."""
            referrer = self.model.referrer[buyer]
            if referrer is None or not self.model.active[referrer]:
                return [Token(t, buyer, None) for t in tokens]
            ordered = sorted(tokens, key=lambda t: t.id)
            shares = split_price(quantize(total / TEN), len(ordered))
            return [
                Token(t, buyer, (referrer, share) if share > ZERO else None)
                for t, share in zip(ordered, shares, strict=True)
            ]

        def spend(self, buyer: str, price: Decimal) -> bool:
            """Whether the purchase must succeed; checks the refusals it must meet otherwise."""
            return self.model.active[buyer] and self.model.balances[buyer] >= price

        # --- rules ---------------------------------------------------------------------------

        @precondition(lambda self: len(self.ids) < len(NAMES))
        @rule(data=st.data(), referred=st.booleans())
        def register(self, data: st.DataObject, referred: bool) -> None:
            self.tick()
            name = NAMES[len(self.ids)]
            referrer = None
            if referred and self.ids:
                referrer = data.draw(st.sampled_from(sorted(self.ids)))
            request = Registration(
                f"{name}@example.com",
                name,
                "correct horse",
                referral_code=self.codes[referrer] if referrer else None,
            )
            register = RegisterUser(self.uow, self.clock, self.hasher)
            if referrer is not None and not self.model.active[referrer]:
                with pytest.raises(InvalidReferralCode):
                    register(request)
                referrer = None
                request = Registration(f"{name}@example.com", name, "correct horse")
            user = register(request)
            assert user.referred_by_id == (self.ids[referrer] if referrer else None)
            self.ids[name] = user.id
            self.codes[name] = user.referral_code
            self.model.balances[name] = ZERO
            self.model.active[name] = True
            self.model.referrer[name] = referrer
            self.model.paid[name] = ZERO

        @precondition(lambda self: self.ids)
        @rule(data=st.data(), amount=AMOUNTS)
        def deposit(self, data: st.DataObject, amount: Decimal) -> None:
            self.tick()
            name = data.draw(st.sampled_from(sorted(self.ids)))
            if not self.model.active[name]:
                with pytest.raises(InvalidInput):
                    self.create_payment(user_id=self.ids[name], amount_znc=amount)
                return
            intent = self.create_payment(user_id=self.ids[name], amount_znc=amount)
            settled = self.confirm_payment(
                ManualSettlement(self.operator.id, intent.id, PaymentStatus.SUCCEEDED)
            )
            assert settled.credited
            self.model.balances[name] += amount
            self.model.deposits += amount

        @precondition(lambda self: self.ids)
        @rule(data=st.data(), amount=AMOUNTS, credit=st.booleans())
        def operator_adjusts(self, data: st.DataObject, amount: Decimal, credit: bool) -> None:
            self.tick()
            name = data.draw(st.sampled_from(sorted(self.ids)))
            signed = amount if credit else -amount
            request = BalanceAdjustment(self.operator.id, self.ids[name], signed, "test")
            if self.model.balances[name] + signed < ZERO:
                with pytest.raises(InsufficientBalance):
                    self.adjust(request)
                return
            self.adjust(request)
            self.model.balances[name] += signed
            self.model.adjustments += signed

        @precondition(lambda self: self.ids)
        @rule(data=st.data(), hours=HOURS)
        def buy_token(self, data: st.DataObject, hours: int) -> None:
            self.tick()
            name = data.draw(st.sampled_from(sorted(self.ids)))
            price = self.shop.policy.prices.price_for(hours)
            order = TokenOrder(user_id=self.ids[name], duration_hours=hours)
            if not self.model.active[name]:
                with pytest.raises(AccountDisabled):
                    self.shop.purchase_token(order)
                return
            if not self.spend(name, price):
                with pytest.raises(InsufficientBalance):
                    self.shop.purchase_token(order)
                return
            token = self.shop.purchase_token(order).token
            self.model.balances[name] -= price
            self.model.tokens += self.hold(name, [token], price)

        @precondition(lambda self: self.ids)
        @rule(data=st.data(), which=st.integers(min_value=0, max_value=1))
        def buy_bundle(self, data: st.DataObject, which: int) -> None:
            self.tick()
            name = data.draw(st.sampled_from(sorted(self.ids)))
            bundle = self.offers[which]
            order = BundleOrder(user_id=self.ids[name], bundle_id=bundle.id)
            if not self.model.active[name]:
                with pytest.raises(AccountDisabled):
                    self.shop.purchase_bundle(order)
                return
            if not self.spend(name, bundle.total_price):
                with pytest.raises(InsufficientBalance):
                    self.shop.purchase_bundle(order)
                return
            bought = self.shop.purchase_bundle(order)
            self.model.balances[name] -= bundle.total_price
            tokens = [issued.token for issued in bought.tokens]
            self.model.tokens += self.hold(name, tokens, bundle.total_price)

        @precondition(lambda self: self.model.unused())
        @rule(data=st.data())
        def use_token(self, data: st.DataObject) -> None:
            self.tick()
            token = data.draw(st.sampled_from(self.model.unused()))
            if not self.model.active[token.owner]:
                with pytest.raises(InvalidAccessToken):
                    self.shop.use(token.token)
                return
            self.shop.use(token.token, f"device-{token.token.id.hex[-8:]}")
            token.used = True
            if token.share is not None:
                referrer, amount = token.share
                if self.model.active[referrer]:
                    self.model.balances[referrer] += amount
                    self.model.paid[referrer] += amount

        @precondition(lambda self: self.model.tokens)
        @rule(data=st.data(), by_someone_else=st.booleans())
        def refund(self, data: st.DataObject, by_someone_else: bool) -> None:
            self.tick()
            token = data.draw(st.sampled_from(self.model.tokens))
            caller = token.owner
            if by_someone_else:
                caller = data.draw(st.sampled_from(sorted(self.ids)))
            request = TokenRevocation(user_id=self.ids[caller], token_id=token.token.id)
            if caller != token.owner:
                with pytest.raises(TokenNotFound):
                    self.shop.revoke(request)
                return
            if not self.model.active[caller]:
                with pytest.raises(AccountDisabled):
                    self.shop.revoke(request)
                return
            if token.used or token.refunded:
                refusal = TokenAlreadyActivated if token.used else TokenAlreadyRevoked
                with pytest.raises(refusal):
                    self.shop.revoke(request)
                return
            revoked = self.shop.revoke(request)
            assert revoked.refund_amount == token.token.price_paid
            assert revoked.bonus_cancelled == (token.share[1] if token.share else ZERO)
            token.refunded = True
            self.model.balances[caller] += token.token.price_paid

        @precondition(lambda self: self.ids)
        @rule(data=st.data())
        def operator_toggles_an_account(self, data: st.DataObject) -> None:
            self.tick()
            name = data.draw(st.sampled_from(sorted(self.ids)))
            enable = not self.model.active[name]
            self.set_active(AccountChange(self.operator.id, self.ids[name], enable=enable))
            self.model.active[name] = enable

        # --- invariants ----------------------------------------------------------------------

        @invariant()
        def every_wallet_holds_what_the_model_says(self) -> None:
            with self.uow() as uow:
                for name, user_id in self.ids.items():
                    user = uow.users.get(user_id)
                    assert user is not None
                    assert user.balance == self.model.balances[name], name
                operator = uow.users.get(self.operator.id)
                assert operator is not None
                assert operator.balance == ZERO
            for name, user_id in self.ids.items():
                summary = GetReferralSummary(self.uow)(ReferralQuery(user_id=user_id))
                assert summary.bonus_earned == self.model.paid[name], name
                assert summary.bonus_pending == self.model.pending(name), name

        @invariant()
        def the_money_supply_adds_up(self) -> None:
            held = sum(self.model.balances.values(), ZERO)
            supply = (
                self.model.deposits
                + self.model.adjustments
                - self.model.kept_spend()
                + sum(self.model.paid.values(), ZERO)
            )
            assert held == supply
            # Bonuses are paid only on tokens that were used, at most 10 % of their price
            # (a bundle's first token may carry its split's leftover cent).
            used = sum((t.token.price_paid for t in self.model.tokens if t.used), ZERO)
            assert sum(self.model.paid.values(), ZERO) <= quantize(used / TEN) + Decimal(
                "0.01"
            ) * len(self.model.tokens)

        @invariant()
        def the_ledger_check_passes(self) -> None:
            report = CheckLedger(self.uow)()
            assert report.ok, report.render()
            assert report.untraced_entries == 0

    run_state_machine_as_test(Economy, settings=SETTINGS)
