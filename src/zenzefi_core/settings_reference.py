"""The configuration reference (`docs/configuration.md`), rendered from the settings classes.

The page is written from `zenzefi_core.settings` itself, so every `ZENZEFI_` variable appears
with the default and constraints the code really has, and its meaning from the `#:` comment
above the field. A unit test fails when the committed page differs from what this renders, so
the reference cannot drift from the code. Regenerate it with

    python -m zenzefi_core.settings_reference docs/configuration.md
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
import textwrap
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from zenzefi_core.settings import Settings

#: The command that rewrites the page; the stale-page test prints it.
REGENERATE = "python -m zenzefi_core.settings_reference docs/configuration.md"

_TYPE_NAMES: dict[Any, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "text",
    Decimal: "decimal",
    Path: "path",
    SecretStr: "secret",
    dict: "JSON object",
    list: "JSON list",
}


@dataclass(frozen=True, slots=True)
class Variable:
    """One environment variable and what the reference says about it."""

    name: str
    kind: str
    default: str
    meaning: str


@dataclass(frozen=True, slots=True)
class Group:
    """One settings class: the variables that share its prefix."""

    prefix: str
    summary: str
    variables: tuple[Variable, ...]


def groups(root: type[BaseSettings] = Settings) -> list[Group]:
    """Every settings class reachable from `root`, root first, then in field order."""
    found = [_group(root)]
    for field in root.model_fields.values():
        nested = _settings_class(field)
        if nested is not None:
            found.extend(groups(nested))
    return found


def variables(root: type[BaseSettings] = Settings) -> list[Variable]:
    return [variable for group in groups(root) for variable in group.variables]


def render(root: type[BaseSettings] = Settings) -> str:
    lines = [
        "# Configuration reference",
        "",
        "<!-- Written by `" + REGENERATE + "`; do not edit by hand. -->",
        "",
        "Zenzefi reads its settings from environment variables once, at start. Every name",
        "starts with `ZENZEFI_`; a variable left unset takes the default shown, which is the",
        "embedded default of `zenzefi serve` (SQLite under `./zenzefi-data`, the in-process",
        "broker and cache, emails written to files). Booleans are `true`/`false` (or `1`/`0`),",
        "amounts are decimals with at most two places (`18.00`), durations are seconds unless",
        "the name says otherwise, and JSON values are written as JSON:",
        "",
        "```sh",
        'export ZENZEFI_TOKENS_PRICES=\'{"24": "18.00", "168": "100.00"}\'',
        "export ZENZEFI_WEBHOOKS_RETRY_DELAYS_SECONDS='[5, 300, 1800]'",
        "```",
        "",
        "A value that breaks a constraint stops the process at start with a message naming the",
        "variable. Every process of one installation (API, worker, scheduler, the `zenzefi`",
        "commands) must see the same values: see [the deployment guide](deployment.md).",
    ]
    for group in groups(root):
        lines += ["", f"## `{group.prefix}*`", ""]
        if group.summary:
            lines += [group.summary, ""]
        lines += ["| variable | type | default | meaning |", "|---|---|---|---|"]
        for v in group.variables:
            cells = (f"`{v.name}`", v.kind, v.default, v.meaning)
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _group(cls: type[BaseSettings]) -> Group:
    prefix = str(cls.model_config.get("env_prefix", ""))
    comments = _field_comments(cls)
    found = []
    for name, field in cls.model_fields.items():
        if _settings_class(field) is not None:
            continue
        found.append(
            Variable(
                name=field.alias or (prefix + name).upper(),
                kind=_kind(field),
                default=_default(field),
                meaning=comments.get(name, ""),
            )
        )
    # Only the class's own docstring: pydantic's base class has a long one about itself.
    doc = cls.__dict__.get("__doc__")
    summary = " ".join(doc.split()) if isinstance(doc, str) else ""
    return Group(prefix=prefix, summary=summary, variables=tuple(found))


def _settings_class(field: FieldInfo) -> type[BaseSettings] | None:
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseSettings):
        return annotation
    return None


def _field_comments(cls: type) -> dict[str, str]:
    """The `#:` comment lines right above each field of the class body, joined."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    comments: dict[str, str] = {}
    (node,) = ast.parse(source).body
    assert isinstance(node, ast.ClassDef)
    for statement in node.body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        above: list[str] = []
        index = statement.lineno - 2  # the line before the field, 0-based
        while index >= 0 and lines[index].strip().startswith("#:"):
            above.insert(0, lines[index].strip()[2:].strip())
            index -= 1
        if above:
            comments[statement.target.id] = " ".join(above)
    return comments


def _kind(field: FieldInfo) -> str:
    annotation, optional = _unwrap_optional(field.annotation)
    origin = typing.get_origin(annotation) or annotation
    kind = _TYPE_NAMES.get(origin, getattr(origin, "__name__", str(origin)))
    limits = list(_limits(field.metadata))
    if limits:
        kind += ", " + ", ".join(limits)
    return kind + (", optional" if optional and field.default is None else "")


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0], True
    return annotation, False


def _limits(metadata: Sequence[Any]) -> Iterator[str]:
    for item in metadata:
        if isinstance(item, annotated_types.Gt):
            yield f"> {item.gt}"
        elif isinstance(item, annotated_types.Ge):
            yield f"≥ {item.ge}"
        elif isinstance(item, annotated_types.Lt):
            yield f"< {item.lt}"
        elif isinstance(item, annotated_types.Le):
            yield f"≤ {item.le}"
        elif isinstance(item, annotated_types.MinLen):
            yield "not empty" if item.min_length == 1 else f"at least {item.min_length} long"
        elif isinstance(item, annotated_types.MaxLen):
            yield f"at most {item.max_length} long"
        elif getattr(item, "pattern", None):
            yield f"matching `{item.pattern}`"


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    return f"`{_literal(value)}`"


def _literal(value: object) -> str:
    """The value as one would write it in the environment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dict | list):
        return json.dumps(_jsonable(value))
    return str(value)


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Decimal):
        return str(value)
    return value


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        print(f"usage: {REGENERATE.replace('docs/configuration.md', 'PATH')}", file=sys.stderr)
        return 2
    Path(args[0]).write_text(render(), encoding="utf-8")
    print(f"Wrote {args[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
