"""Referral bonuses: held as pending shares inside a purchase's transaction, paid inside the
transaction that first uses a token, cancelled inside a refund's.

The rules (how much, first purchase only, the monthly cap) are in `zenzefi_core.referrals`;
this module applies them to the stores. Where each rule is applied, and why:

- At purchase: the percentage, the minimum purchase and first-purchase-only, on the whole
  purchase (a bundle is one purchase). The bonus is split over the tokens (`bonus_shares`) and
  each share is stored as pending. Nothing is paid: the purchase can still be refunded.
- At a token's first use (`credit_referral_bonus`, in the activation's transaction): the share
  is paid, under the monthly cap of the month it is paid in. Paid bonuses are final (an
  activated token cannot be refunded), so what the cap counts can never be given back by a
  refund and re-earned. A referrer deactivated by then is paid nothing (`FORFEITED`).
- At a refund of an unused token (`cancel_referral_bonus`): its share is cancelled.

Databases from before shares hold bonuses credited at purchase (`ReferralBonus`); refunding one
of their tokens still reverses its share of them (`claw_back_referral_bonus`), as it did then.
The referrer's summary (`bonus_earned`, `bonus_pending`, referees) is
`services.users.GetReferralSummary`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from zenzefi_core.domain import LedgerEntry, TransactionType, User
from zenzefi_core.domain.referrals import ReferralBonus, ReferralShare, ShareState
from zenzefi_core.domain.tokens import TOKEN_REFERENCE, AccessToken
from zenzefi_core.money import ZERO, format_amount
from zenzefi_core.ports import Clock, UnitOfWork
from zenzefi_core.referrals import (
    Clawback,
    ReferralPolicy,
    bonus_share,
    bonus_shares,
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


def hold_referral_bonus(
    uow: UnitOfWork,
    clock: Clock,
    policy: ReferralPolicy,
    *,
    buyer: User,
    purchase_type: str,
    purchase_id: UUID,
    amount: Decimal,
    tokens: Sequence[AccessToken],
) -> Decimal:
    """Record the bonus a purchase already debited in this unit of work earns the buyer's
    referrer, as one pending share per token; nothing is paid yet. The bonus held, ZERO for a
    buyer nobody referred, a referrer no longer active, or a purchase the policy does not
    reward."""
    if buyer.referred_by_id is None or not tokens:
        return ZERO
    referrer = uow.users.get(buyer.referred_by_id)
    if referrer is None or not referrer.is_active:
        return ZERO
    first_purchase = True
    if policy.first_purchase_only:
        first_purchase = _first_purchase(uow, buyer.id)
    # The cap is applied again when each share is paid; here it only bounds one purchase.
    bonus = policy.bonus_for(amount, first_purchase=first_purchase)
    if bonus == ZERO:
        return ZERO
    now = clock.now()
    # In issue order (ids grow with it), as the price was split: the first token carries the
    # leftover cents of both.
    ordered = sorted(tokens, key=lambda token: token.id)
    uow.referrals.add_shares(
        [
            ReferralShare(
                token_id=token.id,
                referrer_id=referrer.id,
                referee_id=buyer.id,
                purchase_type=purchase_type,
                purchase_id=purchase_id,
                amount=share,
                created_at=now,
            )
            for token, share in zip(ordered, bonus_shares(bonus, len(ordered)), strict=True)
            if share > ZERO
        ]
    )
    return bonus


def credit_referral_bonus(
    uow: UnitOfWork, clock: Clock, policy: ReferralPolicy, token: AccessToken
) -> LedgerEntry | None:
    """Pay the referrer the share of a token activated in this unit of work: a
    `referral_bonus` entry naming the token, and a `referral.bonus` event. Under the monthly
    cap of the month it is paid in; nothing (the share is forfeited) once the cap is reached
    or when the referrer's account is deactivated. None when nothing was paid."""
    share = uow.referrals.share_for_token(token.id)
    if share is None or share.state is not ShareState.PENDING:
        return None
    now = clock.now()
    referrer = uow.users.get(share.referrer_id)
    amount = ZERO
    if referrer is not None and referrer.is_active:
        amount = share.amount
        if policy.monthly_cap is not None:
            # Payments to one referrer are decided one at a time, so the cap holds under load.
            uow.referrals.lock_referrer(share.referrer_id)
            kept = uow.referrals.kept_between(share.referrer_id, *month_window(now))
            amount = policy.within_cap(amount, kept_this_month=kept)
    if referrer is None or amount == ZERO:
        _settle(uow, token.id, ShareState.FORFEITED, now)
        return None
    referee = uow.users.get(share.referee_id)
    referee_name = referee.username if referee is not None else "a referee"
    entry = post_entry(
        uow,
        clock,
        user_id=referrer.id,
        amount=amount,
        transaction_type=TransactionType.REFERRAL_BONUS,
        description=f"Referral bonus from {referee_name}",
        reference_type=TOKEN_REFERENCE,
        reference_id=str(token.id),
    )
    _settle(uow, token.id, ShareState.CREDITED, now, credited=amount, transaction_id=entry.id)
    record_event(
        uow,
        clock,
        "referral.bonus",
        {
            "user_id": str(referrer.id),
            "referee_username": referee_name,
            "amount": format_amount(amount),
            "purchase_amount": format_amount(token.price_paid),
            "token_prefix": token.token_prefix,
            "new_balance": format_amount(entry.balance_after),
        },
        user_id=referrer.id,
    )
    return entry


def cancel_referral_bonus(uow: UnitOfWork, clock: Clock, token: AccessToken) -> Decimal:
    """Cancel the pending share of a token refunded in this unit of work; the share cancelled,
    ZERO when it had none."""
    share = uow.referrals.share_for_token(token.id)
    if share is None or share.state is not ShareState.PENDING:
        return ZERO
    _settle(uow, token.id, ShareState.CANCELLED, clock.now())
    return share.amount


def _settle(
    uow: UnitOfWork,
    token_id: UUID,
    state: ShareState,
    at: datetime,
    *,
    credited: Decimal = ZERO,
    transaction_id: UUID | None = None,
) -> None:
    if not uow.referrals.settle_share(
        token_id, state, at, credited=credited, transaction_id=transaction_id
    ):
        # Only a bug could get here: activation and refund are conditional updates of the
        # token, so one transaction at most settles its share. Raising rolls it all back.
        raise RuntimeError(f"the referral share of token {token_id} was settled already")


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
    """Reverse the part of a bonus credited at purchase (before shares) that a refunded token
    produced.

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
