"""OPTIONS answered for every route with all of its methods, and without credentials.

Litestar (2.x) gives each path a generated OPTIONS handler, and two faults make it wrong here:

- The handler is made with the route built for the first handler registered on the path, and
  it reads that route's methods when it answers. A controller registers its handlers one by
  one, so each later handler on the same path makes a new route that keeps the old OPTIONS
  handler: `Allow` listed only the methods registered first (`OPTIONS /api/v1/bundles` said
  `OPTIONS, POST`). Upstream calls this litestar-org/litestar#4169, fixed only in 3.0.
- The handler belongs to the controller, so it inherits the controller's guards
  (litestar-org/litestar#2314): on a controller guarded as a whole, OPTIONS was 401 without a
  bearer token. Which methods a path takes is no secret (the public schema lists them), and a
  browser's CORS preflight never carries credentials.

The final route of each path does know all its methods, so this middleware answers OPTIONS
from it before any guard runs. Handlers of our own that take OPTIONS (the proxy forwards it
upstream) are left alone.
"""

from __future__ import annotations

from litestar.enums import HttpMethod, ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT
from litestar.types import ASGIApp, Receive, RouteHandlerType, Scope, Send


def generated_options_handler(handler: RouteHandlerType | None) -> bool:
    """Whether `handler` is the one Litestar makes for a path without an OPTIONS handler."""
    return (
        isinstance(handler, HTTPRouteHandler)
        and handler.http_methods == {HttpMethod.OPTIONS}
        and getattr(handler.fn, "__module__", None) == HTTPRoute.__module__
    )


class AutomaticOptions:
    """Route middleware: 204 with the full `Allow` for OPTIONS on any route of the API's own."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != ScopeType.HTTP
            or scope["method"] != HttpMethod.OPTIONS
            or not generated_options_handler(scope.get("route_handler"))
        ):
            await self._app(scope, receive, send)
            return
        handler = scope["route_handler"]
        # The app's route for this path is the one holding the handler the router picked (the
        # stale routes that also hold it are no longer the app's). Looked up on each request
        # rather than remembered, since `app.register` may replace the route later; OPTIONS is
        # rare and the scan is short.
        methods = next(
            (
                route.methods
                for route in scope["litestar_app"].routes
                if isinstance(route, HTTPRoute) and any(h is handler for h in route.route_handlers)
            ),
            None,
        )
        if methods is None:  # not reached while Litestar keeps its routes as it does
            await self._app(scope, receive, send)
            return
        allow = ", ".join(sorted(methods))  # OPTIONS included: every route has it
        await send(
            {
                "type": "http.response.start",
                "status": HTTP_204_NO_CONTENT,
                "headers": [(b"allow", allow.encode("latin-1"))],
            }
        )
        await send({"type": "http.response.body", "body": b"", "more_body": False})
