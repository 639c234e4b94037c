"""The SQLAlchemy adapter: tables, repositories and unit of work for SQLite and PostgreSQL.

The schema is made only by the Alembic migrations in `migrations/`; `tables.py` describes the
same schema for queries, and a test checks that the two never drift apart.
"""

from zenzefi_core.adapters.sqlalchemy.database import Database
from zenzefi_core.adapters.sqlalchemy.engine import make_engine, normalize_url
from zenzefi_core.adapters.sqlalchemy.migrate import current_revision, downgrade, upgrade
from zenzefi_core.adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork

__all__ = [
    "Database",
    "SqlAlchemyUnitOfWork",
    "current_revision",
    "downgrade",
    "make_engine",
    "normalize_url",
    "upgrade",
]
