"""Proxy sessions (one open per token) and the record of reported token expiries.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MOMENT = sa.DateTime(timezone=True)
OPEN = sa.text("ended_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "proxy_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.String(255), nullable=False),
        sa.Column("started_at", MOMENT, nullable=False),
        sa.Column("last_activity", MOMENT, nullable=False),
        sa.Column("ended_at", MOMENT, nullable=True),
        sa.Column("request_count", sa.BigInteger(), nullable=False),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(512), nullable=True),
        sa.CheckConstraint(
            "request_count >= 0 AND bytes_in >= 0 AND bytes_out >= 0",
            name="ck_proxy_sessions_counters_non_negative",
        ),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["access_tokens.id"],
            name="fk_proxy_sessions_token_id_access_tokens",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_proxy_sessions_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_proxy_sessions"),
    )
    op.create_index(
        "ix_proxy_sessions_token_id_open",
        "proxy_sessions",
        ["token_id"],
        unique=True,
        sqlite_where=OPEN,
        postgresql_where=OPEN,
    )
    op.create_index(
        "ix_proxy_sessions_token_id_started_at", "proxy_sessions", ["token_id", "started_at"]
    )
    op.create_index(
        "ix_proxy_sessions_user_id_started_at", "proxy_sessions", ["user_id", "started_at"]
    )
    op.create_index(
        "ix_proxy_sessions_ended_at_last_activity", "proxy_sessions", ["ended_at", "last_activity"]
    )

    op.create_table(
        "token_expiry_reports",
        sa.Column("token_id", sa.Uuid(), nullable=False),
        sa.Column("reported_at", MOMENT, nullable=False),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["access_tokens.id"],
            name="fk_token_expiry_reports_token_id_access_tokens",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_id", name="pk_token_expiry_reports"),
    )


def downgrade() -> None:
    op.drop_table("token_expiry_reports")
    op.drop_index("ix_proxy_sessions_ended_at_last_activity", table_name="proxy_sessions")
    op.drop_index("ix_proxy_sessions_user_id_started_at", table_name="proxy_sessions")
    op.drop_index("ix_proxy_sessions_token_id_started_at", table_name="proxy_sessions")
    op.drop_index("ix_proxy_sessions_token_id_open", table_name="proxy_sessions")
    op.drop_table("proxy_sessions")
