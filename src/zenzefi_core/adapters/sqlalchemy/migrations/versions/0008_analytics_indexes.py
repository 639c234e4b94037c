"""Indexes for the usage analytics: every report reads a window of time of one table.

- `users (created_at)`: new users per bucket;
- `transactions (transaction_type, created_at)`: purchases, refunds and referral bonuses per
  bucket, without reading the deposits;
- `proxy_sessions (started_at)`: the global proxy figures and the top users;
- `proxy_sessions (user_id, started_at)` again, now covering on PostgreSQL: one user's month is
  answered from the index alone, without visiting the table once per session;
- `proxy_sessions (user_id) WHERE ended_at IS NULL` and `access_tokens (user_id, expires_at)
  WHERE revoked_at IS NULL`: a user's open sessions and usable tokens, without reading every
  session and token they ever had (100,000 and 10,000 for the heavy user of
  `bench/analytics.py`: 20 ms, now under 1).

On PostgreSQL the session and ledger indexes carry the summed columns (`INCLUDE`), so the
aggregates can run as index-only scans; SQLite has no `INCLUDE` and gets the plain keys.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SESSION_COUNTERS = ["request_count", "bytes_in", "bytes_out"]


def upgrade() -> None:
    op.create_index("ix_users_created_at", "users", ["created_at"])
    op.create_index(
        "ix_transactions_transaction_type_created_at",
        "transactions",
        ["transaction_type", "created_at"],
        postgresql_include=["reference_type", "amount"],
    )
    op.create_index(
        "ix_proxy_sessions_started_at",
        "proxy_sessions",
        ["started_at"],
        postgresql_include=["user_id", *SESSION_COUNTERS],
    )
    op.drop_index("ix_proxy_sessions_user_id_started_at", table_name="proxy_sessions")
    op.create_index(
        "ix_proxy_sessions_user_id_started_at",
        "proxy_sessions",
        ["user_id", "started_at"],
        postgresql_include=[*SESSION_COUNTERS, "ended_at"],
    )
    op.create_index(
        "ix_proxy_sessions_user_id_open",
        "proxy_sessions",
        ["user_id"],
        sqlite_where=sa.text("ended_at IS NULL"),
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_index(
        "ix_access_tokens_user_id_expires_at_usable",
        "access_tokens",
        ["user_id", "expires_at"],
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_access_tokens_user_id_expires_at_usable", table_name="access_tokens")
    op.drop_index("ix_proxy_sessions_user_id_open", table_name="proxy_sessions")
    op.drop_index("ix_proxy_sessions_user_id_started_at", table_name="proxy_sessions")
    op.create_index(
        "ix_proxy_sessions_user_id_started_at", "proxy_sessions", ["user_id", "started_at"]
    )
    op.drop_index("ix_proxy_sessions_started_at", table_name="proxy_sessions")
    op.drop_index("ix_transactions_transaction_type_created_at", table_name="transactions")
    op.drop_index("ix_users_created_at", table_name="users")
