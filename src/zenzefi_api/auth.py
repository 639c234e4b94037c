"""Login sessions: JWTs (HS256) issued at login, checked on every request that needs a user.

The token says who the caller was when they logged in and the account's `session_version` then
(claim `sv`); the account is read again on every request (the core's `IdentifyUser`, one query),
so a password change or a deactivation, which raise the version, ends every earlier login at
once instead of when its token expires. Missing, malformed, forged, expired and ended tokens
are all 401.

The purchase routes are the exception: their use cases read and check the account themselves,
session version included, inside the purchase's own transaction, so those routes only verify
the token (`token_required`) and spare the busiest requests a second account read.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from uuid import UUID

import anyio.to_thread
import jwt
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers import BaseRouteHandler

from zenzefi_api.context import api_context
from zenzefi_core.domain import User
from zenzefi_core.errors import AuthenticationFailed, UserNotFound
from zenzefi_core.ports import Clock
from zenzefi_core.services.admin import require_superuser
from zenzefi_core.services.users import IdentifyUser, LoginSession

ALGORITHM = "HS256"
AUDIENCE = "zenzefi-api"
#: The OpenAPI security scheme of every route that needs a login.
BEARER: tuple[dict[str, list[str]], ...] = ({"BearerAuth": []},)


class TokenIssuer:
    def __init__(self, secret_key: str, lifetime: timedelta, clock: Clock) -> None:
        # A key of its own, derived from the secret key: login tokens can never be confused with
        # anything else signed with it, and the key is always a full 256 bits.
        self._key = hmac.new(secret_key.encode(), b"zenzefi-login-tokens", hashlib.sha256).digest()
        self._lifetime = lifetime
        self._clock = clock

    @property
    def lifetime_seconds(self) -> int:
        return int(self._lifetime.total_seconds())

    def issue(self, user_id: UUID, session_version: int) -> str:
        """A login token for the account, valid while `session_version` is its current one."""
        now = self._clock.now()
        claims = {
            "sub": str(user_id),
            "sv": session_version,
            "aud": AUDIENCE,
            "iat": int(now.timestamp()),
            "exp": int((now + self._lifetime).timestamp()),
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify(self, authorization: str | None) -> LoginSession:
        """The login in a valid `Authorization: Bearer <jwt>` header; 401 for anything else.

        A token from before session versions existed carries no `sv`: it stands for version 0,
        every account's first, so it ends with the account's next password change."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("Not authenticated")
        try:
            claims = jwt.decode(
                token.strip(),
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                options={"require": ["sub", "aud", "iat", "exp"]},
            )
            version = claims.get("sv", 0)
            if type(version) is not int:
                raise ValueError("sv is not a whole number")
            return LoginSession(user_id=UUID(str(claims["sub"])), session_version=version)
        except (jwt.InvalidTokenError, ValueError):
            raise AuthenticationFailed("Could not validate credentials") from None


#: Where `bearer_session` keeps the verified login for the rest of the request.
SESSION_KEY = "zenzefi_login"


def bearer_session(connection: ASGIConnection[Any, Any, Any, Any]) -> LoginSession:
    """The login in the request's verified bearer token, without reading the account."""
    verified = connection.scope.get(SESSION_KEY)
    if isinstance(verified, LoginSession):
        return verified
    session = api_context(connection.app).tokens.verify(connection.headers.get("authorization"))
    connection.scope[SESSION_KEY] = session  # type: ignore[literal-required]
    return session


async def authenticated_user(connection: ASGIConnection[Any, Any, Any, Any]) -> User:
    """The active user behind the request's bearer token, looked up once per request."""
    known = connection.scope.get("user")
    if isinstance(known, User):
        return known
    context = api_context(connection.app)
    session = bearer_session(connection)
    # One statement, no transaction around it: one database round trip.
    user = await anyio.to_thread.run_sync(IdentifyUser(context.core.reader), session)
    connection.scope["user"] = user
    return user


async def login_required(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard: runs before the body is read, so an anonymous request is 401 whatever it sends."""
    await authenticated_user(connection)


async def superuser_required(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    require_superuser(await authenticated_user(connection))


async def token_required(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard for routes whose use case checks the account itself, in its own transaction (the
    purchases): only the token is verified here, 401 as anywhere. The handler must give the
    use case the token's session version (`current_login`): an ended login is then refused at
    once with the use case's 401, an inactive account with its 403, and a token naming no
    account is 401 (see `account_checked_by_use_case`); what is saved is a separate account
    read, a database round trip and a thread hop, on every purchase."""
    bearer_session(connection)


@contextmanager
def account_checked_by_use_case() -> Iterator[None]:
    """Around a use case given `current_login`: the account it cannot find is the token's
    fault (401, as `IdentifyUser` says), not a missing record (404)."""
    try:
        yield
    except UserNotFound:
        raise AuthenticationFailed("Could not validate credentials") from None


async def provide_current_user(request: Request[Any, Any, Any]) -> User:
    return await authenticated_user(request)


def provide_current_login(request: Request[Any, Any, Any]) -> LoginSession:
    return bearer_session(request)


def provide_tokens(request: Request[Any, Any, Any]) -> TokenIssuer:
    return api_context(request.app).tokens


Tokens = NamedDependency[TokenIssuer]
