"""Build and test sessions. `nox` with no arguments lints, fuzzes the API and runs the whole
test suite."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "fuzz", "tests", "docs"]
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = False

PYTHON = None  # the interpreter nox itself runs on (3.11 or newer)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint and format), mypy, and the import-linter architecture contracts."""
    session.install("-e", ".[dev]")
    linted = ("src", "tests", "examples", "docs/hooks.py", "noxfile.py")
    session.run("ruff", "check", *linted)
    session.run("ruff", "format", "--check", *linted)
    session.run("mypy")
    session.run("lint-imports")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite on SQLite and the stub broker, plus PostgreSQL and Redis when
    reachable (required, not skipped, when ZENZEFI_REQUIRE_SERVICES=1)."""
    session.install("-e", ".[dev]")
    workers = os.environ.get("ZENZEFI_TEST_WORKERS", "auto")
    session.run("pytest", "-n", workers, *session.posargs)


@nox.session(python=PYTHON)
def fuzz(session: nox.Session) -> None:
    """Schemathesis against the live API, as a user, as an operator and without a login: fails
    on any 5xx, an undocumented status, a body or content type the schema does not describe, or
    a broken ledger. ZENZEFI_FUZZ_EXAMPLES (default 25 per operation) and ZENZEFI_FUZZ_SEED
    tune it."""
    session.install("-e", ".[server]", "schemathesis>=4.32,<5")
    session.run("python", "tests/fuzz/run_schemathesis.py", *session.posargs)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The documentation site (MkDocs) into site/, built strictly: a broken link or anchor, a
    page missing from disk or a failing hook (the API reference is rendered from the OpenAPI
    schema at build time) fails it."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--clean", env={"NO_MKDOCS_2_WARNING": "1"})
