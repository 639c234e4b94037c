"""MkDocs hook: the generated pages of the documentation site.

`http-api.md` and `openapi.json` are rendered from `create_app`'s OpenAPI schema at every
build (`zenzefi_api.openapi_reference`), so the API reference cannot go stale.
"""

from __future__ import annotations

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

from zenzefi_api import openapi_reference


def on_files(files: Files, config: MkDocsConfig) -> Files:
    schema = openapi_reference.build_schema()
    markdown = openapi_reference.render_markdown(schema, schema_file="openapi.json")
    files.append(File.generated(config, "http-api.md", content=markdown))
    files.append(
        File.generated(config, "openapi.json", content=openapi_reference.schema_json(schema))
    )
    return files
