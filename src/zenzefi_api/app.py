"""The application factory: settings (and optionally a ready core) in, a Litestar app out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio.to_thread
from litestar import Litestar, Request, Response, Router, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag
from litestar.serialization import encode_json
from litestar.types import ControllerRouterHandler

import zenzefi_core
from zenzefi_api.access_log import AccessLog
from zenzefi_api.auth import (
    TokenIssuer,
    provide_current_login,
    provide_current_user,
    provide_tokens,
)
from zenzefi_api.cache import access_cache_for
from zenzefi_api.context import (
    STATE_KEY,
    ApiContext,
    api_context,
    provide_client_address,
    provide_core,
    provide_settings,
)
from zenzefi_api.controllers.accounts import AuthController, UsersController
from zenzefi_api.controllers.admin import AdminUsersController, AuditLogController
from zenzefi_api.controllers.analytics import AnalyticsController
from zenzefi_api.controllers.bundles import BundlesController
from zenzefi_api.controllers.currency import CurrencyController
from zenzefi_api.controllers.notifications import NotificationsController
from zenzefi_api.controllers.payments import (
    DevPaymentsController,
    PaymentWebhookController,
    TopUpController,
)
from zenzefi_api.controllers.tokens import TokensController
from zenzefi_api.controllers.webhooks import WebhooksController
from zenzefi_api.dashboard import DashboardController
from zenzefi_api.errors import EXCEPTION_HANDLERS
from zenzefi_api.health import HealthController, UpstreamProbe
from zenzefi_api.metrics import HttpMetrics, count_ledger, metrics
from zenzefi_api.options import AutomaticOptions
from zenzefi_api.proxy import ProxyController, ProxyRuntime
from zenzefi_api.ratelimit import limiter_for
from zenzefi_api.strict_body import StrictJsonRequest
from zenzefi_core.adapters.cache import InProcessCache
from zenzefi_core.bootstrap import Core
from zenzefi_core.settings import Settings

API_PREFIX = "/api/v1"

#: Every controller served under /api/v1. A new context is one more line here; its handlers
#: get `core`, `current_user`, `client_address`, `settings` and `tokens` by naming them.
API_V1_CONTROLLERS: list[ControllerRouterHandler] = [
    AuthController,
    UsersController,
    CurrencyController,
    AdminUsersController,
    AuditLogController,
    TopUpController,
    PaymentWebhookController,
    DevPaymentsController,
    TokensController,
    BundlesController,
    ProxyController,
    NotificationsController,
    WebhooksController,
    AnalyticsController,
]

DEPENDENCIES = {
    "core": Provide(provide_core, sync_to_thread=False),
    "settings": Provide(provide_settings, sync_to_thread=False),
    "tokens": Provide(provide_tokens, sync_to_thread=False),
    "client_address": Provide(provide_client_address, sync_to_thread=False),
    "current_user": Provide(provide_current_user),
    "current_login": Provide(provide_current_login, sync_to_thread=False),
}

TAGS = [
    Tag(name="Accounts", description="Registration, login, profile and referrals"),
    Tag(name="Currency", description="The ZNC wallet: balance and ledger"),
    Tag(name="Tokens", description="Access tokens: buy, list, revoke for a refund"),
    Tag(name="Bundles", description="Discounted token bundles: catalogue, purchase, operators"),
    Tag(name="Admin", description="Operators only: users, balance adjustments, audit log"),
    Tag(name="Notifications", description="Email preferences and the signed unsubscribe link"),
    Tag(name="Proxy", description="The access proxy to the diagnostic server (X-Access-Token)"),
    Tag(name="Analytics", description="Usage over time: the caller's own, and operators' totals"),
    Tag(name="Operations", description="Health and the API schema"),
]


@get(
    "/openapi.json",
    operation_id="openapiSchema",
    include_in_schema=False,
    sync_to_thread=False,
)
def openapi_json(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The schema at the address the API contract names (the docs page also serves it)."""
    schema = request.app.openapi_schema.to_schema()
    return Response(encode_json(schema), media_type="application/vnd.oai.openapi+json")


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    """Migrate before the first request; release connections and clients on the way out.

    Uvicorn stops accepting connections and lets running requests finish before this exits, so
    shutting down never cuts a transaction in half.
    """
    context = api_context(app)
    await anyio.to_thread.run_sync(context.core.migrate)
    upstream_url = context.settings.upstream.url
    if upstream_url:
        context.upstream = UpstreamProbe(upstream_url, context.settings.health_timeout_seconds)
    context.proxy = ProxyRuntime.build(context.settings, context.core)
    await context.proxy.start()
    try:
        yield
    finally:
        await context.proxy.stop()
        context.proxy = None
        await context.limiter.aclose()
        if context.upstream is not None:
            await context.upstream.aclose()
            context.upstream = None
        if context.owns_core:
            context.core.close()


def create_app(settings: Settings, core: Core | None = None) -> Litestar:
    """Build the API. Without `core`, one is made from `settings` and closed at shutdown; a core
    passed in (tests, embedding) stays the caller's to close."""
    owns_core = core is None
    core = core or Core.from_settings(settings)
    if settings.redis.url and isinstance(core.access_cache, InProcessCache):
        # With Redis every API process shares the proxy's token cache, so a ban made through
        # one process reaches the others at once.
        core.access_cache = access_cache_for(settings)
    # Purchases, revenue, bonuses and ledger entries are counted from what commits.
    core.ledger_observer = count_ledger
    lifetime = timedelta(minutes=settings.auth.token_minutes)
    context = ApiContext(
        settings=settings,
        core=core,
        tokens=TokenIssuer(settings.resolved_secret_key(), lifetime, core.clock),
        limiter=limiter_for(settings),
        owns_core=owns_core,
    )
    app = Litestar(
        route_handlers=[
            HealthController,
            openapi_json,
            metrics,
            Router(path=API_PREFIX, route_handlers=API_V1_CONTROLLERS),
            DashboardController,
        ],
        dependencies=DEPENDENCIES,
        # OPTIONS is counted like any request, and answered before the guards run.
        middleware=[HttpMetrics, AutomaticOptions],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        state=State({STATE_KEY: context}),
        request_max_body_size=settings.max_request_bytes,
        request_class=StrictJsonRequest,
        openapi_config=OpenAPIConfig(
            title="Zenzefi API",
            version=zenzefi_core.__version__,
            description="ZNC wallet, accounts and operator tools. Authenticate with "
            "`Authorization: Bearer <token>` from `POST /api/v1/auth/login`.",
            path="/docs",
            render_plugins=[SwaggerRenderPlugin(path="/")],
            components=Components(
                security_schemes={
                    "BearerAuth": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
                    "AccessToken": SecurityScheme(
                        type="apiKey", name="X-Access-Token", security_scheme_in="header"
                    ),
                }
            ),
            tags=TAGS,
        ),
        logging_config=None,
        debug=False,
    )
    # Wrap the app's outermost handler rather than adding route middleware: route middleware
    # never sees requests that match no route, and those belong in the access log too.
    app.asgi_handler = AccessLog(app.asgi_handler, quiet_paths=frozenset({"/metrics"}))
    return app
