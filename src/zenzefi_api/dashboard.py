"""The dashboard: two static pages and their assets, served by the API itself.

The pages are plain HTML that log in with the API's own login route and then read the JSON API
with the bearer token kept in the tab's `sessionStorage`; the server renders nothing per user,
so the pages add no second way to authenticate and nothing to keep in step with the API. Every
asset, the charting library included (`assets/vendor`, see its README), ships inside the
package: the pages work on a machine with no Internet access.

The Content-Security-Policy allows scripts, styles and requests from this origin only and no
inline script at all, so even a value that slipped into the page unescaped could not run.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from litestar import Controller, Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

DASHBOARD_PATH = "/dashboard"
ASSETS_PATH = f"{DASHBOARD_PATH}/assets"
_PAGES = Path(__file__).parent / "static" / "dashboard"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

#: On the pages and on every asset: a script or stylesheet is never sniffed into another type,
#: and no page is framed or leaks its address to another site.
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@cache
def _page(name: str) -> str:
    """A page's HTML, read from the package once: the files never change while serving."""
    return (_PAGES / name).read_text(encoding="utf-8")


def _html(name: str) -> Response[str]:
    # `no-cache` (revalidate, not "never store"): after an upgrade the next visit gets the new
    # page, which names the new assets.
    return Response(
        _page(name),
        media_type="text/html; charset=utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
    )


class DashboardController(Controller):
    path = DASHBOARD_PATH
    include_in_schema = False

    @get(sync_to_thread=False)
    def user_page(self) -> Response[str]:
        """The login form, then the user's balance, tokens, usage and referrals."""
        return _html("index.html")

    @get("/admin", sync_to_thread=False)
    def admin_page(self) -> Response[str]:
        """Revenue, purchases and traffic for operators; others are told it is not for them."""
        return _html("admin.html")


def _add_security_headers(response: Response[object]) -> Response[object]:
    response.headers.update(SECURITY_HEADERS)
    return response


#: Scripts, styles and the vendored Chart.js. Revalidated on each use, like the pages, so an
#: upgrade never pairs a new page with an old script; an unknown file is 404.
dashboard_assets: Router = create_static_files_router(
    path=ASSETS_PATH,
    directories=[_PAGES / "assets"],
    name="dashboard-assets",
    cache_control=CacheControlHeader(no_cache=True),
    after_request=_add_security_headers,
    include_in_schema=False,
)

#: Everything the app registers for the dashboard.
DASHBOARD_HANDLERS = [DashboardController, dashboard_assets]
