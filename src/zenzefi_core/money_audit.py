"""The money-supply audit behind `zenzefi check-ledger`: pure rules over facts read from a store.

Balance = Σ entries proves every entry was booked; it cannot tell whether an entry should exist.
This audit traces each entry to the record that caused it and each referral bonus to a purchase
that stayed paid:

- An entry that names one of the product's own records (a token, a bundle purchase, a payment,
  an operator's adjustment) must find it, belonging to the right wallet and for the right
  amount: a purchase debits its buyer by the price, a refund credits a revoked token's buyer by
  what it cost, a deposit credits a succeeded payment's owner by its amount, an adjustment names
  the operator action that made it for this wallet, a referral entry names a purchase by one of
  the wallet's referees. A purchase, refund, deposit or adjustment is booked at most once.
- Per referral link, the bonuses paid minus what refunds took back never exceed the policy's
  percentage of what the referee bought and did not refund, split over each purchase's tokens as
  the shop splits it. Paying less is allowed (a minimum purchase, first purchase only, the
  monthly cap, shares still pending); paying more is money nobody paid for.

Entries that name causes outside the product (a library user's own `reference_type`) cannot be
traced here; they are counted, not judged.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from zenzefi_core.domain.ledger import TransactionType
from zenzefi_core.domain.tokens import BUNDLE_PURCHASE_REFERENCE, TOKEN_REFERENCE
from zenzefi_core.money import CENT, ZERO, quantize
from zenzefi_core.referrals import bonus_shares

#: Ledger `reference_type` of a top-up, naming its payment intent.
PAYMENT_REFERENCE = "payment"
#: Ledger `reference_type` of an operator's adjustment, naming its audit entry.
AUDIT_REFERENCE = "audit_log"
#: The causes this audit can trace; entries naming anything else are only counted.
KNOWN_REFERENCES = frozenset(
    {TOKEN_REFERENCE, BUNDLE_PURCHASE_REFERENCE, PAYMENT_REFERENCE, AUDIT_REFERENCE}
)
_HUNDRED = Decimal("100")
_T = TransactionType
#: Which causes each entry type may name.
_ALLOWED = {
    _T.PURCHASE: {TOKEN_REFERENCE, BUNDLE_PURCHASE_REFERENCE},
    _T.REFUND: {TOKEN_REFERENCE},
    _T.REFERRAL_BONUS: {TOKEN_REFERENCE, BUNDLE_PURCHASE_REFERENCE},
    _T.REFERRAL_CLAWBACK: {TOKEN_REFERENCE, BUNDLE_PURCHASE_REFERENCE},
    _T.DEPOSIT: {PAYMENT_REFERENCE},
    _T.ADJUSTMENT: {AUDIT_REFERENCE},
}
#: Entry types that one cause may produce only once.
_ONCE = frozenset({_T.PURCHASE, _T.REFUND, _T.DEPOSIT, _T.ADJUSTMENT})


@dataclass(frozen=True, slots=True)
class UserFact:
    id: UUID
    username: str
    referred_by_id: UUID | None


@dataclass(frozen=True, slots=True)
class EntryFact:
    id: UUID
    user_id: UUID
    transaction_type: TransactionType
    amount: Decimal
    reference_type: str
    reference_id: str


@dataclass(frozen=True, slots=True)
class TokenFact:
    id: UUID
    user_id: UUID
    price_paid: Decimal
    bundle_purchase_id: UUID | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class PurchaseFact:
    """A bundle purchase."""

    id: UUID
    user_id: UUID
    total_price: Decimal


@dataclass(frozen=True, slots=True)
class PaymentFact:
    id: UUID
    user_id: UUID
    amount_znc: Decimal
    succeeded: bool


@dataclass(frozen=True, slots=True)
class MoneyFacts:
    users: Sequence[UserFact]
    #: Every entry naming one of `KNOWN_REFERENCES`.
    entries: Sequence[EntryFact]
    tokens: Sequence[TokenFact]
    bundle_purchases: Sequence[PurchaseFact]
    payments: Sequence[PaymentFact]
    #: Entries naming a cause outside `KNOWN_REFERENCES` (not traced).
    untraced_entries: int


@dataclass(frozen=True, slots=True)
class MoneyProblem:
    """Something the money supply cannot explain, in the wallet it concerns."""

    user_id: UUID
    detail: str


def _uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class _Purchase:
    """A purchase as the audit sees it: its buyer, price and tokens in issue order."""

    buyer_id: UUID
    total: Decimal
    tokens: tuple[TokenFact, ...]


def _purchases(facts: MoneyFacts) -> dict[UUID, _Purchase]:
    """Every purchase by id: a single token is its own purchase; a bundle purchase holds its
    tokens in issue order (ids grow in issue order, as the shop's split relies on)."""
    by_bundle: dict[UUID, list[TokenFact]] = defaultdict(list)
    purchases: dict[UUID, _Purchase] = {}
    for token in facts.tokens:
        if token.bundle_purchase_id is None:
            purchases[token.id] = _Purchase(token.user_id, token.price_paid, (token,))
        else:
            by_bundle[token.bundle_purchase_id].append(token)
    for bundle in facts.bundle_purchases:
        tokens = tuple(sorted(by_bundle.get(bundle.id, []), key=lambda t: t.id))
        purchases[bundle.id] = _Purchase(bundle.user_id, bundle.total_price, tokens)
    return purchases


def policy_bonus_kept(purchase: _Purchase, percent: Decimal) -> tuple[Decimal, Decimal]:
    """The most a purchase's referral bonus may still be worth to the referrer, and the
    rounding the split of an older, capped bonus may add to it.

    The bonus is `percent` of the price, split over the tokens as the price is; the shares of
    refunded tokens are gone. A bonus credited whole at purchase (before shares) and cut by the
    monthly cap was split from a smaller amount, whose first share may carry up to one cent per
    token more than the policy's; that is allowed when the purchase is partly refunded.
    """
    if not purchase.tokens:
        return ZERO, ZERO
    bonus = quantize(purchase.total * percent / _HUNDRED)
    shares = bonus_shares(bonus, len(purchase.tokens))
    kept = sum(
        (share for share, token in zip(shares, purchase.tokens, strict=True) if not token.revoked),
        ZERO,
    )
    refunded = sum(1 for token in purchase.tokens if token.revoked)
    partly = 0 < refunded < len(purchase.tokens) and len(purchase.tokens) > 1
    slack = CENT * len(purchase.tokens) if partly else ZERO
    return kept, slack


def audit_money(
    facts: MoneyFacts, adjustments: Mapping[UUID, str], percent: Decimal
) -> list[MoneyProblem]:
    """Every entry without its cause and every referral link paid more than the policy allows
    on what stayed paid; empty when the money supply adds up. `adjustments` are the balance
    adjustments in the audit log: audit entry id -> the adjusted user's id."""
    users = {user.id: user for user in facts.users}
    tokens = {token.id: token for token in facts.tokens}
    bundles = {bundle.id: bundle for bundle in facts.bundle_purchases}
    payments = {payment.id: payment for payment in facts.payments}
    purchases = _purchases(facts)
    problems: list[MoneyProblem] = []
    booked: Counter[tuple[TransactionType, str, str]] = Counter()
    #: (referrer, referee) -> net bonus paid, and the purchases it was paid on.
    paid: dict[tuple[UUID, UUID], Decimal] = defaultdict(lambda: ZERO)
    paid_on: dict[tuple[UUID, UUID], set[UUID]] = defaultdict(set)

    def problem(entry: EntryFact, why: str) -> None:
        problems.append(
            MoneyProblem(
                entry.user_id,
                f"{entry.transaction_type.value} entry {entry.id} "
                f"({entry.amount:+.2f}, names {entry.reference_type} {entry.reference_id}): {why}",
            )
        )

    for entry in facts.entries:
        kind = entry.transaction_type
        if entry.reference_type not in KNOWN_REFERENCES:
            continue  # a cause outside the product: counted by the store, not judged here
        if entry.reference_type not in _ALLOWED[kind]:
            problem(entry, f"a {kind.value} entry cannot come from a {entry.reference_type}")
            continue
        cause = _uuid(entry.reference_id)
        if cause is None:
            problem(entry, "the cause is not an id")
            continue
        if kind in _ONCE:
            booked[(kind, entry.reference_type, str(cause))] += 1
            if booked[(kind, entry.reference_type, str(cause))] == 2:
                problem(entry, f"this cause was already booked as a {kind.value}")
        if kind is _T.DEPOSIT:
            payment = payments.get(cause)
            if payment is None:
                problem(entry, "no such payment")
            elif payment.user_id != entry.user_id:
                problem(entry, "the payment is someone else's")
            elif not payment.succeeded:
                problem(entry, "the payment did not succeed")
            elif payment.amount_znc != entry.amount:
                problem(entry, f"the payment was for {payment.amount_znc:.2f}")
        elif kind is _T.ADJUSTMENT:
            target = adjustments.get(cause)
            if target is None:
                problem(entry, "no balance adjustment in the audit log")
            elif target != str(entry.user_id):
                problem(entry, "the audit log says it adjusted another wallet")
        elif kind is _T.REFUND:
            token = tokens.get(cause)
            if token is None:
                problem(entry, "no such token")
            elif token.user_id != entry.user_id:
                problem(entry, "the token is someone else's")
            elif not token.revoked:
                problem(entry, "the token was not revoked")
            elif token.price_paid != entry.amount:
                problem(entry, f"the token cost {token.price_paid:.2f}")
        elif kind is _T.PURCHASE:
            if entry.reference_type == TOKEN_REFERENCE:
                token = tokens.get(cause)
                found = token is not None and token.bundle_purchase_id is None
                owner, price = (token.user_id, token.price_paid) if token else (None, ZERO)
            else:
                bundle = bundles.get(cause)
                found = bundle is not None
                owner, price = (bundle.user_id, bundle.total_price) if bundle else (None, ZERO)
            if not found:
                problem(entry, f"no such {entry.reference_type}")
            elif owner != entry.user_id:
                problem(entry, "the purchase is someone else's")
            elif price != -entry.amount:
                problem(entry, f"the purchase cost {price:.2f}")
        else:
            # A referral entry names the referee's purchase, or (for a bundle's share) the
            # token whose first use paid it; either way the purchase it belongs to.
            token = tokens.get(cause) if entry.reference_type == TOKEN_REFERENCE else None
            purchase_id = cause
            if token is not None and token.bundle_purchase_id is not None:
                purchase_id = token.bundle_purchase_id
            purchase = purchases.get(purchase_id)
            buyer = users.get(purchase.buyer_id) if purchase is not None else None
            if purchase is None or buyer is None:
                problem(entry, f"no such {entry.reference_type}")
            elif buyer.referred_by_id != entry.user_id:
                problem(entry, f"{buyer.username} is not this wallet's referee")
            else:
                link = (entry.user_id, buyer.id)
                paid[link] += entry.amount
                paid_on[link].add(purchase_id)

    by_buyer: dict[UUID, list[tuple[UUID, _Purchase]]] = defaultdict(list)
    for purchase_id, purchase in purchases.items():
        by_buyer[purchase.buyer_id].append((purchase_id, purchase))
    for link in sorted(paid, key=lambda pair: (str(pair[0]), str(pair[1]))):
        referrer_id, referee_id = link
        allowed = slack = ZERO
        for purchase_id, purchase in by_buyer[referee_id]:
            kept, extra = policy_bonus_kept(purchase, percent)
            allowed += kept
            if purchase_id in paid_on[link]:
                slack += extra
        amount = paid[link]
        if amount > allowed + slack:
            referee = users[referee_id].username
            problems.append(
                MoneyProblem(
                    referrer_id,
                    f"net referral bonuses of {amount:.2f} ZNC on {referee}'s purchases, but "
                    f"{percent:g} % of what {referee} bought and kept allows {allowed:.2f} "
                    f"(over by {amount - allowed:.2f})",
                )
            )
    return problems
