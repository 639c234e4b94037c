"""Answers have the shape the OpenAPI schema documents for their status (what `nox -s fuzz`
checks at random; these pin the cases it found)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Accounts, ApiClient


def _documented_422(client: ApiClient, path: str, method: str) -> dict[str, Any]:
    schema = client.get("/openapi.json").json()
    response = schema["paths"][path][method]["responses"]["422"]
    ref = response["content"]["application/json"]["schema"]["$ref"]
    return dict(schema["components"]["schemas"][ref.rsplit("/", 1)[1]])


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        # Refused by the core (InvalidInput), not by the request decoder.
        (
            "post",
            "/api/v1/auth/register",
            {"email": "bob@example.com", "username": "bob", "password": "short"},
            "password must be at least",
        ),
        ("patch", "/api/v1/users/me", {"full_name": "Al\x07ice"}, "control characters"),
        (
            "post",
            "/api/v1/webhooks",
            {"url": "https://example.com/hook", "events": [""]},
            "Unknown webhook event",
        ),
    ],
)
def test_a_rule_of_the_core_answers_the_documented_validation_body(
    client: ApiClient,
    accounts: Accounts,
    method: str,
    path: str,
    body: dict[str, Any],
    message: str,
) -> None:
    alice = accounts.register("alice")
    response = client.request(method, path, json=body, headers=alice.headers)
    assert response.status_code == 422, response.text
    answer = response.json()
    documented = _documented_422(client, path, method)
    assert set(documented["required"]) <= set(answer), answer
    assert answer["errors"] == []
    assert message in answer["detail"]
