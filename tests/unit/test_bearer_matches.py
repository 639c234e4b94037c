"""`bearer_matches`: the shared-secret check the API's and the worker's `/metrics` both use."""

from __future__ import annotations

import pytest

from zenzefi_core.security import bearer_matches


@pytest.mark.parametrize(
    "header",
    ["Bearer scrape-me", "bearer scrape-me", "BEARER  scrape-me ", "Bearer scrape-me\t"],
)
def test_the_token_after_a_bearer_scheme_matches(header: str) -> None:
    assert bearer_matches(header, "scrape-me")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong",
        "Bearer scrape-me-not",
        "Basic scrape-me",
        "scrape-me",
        "Bearer scrape-mé",
    ],
)
def test_anything_else_does_not(header: str | None) -> None:
    assert not bearer_matches(header, "scrape-me")
