"""The dashboard's pages and assets as the server sends them: the security headers, everything a
page names is served from this origin, nothing inline for the CSP to refuse, and 404 (never a
500) for anything else under /dashboard. What the pages show is checked in a real browser
(test_dashboard_browser.py).

The pages read no database, so one app on SQLite serves the whole module (the client still fails
a test on any 5xx)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from pydantic import SecretStr

import zenzefi_api
from tests.api.conftest import SECRET_KEY, ApiClient, running
from zenzefi_api.app import create_app
from zenzefi_core.bootstrap import Core
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.settings import DatabaseSettings, Settings

PAGES = ["/dashboard", "/dashboard/admin"]
STATIC = Path(zenzefi_api.__file__).parent / "static" / "dashboard"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiClient]:
    directory = tmp_path_factory.mktemp("dashboard-pages")
    settings = Settings(
        data_dir=directory / "data",
        secret_key=SecretStr(SECRET_KEY),
        database=DatabaseSettings(url=f"sqlite:///{directory / 'zenzefi.db'}"),
    )
    core = Core.from_settings(settings, hasher=fast_password_hasher())
    with running(create_app(settings, core)) as client:
        yield client
    core.close()


class Page(HTMLParser):
    """What a page asks the browser to load, and anything the CSP would block."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            if values.get("src"):
                self.urls.append(str(values["src"]))
            else:
                self.inline.append("inline <script>")
        if tag == "link" and values.get("href"):
            self.urls.append(str(values["href"]))
        if tag == "style":
            self.inline.append("inline <style>")
        self.inline.extend(
            f"{tag} {name}=" for name, _ in attrs if name == "style" or name.startswith("on")
        )


def _parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


@pytest.mark.parametrize("path", PAGES)
def test_pages_are_html_with_a_strict_content_security_policy(client: ApiClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = {
        directive.split()[0]: directive.split()[1:]
        for directive in response.headers["content-security-policy"].split(";")
    }
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    # The same page with a trailing slash or a query string, not a 404 or a 500.
    assert client.get(f"{path}/").status_code == 200
    assert client.get(path, params={"x": "<script>"}).text == response.text


@pytest.mark.parametrize("path", PAGES)
def test_everything_a_page_names_is_served_here_and_nothing_is_inline(
    client: ApiClient, path: str
) -> None:
    page = _parse(client.get(path).text)
    assert page.inline == []
    assert page.urls, "a page without its scripts and styles"
    types = {
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".svg": "image/svg+xml",
    }
    for url in page.urls:
        assert url.startswith("/dashboard/assets/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"] == types[Path(url).suffix], url
        assert asset.headers["x-content-type-options"] == "nosniff"
        assert asset.headers["cache-control"] == "no-cache"


def test_the_scripts_import_only_scripts_that_are_shipped(client: ApiClient) -> None:
    """A module import of a missing file would break a page only in a browser; catch it here."""
    for script in (STATIC / "assets").glob("*.js"):
        for name in re.findall(r'from "\./([^"]+)"', script.read_text()):
            assert client.get(f"/dashboard/assets/{name}").status_code == 200, (script, name)


def test_chartjs_is_vendored_with_its_licence(client: ApiClient) -> None:
    library = client.get("/dashboard/assets/vendor/chart.umd.min.js")
    assert library.status_code == 200
    assert re.match(r"/\*!\s+\* Chart\.js v4\.", library.text)
    assert "MIT License" in (STATIC / "assets" / "vendor" / "chart.js-LICENSE.md").read_text()


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/nothing",
        "/dashboard/admin/nothing",
        "/dashboard/assets/nothing.js",
        "/dashboard/assets/",
        "/dashboard/assets/vendor",
        "/dashboard/assets/../index.html",
        "/dashboard/assets/%2e%2e/%2e%2e/dashboard.py",
        "/dashboard/assets/..%2f..%2f__init__.py",
        "/dashboard/index.html",
        "/dashboard/assets/%00",
        "/dashboard/assets/common.js%00.css",
        "/dashboard/assets/" + "a" * 5000 + ".js",
        "/dashboard/assets/%ff%fe.js",
    ],
)
def test_anything_else_under_dashboard_is_404(client: ApiClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_an_unchanged_file_is_answered_304(client: ApiClient) -> None:
    """Revalidation, not a fresh download, on every visit (`Cache-Control: no-cache`)."""
    for path in ["/dashboard", "/dashboard/assets/vendor/chart.umd.min.js"]:
        first = client.get(path)
        etag = first.headers["etag"]
        again = client.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["content-security-policy"] == first.headers["content-security-policy"]
        assert client.get(path, headers={"If-None-Match": '"stale"'}).content == first.content


def test_the_pages_only_answer_get(client: ApiClient) -> None:
    assert client.post("/dashboard", data={"email": "a", "password": "b"}).status_code == 405
    assert client.delete("/dashboard/admin").status_code == 405
