"""The HTTP API reference of the documentation site, rendered from the app's own OpenAPI schema.

The documentation build (`docs/hooks.py`) calls this at every build, so the reference always
describes the routes `create_app` really serves: there is no copy to go stale. It renders plain
Markdown, so the site needs no JavaScript renderer and nothing from the network.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from zenzefi_api.app import create_app
from zenzefi_core.bootstrap import Core
from zenzefi_core.settings import DatabaseSettings, Settings

Schema = Mapping[str, Any]

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_AUTH = {
    "BearerAuth": "`Authorization: Bearer <login token>`",
    "AccessToken": "`X-Access-Token: <access token>`",
}


def build_schema() -> dict[str, Any]:
    """The schema of an app built on a throwaway in-memory database and data folder, so that
    building the docs touches no real installation and writes nothing."""
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            data_dir=Path(data_dir),
            secret_key=SecretStr("documentation-build-only-" + "d" * 32),  # never signs anything
            database=DatabaseSettings(url="sqlite://"),
        )
        core = Core.from_settings(settings)
        try:
            schema: dict[str, Any] = create_app(settings, core).openapi_schema.to_schema()
        finally:
            core.close()
    return schema


def schema_json(schema: Schema) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def render_markdown(schema: Schema, *, schema_file: str = "openapi.json") -> str:
    info = schema.get("info", {})
    lines = [
        "# HTTP API reference",
        "",
        f"{info.get('title', 'API')} {info.get('version', '')}. {info.get('description', '')}",
        "",
        "This page is rendered from the OpenAPI schema of the running code each time the",
        f"documentation is built; the schema itself is [{schema_file}]({schema_file}), and a",
        "running server serves it at `/openapi.json` with an interactive explorer at `/docs`.",
        "[The API guide](api.md) explains authentication, errors, paging and rate limits.",
        "",
        "Authentication, per operation:",
        "",
        "- *none*: public;",
        f"- *bearer*: {_AUTH['BearerAuth']}, from `POST /api/v1/auth/login`;",
        f"- *access token*: {_AUTH['AccessToken']}, an access token bought with "
        "`POST /api/v1/tokens/purchase`.",
        "",
        'Money is a string with two decimals (`"18.00"`); times are ISO 8601 in UTC.',
    ]
    operations = list(_operations(schema))
    for tag in _tags(schema, operations):
        lines += ["", f"## {tag['name']}", ""]
        if tag.get("description"):
            lines += [tag["description"], ""]
        for method, path, operation in operations:
            if _tag_of(operation) == tag["name"]:
                lines += _operation(method, path, operation)
    components = schema.get("components", {}).get("schemas", {})
    if components:
        lines += ["", "## Schemas", ""]
        for name in sorted(components):
            lines += _component(name, components[name])
    return "\n".join(lines).rstrip() + "\n"


def _operations(schema: Schema) -> Iterator[tuple[str, str, Schema]]:
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                yield method, path, item[method]


def _tag_of(operation: Schema) -> str:
    tags = operation.get("tags") or ["Other"]
    return str(tags[0])


def _tags(schema: Schema, operations: list[tuple[str, str, Schema]]) -> list[Schema]:
    """The schema's tags in their declared order, then any used but not declared."""
    declared = list(schema.get("tags", []))
    known = {tag["name"] for tag in declared}
    for _, _, operation in operations:
        name = _tag_of(operation)
        if name not in known:
            declared.append({"name": name})
            known.add(name)
    used = {_tag_of(operation) for _, _, operation in operations}
    return [tag for tag in declared if tag["name"] in used]


def _operation(method: str, path: str, operation: Schema) -> list[str]:
    lines = [f"### {method.upper()} `{path}`", ""]
    summary = operation.get("summary")
    if summary:
        lines += [f"**{summary}**", ""]
    if operation.get("description"):
        lines += [operation["description"], ""]
    lines += [
        f"Authentication: {_security(operation.get('security'))}. "
        f"Operation id: `{operation.get('operationId', '')}`.",
        "",
    ]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
        for p in parameters:
            cells = [
                f"`{p['name']}`",
                p.get("in", ""),
                _type(p.get("schema", {})),
                "yes" if p.get("required") else "no",
                p.get("description") or p.get("schema", {}).get("description", ""),
            ]
            lines.append(_row(cells))
        lines.append("")
    body = operation.get("requestBody")
    if body:
        for media, content in body.get("content", {}).items():
            required = "required" if body.get("required") else "optional"
            lines += [f"Request body ({required}): `{media}`, {_type(content.get('schema', {}))}"]
        lines.append("")
    responses = operation.get("responses", {})
    if responses:
        lines += ["| status | meaning | body |", "|---|---|---|"]
        for status, response in responses.items():
            bodies = [
                f"`{media}` {_type(content.get('schema', {}))}"
                for media, content in response.get("content", {}).items()
            ]
            lines.append(_row([status, response.get("description", ""), ", ".join(bodies)]))
        lines.append("")
    return lines


def _security(requirements: list[Schema] | None) -> str:
    if not requirements:
        return "none"
    names = []
    for requirement in requirements:
        if not requirement:
            names.append("none")
        for scheme in requirement:
            names.append(
                {"BearerAuth": "bearer", "AccessToken": "access token"}.get(scheme, scheme)
            )
    return " or ".join(dict.fromkeys(names))


def _component(name: str, schema: Schema) -> list[str]:
    lines = [f"### {name} {{#{_anchor(name)}}}", ""]
    if schema.get("description"):
        lines += [schema["description"], ""]
    if "enum" in schema:
        lines += ["One of " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"]) + ".", ""]
        return lines
    properties = schema.get("properties")
    if not properties:
        lines += [f"Type: {_type(schema)}.", ""]
        return lines
    required = set(schema.get("required", []))
    lines += ["| field | type | required | description |", "|---|---|---|---|"]
    for field, spec in properties.items():
        description = spec.get("description", "")
        if "default" in spec:
            description = f"{description} Default: `{json.dumps(spec['default'])}`.".strip()
        cells = [f"`{field}`", _type(spec), "yes" if field in required else "no", description]
        lines.append(_row(cells))
    lines.append("")
    return lines


def _type(schema: Schema) -> str:
    """A short, linked description of a JSON schema: `string (uuid)`, `array of [X](#...)`."""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    for key, joint in (("oneOf", " or "), ("anyOf", " or "), ("allOf", " and ")):
        if key in schema:
            text = joint.join(dict.fromkeys(_type(member) for member in schema[key]))
            return _with_format(text, schema)
    if "enum" in schema:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {_type(schema['additionalProperties'])}"
    if kind is None:
        return "any"
    return _with_format(str(kind), schema)


def _with_format(text: str, schema: Schema) -> str:
    notes = [str(schema["format"])] if "format" in schema else []
    if "minLength" in schema:
        notes.append(f"at least {schema['minLength']} characters")
    if "maxLength" in schema:
        notes.append(f"at most {schema['maxLength']} characters")
    if "maxItems" in schema:
        notes.append(f"at most {schema['maxItems']} items")
    if "pattern" in schema:
        notes.append(f"matching `{schema['pattern']}`")
    return f"{text} ({', '.join(notes)})" if notes else text


def _anchor(name: str) -> str:
    return "schema-" + "".join(c if c.isalnum() else "-" for c in name.lower())


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
