"""Litestar REST API, access proxy and the `zenzefi` command line, thin over zenzefi_core.

`create_app` is imported on first use, so `zenzefi migrate` and the other database commands work
where only the core is installed (no Litestar).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zenzefi_api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from zenzefi_api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
