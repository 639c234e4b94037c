"""Self-service accounts: registering, logging in, the profile and the referral summary.

The rules for what a valid email, username or password is live in `accounts`; these use cases
apply them. Issuing and checking login tokens is the API's job: the core only says whether
credentials are right and whether the account behind a session may still act.
"""

from __future__ import annotations

import re
import secrets
import weakref
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Final, Literal
from uuid import UUID

from zenzefi_core.domain import User
from zenzefi_core.errors import (
    AccountDisabled,
    ActionRefused,
    AuthenticationFailed,
    InvalidInput,
    InvalidReferralCode,
    UserNotFound,
)
from zenzefi_core.paging import DEFAULT_LIMIT, check_page
from zenzefi_core.ports import Clock, PasswordHasher, UnitOfWork, UnitOfWorkFactory
from zenzefi_core.security import REFERRAL_CODE_LENGTH
from zenzefi_core.services.accounts import (
    PASSWORD_MAX_BYTES,
    normalize_email,
    prepare_user,
    store_user,
    validate_full_name,
    validate_password,
)

_REFERRAL_CODE = re.compile(rf"^[A-Z0-9]{{{REFERRAL_CODE_LENGTH}}}$")


@dataclass(frozen=True, slots=True)
class Registration:
    email: str
    username: str
    password: str
    full_name: str | None = None
    #: The code of the user who referred this one; blank means none.
    referral_code: str | None = None


def _active_referrer(uow: UnitOfWork, code: str) -> User:
    """The active user holding `code`; anything else is the same "Invalid referral code"."""
    normalized = code.strip().upper()
    if not _REFERRAL_CODE.match(normalized):
        raise InvalidReferralCode()
    referrer = uow.users.get_by_referral_code(normalized)
    if referrer is None or not referrer.is_active:
        raise InvalidReferralCode()
    return referrer


class RegisterUser:
    """Create an account, linked to its referrer when registered through a referral code."""

    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock, hasher: PasswordHasher):
        self._uow_factory = uow_factory
        self._clock = clock
        self._hasher = hasher

    def __call__(self, request: Registration) -> User:
        # Hashed before the transaction starts, so the slow part holds no lock.
        new_user = prepare_user(
            self._hasher,
            email=request.email,
            username=request.username,
            password=request.password,
            full_name=request.full_name,
        )
        with self._uow_factory() as uow:
            referrer_id = None
            if request.referral_code and request.referral_code.strip():
                referrer_id = _active_referrer(uow, request.referral_code).id
            user = store_user(uow, self._clock, new_user, referred_by_id=referrer_id)
            uow.commit()
        return user


@dataclass(frozen=True, slots=True)
class Credentials:
    email: str
    password: str


_decoys: weakref.WeakKeyDictionary[PasswordHasher, str] = weakref.WeakKeyDictionary()


def _decoy_hash(hasher: PasswordHasher) -> str:
    """A hash of nothing anyone knows, made once per hasher, to verify unknown emails against."""
    decoy = _decoys.get(hasher)
    if decoy is None:
        decoy = _decoys[hasher] = hasher.hash(secrets.token_urlsafe(16))
    return decoy


class Authenticate:
    """Check an email and password.

    An unknown email, a wrong password and a disabled account get the same answer, and an
    unknown email still costs one hash verification, so neither the response nor its timing
    tells an attacker which accounts exist.
    """

    def __init__(self, uow_factory: UnitOfWorkFactory, hasher: PasswordHasher) -> None:
        self._uow_factory = uow_factory
        self._hasher = hasher

    def __call__(self, credentials: Credentials) -> User:
        try:
            email = normalize_email(credentials.email)
        except InvalidInput:
            raise AuthenticationFailed() from None
        with self._uow_factory() as uow:
            user = uow.users.get_by_email(email)
        password = credentials.password
        plausible = len(password.encode("utf-8", "replace")) <= PASSWORD_MAX_BYTES
        stored = user.password_hash if user is not None else _decoy_hash(self._hasher)
        matches = plausible and self._hasher.verify(stored, password)
        if user is None or not matches or not user.is_active:
            raise AuthenticationFailed()
        return user


@dataclass(frozen=True, slots=True)
class LoginSession:
    """What a verified login token says: whose it is, and the account's `session_version`
    when it was issued."""

    user_id: UUID
    session_version: int


