"""Referral bonuses inside a purchase's transaction, and their clawback inside a refund's.

The rules (how much, first purchase only, the monthly cap, never below zero) are in
`zenzefi_core.referrals`; this module applies them to the stores. The referrer's summary
(`bonus_earned`, referees) is `services.users.GetReferralSummary`.
"""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from zenzefi_core.domain import TransactionType, User
from zenzefi_core.domain.referrals import ReferralBonus
from zenzefi_core.domain.tokens import TOKEN_REFERENCE, AccessToken
from zenzefi_core.ids import new_id
from zenzefi_core.money import ZERO, format_amount
from zenzefi_core.ports import Clock, UnitOfWork
from zenzefi_core.referrals import (
    Clawback,
    ReferralPolicy,
    bonus_share,
    clawback_for,
    month_window,
)
from zenzefi_core.services.events import record_event
from zenzefi_core.services.wallet import DEFAULT_LOW_BALANCE_THRESHOLD, post_entry


def _first_purchase(uow: UnitOfWork, buyer_id: UUID) -> bool:
    # Called after the purchase's own debit, which holds the buyer's row until commit, so an
    # earlier purchase racing this one has either committed (and is counted) or not started.
    page = uow.ledger.list_for_user(
        buyer_id, limit=1, offset=0, transaction_type=TransactionType.PURCHASE
    )
    return page.total == 1


def award_referral_bonus(
    uow: UnitOfWork,
    clock: Clock,
    policy: ReferralPolicy,
    *,
    buyer: User,
    purchase_type: str,
    purchase_id: UUID,
    amount: Decimal,
) -> ReferralBonus | None:
    """Credit the buyer's referrer for a purchase already debited in this unit of work.

    Nothing for a buyer nobody referred, a referrer no longer active, or a purchase the policy
    does not reward. The bonus is a `referral_bonus` entry naming the purchase as its cause.
    """
    if buyer.referred_by_id is None:
        return None
    referrer = uow.users.get(buyer.referred_by_id)
    if referrer is None or not referrer.is_active:
        return None
    now = clock.now()
    first_purchase = True
    if policy.first_purchase_only:
        first_purchase = _first_purchase(uow, buyer.id)
    kept = ZERO
    if policy.monthly_cap is not None:
        # Bonuses for one referrer are decided one at a time, so the cap holds under load.
        uow.referrals.lock_referrer(referrer.id)
        kept = uow.referrals.kept_between(referrer.id, *month_window(now))
    bonus = policy.bonus_for(amount, first_purchase=first_purchase, kept_this_month=kept)
    if bonus == ZERO:
        return None
    entry = post_entry(
        uow,
        clock,
        user_id=referrer.id,
        amount=bonus,
        transaction_type=TransactionType.REFERRAL_BONUS,
        description=f"Referral bonus from {buyer.username}",
        reference_type=purchase_type,
        reference_id=str(purchase_id),
    )
    record = ReferralBonus(
        id=new_id(),
        referrer_id=referrer.id,
        referee_id=buyer.id,
        purchase_type=purchase_type,
        purchase_id=purchase_id,
        purchase_amount=amount,
        amount=bonus,
        transaction_id=entry.id,
        created_at=now,
    )
    uow.referrals.add(record)
    record_event(
        uow,
        clock,
        "referral.bonus",
        {
            "user_id": str(referrer.id),
            "referee_username": buyer.username,
            "amount": format_amount(bonus),
            "purchase_amount": format_amount(amount),
            "new_balance": format_amount(entry.balance_after),
        },
        user_id=referrer.id,
    )
    return record


def _owed_for(uow: UnitOfWork, bonus: ReferralBonus, token: AccessToken) -> Decimal:
    """The refunded token's part of the bonus: all of it, or its share of a bundle's."""
    if token.bundle_purchase_id is None:
        share = bonus.amount
    else:
        siblings = [t.id for t in uow.tokens.list_for_purchase(token.bundle_purchase_id)]
        share = bonus_share(bonus.amount, len(siblings), siblings.index(token.id))
    return min(share, bonus.outstanding)


def claw_back_referral_bonus(
    uow: UnitOfWork,
    clock: Clock,
    token: AccessToken,
    *,
    low_balance_threshold: Decimal = DEFAULT_LOW_BALANCE_THRESHOLD,
) -> Clawback | None:
    """Reverse the part of a referral bonus that a refunded token produced.

    Takes it from the referrer with a `referral_clawback` entry, but never more than the
    referrer holds: the rest is recorded on the bonus as its shortfall, and in the entry's
    description. None when the token's purchase earned no bonus.
    """
    bonus = uow.referrals.for_purchase(token.purchase_id)
    if bonus is None:
        return None
    owed = _owed_for(uow, bonus, token)
    if owed == ZERO:
        return None
    uow.referrals.lock_referrer(bonus.referrer_id)
    referrer = uow.users.get(bonus.referrer_id)
    clawback = clawback_for(owed, referrer.balance if referrer is not None else ZERO)
    if clawback.taken > ZERO:
        description = "Referral bonus reversed: the purchase it came from was refunded"
        if clawback.shortfall > ZERO:
            description += (
                f" ({format_amount(clawback.owed)} ZNC owed, "
                f"{format_amount(clawback.shortfall)} ZNC not recovered)"
            )
        post_entry(
            uow,
            clock,
            user_id=bonus.referrer_id,
            amount=-clawback.taken,
            transaction_type=TransactionType.REFERRAL_CLAWBACK,
            description=description,
            reference_type=TOKEN_REFERENCE,
            reference_id=str(token.id),
            low_balance_threshold=low_balance_threshold,
        )
    if not uow.referrals.record_clawback(
        bonus.id, taken=clawback.taken, shortfall=clawback.shortfall
    ):
        # Only a bug could get here: the caller holds the buyer's row, so no other refund of
        # this purchase runs at the same time. Raising rolls the whole refund back.
        raise RuntimeError(f"clawback of {owed} exceeds what is left of bonus {bonus.id}")
    return clawback
