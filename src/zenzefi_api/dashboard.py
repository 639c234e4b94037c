"""The dashboard: two static pages and their assets, served by the API itself.

The pages are plain HTML that log in with the API's own login route and then read the JSON API
with the bearer token kept in the tab's `sessionStorage`; the server renders nothing per user,
so the pages add no second way to authenticate and nothing to keep in step with the API. Every
asset, the charting library included (`assets/vendor`, see its README), ships inside the
package: the pages work on a machine with no Internet access.

The Content-Security-Policy allows scripts, styles and requests from this origin only and no
inline script at all, so even a value that slipped into the page unescaped could not run.

Pages and assets are read into memory when the module loads and looked up by name, so a request
never reaches the file system: no path can escape the directory, and odd names (a NUL byte, a
name too long for the file system) are a plain 404 rather than an error from the OS.
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

DASHBOARD_PATH = "/dashboard"
_FILES = Path(__file__).parent / "static" / "dashboard"

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
#: no page is framed or leaks its address to another site, and everything is revalidated on
#: each use (`no-cache` with an ETag, not "never store"), so after an upgrade a page never runs
#: with an old script.
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}

#: Litestar adds `charset=utf-8` to the text types (the files are UTF-8).
_MEDIA_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str

    @classmethod
    def read(cls, path: Path) -> StaticFile:
        body = path.read_bytes()
        return cls(body, _MEDIA_TYPES[path.suffix], f'"{sha256(body).hexdigest()[:32]}"')


def _assets(root: Path) -> dict[str, StaticFile]:
    """Every servable file under `root`, by its path relative to it (`vendor/chart.umd.min.js`)."""
    return {
        path.relative_to(root).as_posix(): StaticFile.read(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix in _MEDIA_TYPES
    }


PAGES = {name: StaticFile.read(_FILES / f"{name}.html") for name in ("index", "admin")}
ASSETS = _assets(_FILES / "assets")


def _send(request: Request[Any, Any, Any], file: StaticFile) -> Response[bytes]:
    headers = {**HEADERS, "ETag": file.etag}
    if request.headers.get("if-none-match") == file.etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)


class DashboardController(Controller):
    path = DASHBOARD_PATH
    include_in_schema = False

    @get(sync_to_thread=False)
    def user_page(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """The login form, then the user's balance, tokens, usage and referrals."""
        return _send(request, PAGES["index"])

    @get("/admin", sync_to_thread=False)
    def admin_page(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Revenue, purchases and traffic for operators; others are told it is not for them."""
        return _send(request, PAGES["admin"])

    @get("/assets/{name:path}", sync_to_thread=False)
    def asset(self, request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
        """Scripts, the stylesheet, the icon and the vendored Chart.js; anything else is 404."""
        file = ASSETS.get(name.lstrip("/"))
        if file is None:
            raise NotFoundException()
        return _send(request, file)