def session_user(user: User | None, session: LoginSession) -> User:
    """The rule for acting through a login session: the account exists, the session was issued
    at its current `session_version` (no password change or deactivation since) and it is
    active. An ended session is 401 like a forged one; an inactive account is 403."""
    if user is None or user.id != session.user_id:
        raise AuthenticationFailed("Could not validate credentials")
    if user.session_version != session.session_version:
        raise AuthenticationFailed("Could not validate credentials")
    if not user.is_active:
        raise AccountDisabled()
    return user


class IdentifyUser:
    """The account behind a verified login session, checked on every request.

    Because the account is read each time (one query, which also compares the session version),
    a password change or deactivation ends its sessions at once, without waiting for their
    tokens to expire.
    """

    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(self, session: LoginSession) -> User:
        with self._uow_factory() as uow:
            user = uow.users.get(session.user_id)
        return session_user(user, session)


class _Keep(Enum):
    KEEP = "keep"


#: A profile field left as it is (as opposed to None, which clears it).
KEEP: Final = _Keep.KEEP


@dataclass(frozen=True, slots=True)
class ProfileChange:
    user_id: UUID
    full_name: str | Literal[_Keep.KEEP] | None = KEEP
    new_password: str | None = None
    #: Required with `new_password`: a stolen session alone must not be enough to lock the
    #: owner out of the account.
    current_password: str | None = None


class UpdateProfile:
    """Change the caller's name or password. Only the columns that change are written, so a
    change racing an operator's ban cannot undo it; a new password also ends every login made
    before it (the caller's own included: they log in again with the new password)."""

    def __init__(self, uow_factory: UnitOfWorkFactory, hasher: PasswordHasher) -> None:
        self._uow_factory = uow_factory
        self._hasher = hasher

    def __call__(self, change: ProfileChange) -> User:
        full_name = change.full_name
        if full_name is not KEEP:
            full_name = validate_full_name(full_name)
        new_hash = None
        if change.new_password is not None:
            validate_password(change.new_password)
            if not change.current_password:
                raise InvalidInput("current_password is required to change the password")
            # Hashed before the transaction starts, so the slow part holds no lock.
            new_hash = self._hasher.hash(change.new_password)
        with self._uow_factory() as uow:
            user = uow.users.get(change.user_id)
            if user is None:
                raise UserNotFound(change.user_id)
            if not user.is_active:
                raise AccountDisabled()
            updated: User | None = user
            if new_hash is not None:
                current = change.current_password or ""
                if not self._hasher.verify(user.password_hash, current):
                    raise ActionRefused("Current password is incorrect")
                uow.users.set_password(user.id, new_hash)
                updated = uow.users.end_sessions(user.id)
            if full_name is not KEEP and full_name != user.full_name:
                updated = uow.users.set_full_name(user.id, full_name)
            if updated is None:
                raise UserNotFound(change.user_id)
            uow.commit()
        return updated


@dataclass(frozen=True, slots=True)
class ReferralQuery:
    user_id: UUID
    limit: int = DEFAULT_LIMIT
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Referee:
    """What a referrer may see of the people they brought in: never their email."""

    username: str
    joined_at: datetime


@dataclass(frozen=True, slots=True)
class ReferralSummary:
    referral_code: str
    total_referrals: int
    #: Bonuses paid (credited to the wallet) minus what refunds took back of bonuses paid at
    #: purchase before bonuses waited for a token's first use.
    bonus_earned: Decimal
    #: Bonuses on referees' tokens not used yet: paid when each token is first used, cancelled
    #: if it is refunded; the monthly cap, if any, may pay less.
    bonus_pending: Decimal
    referees: list[Referee]
    limit: int
    offset: int


class GetReferralSummary:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(self, query: ReferralQuery) -> ReferralSummary:
        check_page(query.limit, query.offset)
        with self._uow_factory() as uow:
            user = uow.users.get(query.user_id)
            if user is None:
                raise UserNotFound(query.user_id)
            page = uow.users.referrals(user.id, limit=query.limit, offset=query.offset)
            earned = uow.ledger.referral_earnings(user.id)
            pending = uow.referrals.pending_total(user.id)
        return ReferralSummary(
            referral_code=user.referral_code,
            total_referrals=page.total,
            bonus_earned=earned,
            bonus_pending=pending,
            referees=[Referee(username=u.username, joined_at=u.created_at) for u in page.items],
            limit=page.limit,
            offset=page.offset,
        )
