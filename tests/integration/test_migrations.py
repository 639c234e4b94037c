"""The migrations: every revision upgrades, downgrades and upgrades again (the stairway), the
chain goes back to an empty database, and the schema at head is exactly what tables.py says."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Engine, inspect

from zenzefi_core.adapters.sqlalchemy import current_revision, downgrade, make_engine, upgrade
from zenzefi_core.adapters.sqlalchemy.migrate import alembic_config
from zenzefi_core.adapters.sqlalchemy.tables import metadata


@pytest.fixture
def blank_engine(blank_database_url: str) -> Iterator[Engine]:
    engine = make_engine(blank_database_url)
    yield engine
    engine.dispose()


def revisions(engine: Engine) -> list[Script]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(alembic_config(engine))
    return list(reversed(list(script.walk_revisions("base", "heads"))))


def schema(engine: Engine) -> dict[str, Any]:
    """The application's tables: columns, indexes, unique constraints and foreign keys."""
    inspector = inspect(engine)
    return {
        table: {
            "columns": sorted(column["name"] for column in inspector.get_columns(table)),
            "indexes": sorted(str(index["name"]) for index in inspector.get_indexes(table)),
            "unique": sorted(str(u["name"]) for u in inspector.get_unique_constraints(table)),
            "foreign_keys": sorted(
                (tuple(fk["constrained_columns"]), fk["referred_table"])
                for fk in inspector.get_foreign_keys(table)
            ),
        }
        for table in sorted(inspector.get_table_names())
        if table != "alembic_version"
    }


def test_the_history_is_one_line(blank_engine: Engine) -> None:
    script = ScriptDirectory.from_config(alembic_config(blank_engine))
    assert len(script.get_heads()) == 1, f"several heads: {script.get_heads()}"
    assert len(script.get_bases()) == 1, f"several bases: {script.get_bases()}"
    chain = revisions(blank_engine)
    assert chain[0].down_revision is None
    for previous, current in itertools.pairwise(chain):
        assert current.down_revision == previous.revision


def test_stairway_up_down_up_for_every_revision(blank_engine: Engine) -> None:
    chain = revisions(blank_engine)
    assert chain, "no migrations found"
    before = schema(blank_engine)
    assert before == {}
    for script in chain:
        upgrade(blank_engine, script.revision)
        assert current_revision(blank_engine) == script.revision
        after = schema(blank_engine)
        assert after != before, f"revision {script.revision} changed nothing"

        downgrade(blank_engine, script.down_revision or "base")  # type: ignore[arg-type]
        assert current_revision(blank_engine) == script.down_revision
        assert schema(blank_engine) == before, f"downgrade of {script.revision} is not exact"

        upgrade(blank_engine, script.revision)
        assert current_revision(blank_engine) == script.revision
        assert schema(blank_engine) == after
        before = after

    downgrade(blank_engine, "base")
    assert current_revision(blank_engine) is None
    assert set(inspect(blank_engine).get_table_names()) == {"alembic_version"}


def test_upgrade_to_head_is_idempotent(blank_engine: Engine) -> None:
    upgrade(blank_engine)
    first = schema(blank_engine)
    upgrade(blank_engine)
    assert schema(blank_engine) == first
    assert current_revision(blank_engine) == revisions(blank_engine)[-1].revision


def test_the_migrations_match_the_tables(blank_engine: Engine) -> None:
    upgrade(blank_engine)
    with blank_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert differences == []
    # The comparison ignores tables the metadata does not know; there must be none.
    assert set(inspect(blank_engine).get_table_names()) == {
        *metadata.tables,
        "alembic_version",
    }
