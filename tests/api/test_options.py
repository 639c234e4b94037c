"""OPTIONS on every documented path: 2xx without credentials, `Allow` naming exactly its methods.

Litestar's generated OPTIONS answer listed only the methods registered first on a path (GET
missing from `/api/v1/bundles`) and ran the controller's guards (401 on guarded controllers);
see zenzefi_api.options. The schema is the list of what each path takes, so every path in it
is checked, and a new route is covered the day it is added.
"""

from __future__ import annotations

import re
from typing import Any
from uuid import uuid4

from tests.api.conftest import ApiClient

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "trace"}
#: The proxy forwards OPTIONS upstream like any method; the proxy's tests cover it.
FORWARDED_PREFIX = "/api/v1/proxy"


def _path_value(schema: dict[str, Any]) -> str:
    """A value the route's path converter accepts, so the request reaches the route."""
    if schema.get("format") == "uuid":
        return str(uuid4())
    if schema.get("type") == "integer":
        return "1"
    return "x"


def _url(template: str, operations: dict[str, Any]) -> str:
    types = {
        parameter["name"]: parameter["schema"]
        for operation in operations.values()
        if isinstance(operation, dict)
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "path"
    }
    return re.sub(r"\{(\w+)\}", lambda match: _path_value(types[match[1]]), template)


def test_options_lists_every_documented_method_without_credentials(client: ApiClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    checked = 0
    wrong = []
    for template, operations in paths.items():
        if template.startswith(FORWARDED_PREFIX):
            continue
        documented = {method.upper() for method in operations if method in HTTP_METHODS}
        response = client.options(_url(template, operations))
        allowed = {m.strip() for m in response.headers.get("allow", "").split(",") if m.strip()}
        if not response.is_success or allowed != documented | {"OPTIONS"}:
            wrong.append((template, response.status_code, response.headers.get("allow")))
        checked += 1
    assert not wrong, wrong
    # Paths with several methods, guarded controllers and path parameters were among them.
    assert {"/api/v1/bundles", "/api/v1/webhooks/{webhook_id}", "/api/v1/users/me"} <= set(paths)
    assert checked > 30


def test_options_on_a_guarded_path_answers_the_same_with_a_bad_token(client: ApiClient) -> None:
    """No guard runs for OPTIONS: a forged token changes nothing (a CORS preflight sends none)."""
    response = client.options("/api/v1/webhooks", headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 204
    assert response.headers["allow"] == "GET, OPTIONS, POST"


def test_the_proxy_still_takes_its_own_options(client: ApiClient) -> None:
    """OPTIONS under the proxy is forwarded, so the proxy's own checks answer, not the API."""
    response = client.options("/api/v1/proxy/some/page")
    assert response.status_code == 403
    assert "allow" not in response.headers
