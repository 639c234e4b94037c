"""Login sessions: JWTs (HS256) issued at login, checked on every request that needs a user.

The token only says who the caller was when they logged in; the account is read again on every
request (the core's `IdentifyUser`), so a deactivated user is refused at once (403) instead of
when the token expires. Missing, malformed, forged and expired tokens are all 401.

The purchase routes are the exception: their use cases read and check the account themselves,
inside the purchase's own transaction, so those routes only verify the token (`token_required`)
and spare the busiest requests a second account read.
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
from zenzefi_core.services.users import IdentifyUser

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

    def issue(self, user_id: UUID) -> str:
        now = self._clock.now()
        claims = {
            "sub": str(user_id),
            "aud": AUDIENCE,
            "iat": int(now.timestamp()),
            "exp": int((now + self._lifetime).timestamp()),
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify(self, authorization: str | None) -> UUID:
        """The user id in a valid `Authorization: Bearer <jwt>` header; 401 for anything else."""
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
            return UUID(str(claims["sub"]))
        except (jwt.InvalidTokenError, ValueError):
            raise AuthenticationFailed("Could not validate credentials") from None


#: Where `bearer_user_id` keeps the id from a verified token for the rest of the request.
USER_ID_KEY = "zenzefi_user_id"


def bearer_user_id(connection: ASGIConnection[Any, Any, Any, Any]) -> UUID:
    """The user id in the request's verified bearer token, without reading the account."""
    known = connection.scope.get("user")
    if isinstance(known, User):
        return known.id
    verified = connection.scope.get(USER_ID_KEY)
    if isinstance(verified, UUID):
        return verified
    user_id = api_context(connection.app).tokens.verify(connection.headers.get("authorization"))
    connection.scope[USER_ID_KEY] = user_id  # type: ignore[literal-required]
    return user_id


async def authenticated_user(connection: ASGIConnection[Any, Any, Any, Any]) -> User:
    """The active user behind the request's bearer token, looked up once per request."""
    known = connection.scope.get("user")
    if isinstance(known, User):
        return known
    context = api_context(connection.app)
    user_id = context.tokens.verify(connection.headers.get("authorization"))
    # One statement, no transaction around it: one database round trip.
    user = await anyio.to_thread.run_sync(IdentifyUser(context.core.reader), user_id)
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
    purchases): only the token is verified here, 401 as anywhere. A deactivated account is
    still refused at once, with the use case's 403, and a token naming no account is 401 (see
    `account_checked_by_use_case`); what is saved is a separate account read, a database round
    trip and a thread hop, on every purchase."""
    bearer_user_id(connection)


@contextmanager
def account_checked_by_use_case() -> Iterator[None]:
    """Around a use case given `current_user_id`: the account it cannot find is the token's
    fault (401, as `IdentifyUser` says), not a missing record (404)."""
    try:
        yield
    except UserNotFound:
        raise AuthenticationFailed("Could not validate credentials") from None


async def provide_current_user(request: Request[Any, Any, Any]) -> User:
    return await authenticated_user(request)


def provide_current_user_id(request: Request[Any, Any, Any]) -> UUID:
    return bearer_user_id(request)


def provide_tokens(request: Request[Any, Any, Any]) -> TokenIssuer:
    return api_context(request.app).tokens


Tokens = NamedDependency[TokenIssuer]
