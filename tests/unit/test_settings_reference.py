"""The configuration reference in docs/ is the one the settings classes render, and it names
every `ZENZEFI_` variable the code reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from zenzefi_core import settings_reference
from zenzefi_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "configuration.md"
HINT = f"regenerate it with `{settings_reference.REGENERATE}` (from the repository root)"


def test_the_committed_page_is_what_the_settings_render() -> None:
    assert PAGE.read_text(encoding="utf-8") == settings_reference.render(), (
        f"docs/configuration.md is stale: {HINT}"
    )


def test_every_setting_says_what_it_is_for() -> None:
    undocumented = [v.name for v in settings_reference.variables() if not v.meaning]
    assert not undocumented, (
        f"add a `#:` comment above these fields in zenzefi_core/settings.py: {undocumented}"
    )


def test_every_variable_named_in_the_code_is_in_the_reference() -> None:
    """Catches a variable read outside the settings classes, which the renderer cannot see."""
    page = PAGE.read_text(encoding="utf-8")
    named = set()
    for path in (ROOT / "src").rglob("*.py"):
        for name in re.findall(r"ZENZEFI_[A-Z0-9_]+", path.read_text(encoding="utf-8")):
            # A name ending in `_` is a group's prefix, shown as the group's heading.
            named.add(name + "*" if name.endswith("_") else name)
    missing = sorted(name for name in named if f"`{name}`" not in page)
    assert not missing, f"not in docs/configuration.md: {missing}; {HINT}"


def test_documented_names_set_their_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting a documented variable really changes the settings, so the names the reference
    derives (group prefix, field, alias) are the ones pydantic reads."""
    read = {
        "ZENZEFI_PUBLIC_URL": lambda s: s.public_url,
        "ZENZEFI_DATABASE_URL": lambda s: s.database.url,
        "ZENZEFI_REDIS_NAMESPACE": lambda s: s.redis.namespace,
        "ZENZEFI_SMTP_FROM": lambda s: s.smtp.from_,
        "ZENZEFI_UPSTREAM_URL": lambda s: s.upstream.url,
        "ZENZEFI_PAYMENTS_CHECKOUT_URL": lambda s: s.payments.checkout_url,
    }
    documented = {v.name for v in settings_reference.variables()}
    assert set(read) <= documented
    for name in read:
        monkeypatch.setenv(name, "marker-value")
    configured = Settings()
    assert {name: get(configured) for name, get in read.items()} == dict.fromkeys(
        read, "marker-value"
    )


class _Limits(BaseSettings):
    """Example group."""

    model_config = SettingsConfigDict(env_prefix="EXAMPLE_PART_", extra="ignore")

    #: How many, at most.
    #: Second line.
    count: int = Field(default=3, ge=1, le=9)
    ratio: float = Field(default=0.5, gt=0)
    label: str | None = None
    items: list[float] = Field(default_factory=lambda: [1.0, 2.5])
    named: str = Field(default="x", alias="EXAMPLE_OTHER")


class _Root(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EXAMPLE_", extra="ignore")

    flag: bool = True
    part: _Limits = Field(default_factory=_Limits)


def test_the_renderer_reads_types_limits_defaults_comments_and_aliases() -> None:
    rows = {v.name: v for v in settings_reference.variables(_Root)}
    assert list(rows) == [
        "EXAMPLE_FLAG",
        "EXAMPLE_PART_COUNT",
        "EXAMPLE_PART_RATIO",
        "EXAMPLE_PART_LABEL",
        "EXAMPLE_PART_ITEMS",
        "EXAMPLE_OTHER",
    ]
    assert rows["EXAMPLE_FLAG"].default == "`true`"
    count = rows["EXAMPLE_PART_COUNT"]
    assert (count.kind, count.default) == ("integer, ≥ 1, ≤ 9", "`3`")
    assert count.meaning == "How many, at most. Second line."
    assert rows["EXAMPLE_PART_RATIO"].default == "`0.5`"
    assert rows["EXAMPLE_PART_LABEL"].kind == "text, optional"
    assert rows["EXAMPLE_PART_LABEL"].default == "unset"
    assert rows["EXAMPLE_PART_ITEMS"].default == "`[1, 2.5]`"
    groups = settings_reference.groups(_Root)
    assert [g.prefix for g in groups] == ["EXAMPLE_", "EXAMPLE_PART_"]
    assert groups[1].summary == "Example group."
    assert groups[0].summary == ""
