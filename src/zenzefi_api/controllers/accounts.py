"""Accounts: register, log in, the caller's profile and referral summary."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, get, patch, post
from litestar.params import JSONBody, QueryParameter

from zenzefi_api.auth import BEARER, Tokens, login_required
from zenzefi_api.context import CoreDep, CurrentUser
from zenzefi_api.ratelimit import rate_limited
from zenzefi_api.schemas import (
    Limit,
    Money,
    Offset,
    Timestamp,
    error_responses,
    money,
    timestamp,
)
from zenzefi_core.domain import User
from zenzefi_core.paging import MAX_LIMIT
from zenzefi_core.services.accounts import (
    EMAIL_MAX,
    FULL_NAME_MAX,
    PASSWORD_MAX_BYTES,
    USERNAME_MAX,
    USERNAME_MIN,
)
from zenzefi_core.services.users import (
    KEEP,
    Authenticate,
    Credentials,
    GetReferralSummary,
    ProfileChange,
    ReferralQuery,
    RegisterUser,
    Registration,
    UpdateProfile,
)

#: Generous bounds for login fields: a login must not reveal the registration rules, only refuse
#: input too large to be anyone's credentials.
LOGIN_FIELD_MAX = 1024

Email = Annotated[str, msgspec.Meta(max_length=EMAIL_MAX, examples=["alice@example.com"])]
Password = Annotated[
    str, msgspec.Meta(max_length=PASSWORD_MAX_BYTES, description="8 to 72 bytes of UTF-8")
]
FullName = Annotated[str, msgspec.Meta(max_length=FULL_NAME_MAX)]


class RegisterIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    email: Email
    username: Annotated[
        str,
        msgspec.Meta(
            min_length=USERNAME_MIN,
            max_length=USERNAME_MAX,
            description="Letters, digits, '_', '.' and '-'; unique regardless of case",
        ),
    ]
    password: Password
    full_name: FullName | None = None


class LoginIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    email: Annotated[str, msgspec.Meta(max_length=LOGIN_FIELD_MAX)]
    password: Annotated[str, msgspec.Meta(max_length=LOGIN_FIELD_MAX)]


class ProfileIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Only the fields sent change; `full_name: null` clears the name."""

    full_name: FullName | msgspec.UnsetType | None = msgspec.UNSET
    password: Password | msgspec.UnsetType = msgspec.UNSET
    current_password: (
        Annotated[
            str,
            msgspec.Meta(max_length=LOGIN_FIELD_MAX, description="Required to set a password"),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET


class UserOut(msgspec.Struct, kw_only=True):
    id: UUID
    email: str
    username: str
    full_name: str | None
    referral_code: str
    is_active: bool
    is_superuser: bool
    created_at: Timestamp

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            username=user.username,
            full_name=user.full_name,
            referral_code=user.referral_code,
            is_active=user.is_active,
            is_superuser=user.is_superuser,
            created_at=timestamp(user.created_at),
        )


class TokenOut(msgspec.Struct, kw_only=True):
    access_token: str
    token_type: str
    expires_in: Annotated[int, msgspec.Meta(description="Seconds until the token expires")]


class RefereeOut(msgspec.Struct, kw_only=True):
    username: str
    joined_at: Timestamp


class ReferralsOut(msgspec.Struct, kw_only=True):
    referral_code: str
    total_referrals: int
    bonus_earned: Annotated[
        Money, msgspec.Meta(description="Referral bonuses paid into the wallet, net of clawbacks")
    ]
    bonus_pending: Annotated[
        Money,
        msgspec.Meta(
            description="Bonuses on referees' tokens not used yet: paid when each token is "
            "first used, cancelled if it is refunded"
        ),
    ]
    referrals: list[RefereeOut]
    limit: int
    offset: int


class AuthController(Controller):
    path = "/auth"
    tags = ("Accounts",)

    @post(
        "/register",
        operation_id="register",
        summary="Create an account",
        description="`?ref=CODE` links the new account to the active user holding that "
        "referral code; an unknown or inactive one is 400 `Invalid referral code`. Emails and "
        "usernames are unique regardless of case (400 when taken).",
        guards=[rate_limited("register")],
        responses=error_responses(400, 413, 422, 429, 503),
        sync_to_thread=True,
    )
    def register(
        self,
        core: CoreDep,
        data: JSONBody[RegisterIn],
        ref: Annotated[
            str | None,
            QueryParameter(max_length=64, description="Referral code of the user who invited you"),
        ] = None,
    ) -> UserOut:
        user = RegisterUser(core.uow, core.clock, core.hasher)(
            Registration(
                email=data.email,
                username=data.username,
                password=data.password,
                full_name=data.full_name,
                referral_code=ref,
            )
        )
        return UserOut.of(user)

    @post(
        "/login",
        operation_id="login",
        summary="Exchange email and password for a bearer token",
        description="Wrong credentials and inactive accounts are both 401, with one message.",
        status_code=200,
        guards=[rate_limited("login")],
        responses=error_responses(400, 401, 413, 422, 429, 503),
        sync_to_thread=True,
    )
    def login(self, core: CoreDep, tokens: Tokens, data: JSONBody[LoginIn]) -> TokenOut:
        user = Authenticate(core.uow, core.hasher)(Credentials(data.email, data.password))
        return TokenOut(
            access_token=tokens.issue(user.id, user.session_version),
            token_type="bearer",  # noqa: S106 - the OAuth 2 token type, not a secret
            expires_in=tokens.lifetime_seconds,
        )


class UsersController(Controller):
    path = "/users/me"
    tags = ("Accounts",)
    guards = (login_required,)
    security = BEARER

    @get(
        operation_id="getMe",
        summary="The caller's account",
        responses=error_responses(401, 403, 503),
        sync_to_thread=False,
    )
    def me(self, current_user: CurrentUser) -> UserOut:
        return UserOut.of(current_user)

    @patch(
        operation_id="updateMe",
        summary="Change the caller's name or password",
        description="A new `password` needs `current_password` (422 when missing, 400 when wrong) "
        "and ends every login made before it, this one included: log in again with the new "
        "password. A name change ends nothing.",
        responses=error_responses(400, 401, 403, 413, 422, 503),
        sync_to_thread=True,
    )
    def update_me(
        self, core: CoreDep, current_user: CurrentUser, data: JSONBody[ProfileIn]
    ) -> UserOut:
        change = ProfileChange(
            user_id=current_user.id,
            full_name=KEEP if data.full_name is msgspec.UNSET else data.full_name,
            new_password=None if data.password is msgspec.UNSET else data.password,
            current_password=(
                None if data.current_password is msgspec.UNSET else data.current_password
            ),
        )
        return UserOut.of(UpdateProfile(core.uow, core.hasher)(change))

    @get(
        "/referrals",
        operation_id="getMyReferrals",
        summary="The caller's referral code, referees and bonuses earned and pending",
        description="`bonus_earned` is what referral bonuses paid into the wallet (minus "
        "clawbacks of bonuses paid before they waited for a token's first use). "
        "`bonus_pending` is the bonus on referees' tokens not used yet: each token's share is "
        "paid when the token is first used and cancelled if it is refunded, so a bonus is "
        "never paid for a purchase that can still be undone. Referees are listed oldest first, "
        "by username only.",
        responses=error_responses(401, 403, 422, 503),
        sync_to_thread=True,
    )
    def referrals(
        self, core: CoreDep, current_user: CurrentUser, limit: Limit = MAX_LIMIT, offset: Offset = 0
    ) -> ReferralsOut:
        summary = GetReferralSummary(core.uow)(
            ReferralQuery(user_id=current_user.id, limit=limit, offset=offset)
        )
        return ReferralsOut(
            referral_code=summary.referral_code,
            total_referrals=summary.total_referrals,
            bonus_earned=money(summary.bonus_earned),
            bonus_pending=money(summary.bonus_pending),
            referrals=[
                RefereeOut(username=r.username, joined_at=timestamp(r.joined_at))
                for r in summary.referees
            ],
            limit=summary.limit,
            offset=summary.offset,
        )
