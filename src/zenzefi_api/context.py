"""What a request can reach: the core, the settings, login tokens, the rate limiter and the
upstream probe, built once per app by `create_app` and kept in the app's state, never global.

Handlers take the parts they need as named dependencies: `core: CoreDep` (the composition root:
`core.uow`, `core.clock`, `core.hasher`, `core.settings`), `settings: SettingsDep`,
`client_address: ClientAddress`, `current_user: CurrentUser` (the active user behind the bearer
token; see `auth`), `current_login: CurrentLogin` (the token's user id and session version, on
routes guarded by `token_required` whose use case checks the account and the session itself)
and `tokens: Tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from litestar import Litestar, Request
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency

from zenzefi_core.bootstrap import Core
from zenzefi_core.domain import User
from zenzefi_core.services.users import LoginSession
from zenzefi_core.settings import Settings

if TYPE_CHECKING:
    from zenzefi_api.auth import TokenIssuer
    from zenzefi_api.health import UpstreamProbe
    from zenzefi_api.proxy import ProxyRuntime
    from zenzefi_api.ratelimit import RateLimiter

STATE_KEY = "zenzefi"

#: Handler parameter types for the app-wide dependencies; the parameter name picks the value.
CoreDep = NamedDependency[Core]
SettingsDep = NamedDependency[Settings]
CurrentUser = NamedDependency[User]
#: The verified bearer token's login (id and session version), the account not read: for routes
#: guarded by `token_required`, whose use case must then check the session itself.
CurrentLogin = NamedDependency[LoginSession]
ClientAddress = NamedDependency[str | None]


@dataclass
class ApiContext:
    settings: Settings
    core: Core
    tokens: TokenIssuer
    limiter: RateLimiter
    #: True when `create_app` built the core, and so closes it at shutdown.
    owns_core: bool
    #: Set while the app runs (its HTTP client lives inside the event loop); None when no
    #: upstream server is configured.
    upstream: UpstreamProbe | None = None
    #: The proxy's client, usage meter and flush task; set while the app runs.
    proxy: ProxyRuntime | None = None


def api_context(app: Litestar) -> ApiContext:
    return cast(ApiContext, app.state[STATE_KEY])


def client_address(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The peer address; behind a reverse proxy, uvicorn's proxy-header handling sets it."""
    return connection.client.host if connection.client else None


def provide_core(request: Request[Any, Any, Any]) -> Core:
    return api_context(request.app).core


def provide_settings(request: Request[Any, Any, Any]) -> Settings:
    return api_context(request.app).settings


def provide_client_address(request: Request[Any, Any, Any]) -> str | None:
    return client_address(request)
