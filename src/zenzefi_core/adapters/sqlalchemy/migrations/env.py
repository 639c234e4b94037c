"""Alembic environment.

Runs on the engine handed over by `migrate.py`, or, for `alembic` on the command line, on the URL
in `alembic.ini` at the repository root or else ZENZEFI_DATABASE_URL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from zenzefi_core.adapters.sqlalchemy.engine import make_engine, take_write_lock
from zenzefi_core.adapters.sqlalchemy.tables import metadata
from zenzefi_core.settings import Settings

config = context.config


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        # Alone from the first read of the current revision on: two processes starting at
        # once must not both see the schema as old and both change it.
        take_write_lock(connection)
        context.run_migrations()
    connection.commit()


def main() -> None:
    engine = config.attributes.get("engine")
    owned = engine is None
    if engine is None:
        url = config.get_main_option("sqlalchemy.url") or Settings().database_url
        engine = make_engine(url)
    try:
        with engine.connect() as connection:
            run(connection)
    finally:
        if owned:
            engine.dispose()


main()
