"""Health, the OpenAPI schema and docs, error bodies, request logging and the body limit."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.api.conftest import ApiClient, make_settings, running
from zenzefi_api.app import create_app
from zenzefi_core.adapters.sqlalchemy import Database
from zenzefi_core.settings import UpstreamSettings


def test_health_is_healthy_with_a_timestamp(client: ApiClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "timestamp"}
    assert body["status"] == "healthy"
    moment = datetime.fromisoformat(body["timestamp"])
    assert moment.utcoffset() is not None
    assert body["timestamp"].endswith("+00:00")


class _Quiet(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_health_checks_the_upstream_when_one_is_configured(
    tmp_path, engine, core, upstream
) -> None:
    reachable = make_settings(tmp_path, engine, upstream=UpstreamSettings(url=upstream))
    with running(create_app(reachable, core)) as client:
        # Any HTTP answer, even a 404, means the server is there.
        assert client.get("/health").json()["status"] == "healthy"

    # Port 9 (discard) has nobody listening: connection refused at once.
    gone = make_settings(tmp_path, engine, upstream=UpstreamSettings(url="http://127.0.0.1:9/"))
    with running(create_app(gone, core)) as client:
        response = client.get("/health")
        assert response.status_code == 200
        assert response.json()["status"] == "degraded"


def test_a_database_outage_is_503_everywhere_and_says_nothing_internal(
    client: ApiClient, core, accounts
) -> None:
    user = accounts.register("alice")
    working = core.database
    core.database = Database("postgresql://zenzefi@127.0.0.1:9/secret_db_name?connect_timeout=2")
    client.allowed_server_errors = {503}
    try:
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unhealthy"
        for response in [
            client.get("/api/v1/users/me", headers=user.headers),
            client.post(
                "/api/v1/auth/login", json={"email": user.email, "password": user.password}
            ),
        ]:
            assert response.status_code == 503
            assert response.headers["retry-after"]
            assert response.json() == {
                "status_code": 503,
                "detail": "The service is temporarily unavailable, please retry shortly",
            }
            assert "127.0.0.1" not in response.text
            assert "secret_db_name" not in response.text
    finally:
        core.database.dispose()
        core.database = working
    client.allowed_server_errors = set()
    assert client.get("/health").json()["status"] == "healthy"


def test_an_unexpected_error_is_a_bare_500(client: ApiClient, core, accounts, monkeypatch) -> None:
    user = accounts.register("alice")

    def explode(*_: object) -> None:
        raise RuntimeError("SELECT * FROM users -- at db.internal.example:5432")

    monkeypatch.setattr("zenzefi_core.services.users.IdentifyUser.__call__", explode)
    client.allowed_server_errors = {500}
    response = client.get("/api/v1/currency/balance", headers=user.headers)
    assert response.status_code == 500
    assert response.json() == {"status_code": 500, "detail": "Internal server error"}


#: Routes that take no bearer token: logging in, and the provider's signed callback.
UNAUTHENTICATED = (
    "/api/v1/auth/",
    "/api/v1/payments/webhook",
    # A signed link from an email: its token is the credential.
    "/api/v1/notifications/unsubscribe",
)
#: Public reads: the bundle catalogue (whose withdrawn bundles need an operator's bearer).
PUBLIC = {("GET", "/api/v1/bundles"), ("GET", "/api/v1/bundles/{bundle_id}")}
#: The proxy takes an access token (X-Access-Token), never a login bearer.
ACCESS_TOKEN_ROUTES = "/api/v1/proxy"


def test_openapi_schema_describes_every_route(client: ApiClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.1")
    assert schema["components"]["securitySchemes"]["BearerAuth"]["scheme"] == "bearer"
    operations = {
        (method.upper(), path): operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }
    expected = {
        ("GET", "/health"),
        ("POST", "/api/v1/auth/register"),
        ("POST", "/api/v1/auth/login"),
        ("GET", "/api/v1/users/me"),
        ("PATCH", "/api/v1/users/me"),
        ("GET", "/api/v1/users/me/referrals"),
        ("GET", "/api/v1/currency/balance"),
        ("GET", "/api/v1/currency/transactions"),
        ("GET", "/api/v1/admin/users"),
        ("GET", "/api/v1/admin/users/{user_id}"),
        ("POST", "/api/v1/admin/users/{user_id}/credit"),
        ("POST", "/api/v1/admin/users/{user_id}/activate"),
        ("POST", "/api/v1/admin/users/{user_id}/deactivate"),
        ("POST", "/api/v1/admin/users/{user_id}/grant-superuser"),
        ("POST", "/api/v1/admin/users/{user_id}/revoke-superuser"),
        ("GET", "/api/v1/admin/audit-log"),
        ("POST", "/api/v1/currency/purchase"),
        ("GET", "/api/v1/currency/payments"),
        ("GET", "/api/v1/currency/payments/{payment_id}"),
        ("POST", "/api/v1/payments/webhook"),
        ("POST", "/api/v1/admin/payments/{payment_id}/settle"),
        ("POST", "/api/v1/tokens/purchase"),
        ("GET", "/api/v1/tokens/my-tokens"),
        ("DELETE", "/api/v1/tokens/{token_id}"),
        ("GET", "/api/v1/bundles"),
        ("POST", "/api/v1/bundles"),
        ("GET", "/api/v1/bundles/{bundle_id}"),
        ("PATCH", "/api/v1/bundles/{bundle_id}"),
        ("DELETE", "/api/v1/bundles/{bundle_id}"),
        ("POST", "/api/v1/bundles/{bundle_id}/purchase"),
        ("GET", "/api/v1/proxy/status"),
        ("GET", "/api/v1/proxy"),
        ("GET", "/api/v1/proxy/{path}"),
        ("POST", "/api/v1/proxy/{path}"),
    }
    assert expected <= set(operations)
    ids = [operation["operationId"] for operation in operations.values()]
    assert len(ids) == len(set(ids))
    for (method, path), operation in operations.items():
        assert operation["tags"], (method, path)
        codes = set(operation["responses"])
        assert any(code.startswith("2") for code in codes), (method, path)
        public = path.startswith(UNAUTHENTICATED) or (method, path) in PUBLIC
        if path.startswith(ACCESS_TOKEN_ROUTES):
            assert operation["security"] == [{"AccessToken": []}], (method, path)
            assert "401" in codes, (method, path)
        elif path.startswith("/api/v1/") and not public:
            assert operation["security"] == [{"BearerAuth": []}], (method, path)
            assert {"401", "403"} <= codes, (method, path)
    assert "422" in operations[("POST", "/api/v1/auth/register")]["responses"]
    assert "429" in operations[("POST", "/api/v1/auth/login")]["responses"]
    assert "402" in operations[("POST", "/api/v1/admin/users/{user_id}/credit")]["responses"]
    assert "503" in operations[("GET", "/health")]["responses"]


def test_interactive_docs_are_served(client: ApiClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "swagger" in page.text.lower()
    assert client.get("/docs/openapi.json").status_code == 200


def test_unknown_routes_and_methods_answer_json(client: ApiClient) -> None:
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json() == {"status_code": 404, "detail": "Not Found"}
    wrong_method = client.delete("/api/v1/currency/balance")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["detail"]


def test_malformed_json_is_400(client: ApiClient) -> None:
    response = client.post(
        "/api/v1/auth/register",
        content=b'{"email": ',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["status_code"] == 400


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"email": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001],
)
def test_absurdly_nested_json_is_400(client: ApiClient, body: bytes) -> None:
    response = client.post(
        "/api/v1/auth/register", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "Request body is nested too deeply"


def test_bodies_over_the_limit_are_413(tmp_path, engine, core) -> None:
    small = make_settings(tmp_path, engine, max_request_bytes=1024)
    with running(create_app(small, core)) as client:
        padded = {"email": "a@example.com", "username": "alice", "password": "x" * 2000}
        response = client.post("/api/v1/auth/register", json=padded)
        assert response.status_code == 413
        assert response.json()["status_code"] == 413


def test_the_default_body_limit_is_one_mebibyte(client: ApiClient) -> None:
    response = client.post(
        "/api/v1/auth/login",
        content=b'{"email": "' + b"a" * (1024 * 1024) + b'"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413


def test_every_request_is_logged_as_one_json_line(client: ApiClient, caplog) -> None:
    caplog.set_level(logging.INFO, logger="zenzefi.access")
    response = client.get("/api/v1/nothing-here", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert generated.headers["x-request-id"] != "bad id\twith spaces"

    records = [r for r in caplog.records if r.name == "zenzefi.access"]
    fields = [r.fields for r in records]
    assert fields[0]["path"] == "/api/v1/nothing-here"
    assert fields[0]["status"] == 404
    assert fields[0]["request_id"] == "abc-123"
    assert fields[0]["method"] == "GET"
    assert fields[1]["status"] == 200
    assert fields[1]["duration_ms"] >= 0

    from zenzefi_api.access_log import JsonFormatter

    line = JsonFormatter().format(records[0])
    parsed = json.loads(line)
    assert parsed["event"] == "request"
    assert parsed["level"] == "info"
    assert "\n" not in line
