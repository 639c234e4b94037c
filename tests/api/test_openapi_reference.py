"""The HTTP API reference of the documentation site covers what a running server serves."""

from __future__ import annotations

import re

from tests.api.conftest import ApiClient
from zenzefi_api import openapi_reference


def test_the_docs_schema_is_the_running_servers(client: ApiClient) -> None:
    """The docs build makes its app on a throwaway database; the schema must not depend on it."""
    served = client.get("/openapi.json").json()
    assert openapi_reference.build_schema() == served


def test_the_reference_shows_every_operation_and_resolves_every_schema_link() -> None:
    schema = openapi_reference.build_schema()
    markdown = openapi_reference.render_markdown(schema)
    headings = set(re.findall(r"^### ([A-Z]+) `([^`]+)`$", markdown, flags=re.MULTILINE))
    operations = {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in openapi_reference._METHODS
    }
    assert operations
    assert headings == operations
    anchors = set(re.findall(r"\{#(schema-[a-z0-9-]+)\}", markdown))
    links = set(re.findall(r"\]\(#(schema-[a-z0-9-]+)\)", markdown))
    assert len(anchors) == len(schema["components"]["schemas"])
    assert links
    assert links <= anchors


def test_types_render_refs_unions_arrays_and_limits() -> None:
    render = openapi_reference._type
    assert render({"$ref": "#/components/schemas/TokenOut"}) == "[TokenOut](#schema-tokenout)"
    assert render({"oneOf": [{"type": "string"}, {"type": "null"}], "format": "uuid"}) == (
        "string or null (uuid)"
    )
    assert render({"type": "array", "items": {"type": "integer"}, "maxItems": 3}) == (
        "array of integer"
    )
    assert render({"type": "string", "maxLength": 64}) == "string (at most 64 characters)"
    assert render({"enum": ["a", "b"]}) == 'one of `"a"`, `"b"`'
    assert render({}) == "any"
