"""MkDocs hooks: the generated pages of the documentation site.

- `http-api.md` and `openapi.json` are rendered from `create_app`'s OpenAPI schema at every
  build, so the API reference cannot go stale (`zenzefi_api.openapi_reference`).
- Pages listed in `OPTIONAL_PAGES` appear in the navigation once they exist, so the strict build
  does not fail while they are still being written.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

from zenzefi_api import openapi_reference

OPTIONAL_PAGES = frozenset({"metrics.md", "failure-modes.md", "dashboard.md", "testing.md"})

log = logging.getLogger("mkdocs.hooks.zenzefi")


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    docs = Path(config.docs_dir)
    config.nav = _present(config.nav or [], docs)
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    schema = openapi_reference.build_schema()
    markdown = openapi_reference.render_markdown(schema, schema_file="openapi.json")
    files.append(File.generated(config, "http-api.md", content=markdown))
    files.append(
        File.generated(config, "openapi.json", content=openapi_reference.schema_json(schema))
    )
    return files


def _present(nav: list[Any], docs: Path) -> list[Any]:
    """The navigation without the optional pages that do not exist (yet)."""
    kept: list[Any] = []
    for entry in nav:
        if isinstance(entry, dict):
            ((title, target),) = entry.items()
            if isinstance(target, list):
                kept.append({title: _present(target, docs)})
                continue
            if target in OPTIONAL_PAGES and not (docs / target).exists():
                log.info("%s is not written yet; left out of the navigation", target)
                continue
        kept.append(entry)
    return kept
