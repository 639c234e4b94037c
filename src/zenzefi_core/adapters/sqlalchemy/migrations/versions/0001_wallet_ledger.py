"""Users with their wallet, the ledger, the outbox and idempotency keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(18, 2)
MOMENT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("username", sa.String(50), nullable=False),
        sa.Column("username_lower", sa.String(50), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("full_name", sa.String(200), nullable=True),
        sa.Column("referral_code", sa.String(12), nullable=False),
        sa.Column("referred_by_id", sa.Uuid(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("is_superuser", sa.Boolean(), nullable=False),
        sa.Column("balance", MONEY, nullable=False),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.CheckConstraint("balance >= 0", name="ck_users_balance_non_negative"),
        sa.ForeignKeyConstraint(
            ["referred_by_id"],
            ["users.id"],
            name="fk_users_referred_by_id_users",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
        sa.UniqueConstraint("username_lower", name="uq_users_username_lower"),
        sa.UniqueConstraint("referral_code", name="uq_users_referral_code"),
    )
    op.create_index("ix_users_referred_by_id", "users", ["referred_by_id"])

    op.create_table(
        "transactions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("balance_after", MONEY, nullable=False),
        sa.Column("transaction_type", sa.String(32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("reference_type", sa.String(32), nullable=False),
        sa.Column("reference_id", sa.String(64), nullable=False),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.CheckConstraint("amount <> 0", name="ck_transactions_amount_non_zero"),
        sa.CheckConstraint("balance_after >= 0", name="ck_transactions_balance_after_non_negative"),
        sa.CheckConstraint(
            "reference_type <> '' AND reference_id <> ''", name="ck_transactions_has_cause"
        ),
        sa.CheckConstraint(
            "transaction_type IN ('deposit', 'purchase', 'refund', 'referral_bonus', "
            "'referral_clawback', 'adjustment')",
            name="ck_transactions_known_type",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_transactions_user_id_users", ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_transactions"),
    )
    op.create_index("ix_transactions_user_id_created_at", "transactions", ["user_id", "created_at"])
    op.create_index(
        "ix_transactions_reference_type_reference_id",
        "transactions",
        ["reference_type", "reference_id"],
    )

    op.create_table(
        "outbox_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.Column("dispatched_at", MOMENT, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_outbox_events_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_outbox_events"),
    )
    op.create_index(
        "ix_outbox_events_dispatched_at_created_at",
        "outbox_events",
        ["dispatched_at", "created_at"],
    )

    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_idempotency_keys_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "key", name="pk_idempotency_keys"),
    )


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_index("ix_outbox_events_dispatched_at_created_at", table_name="outbox_events")
    op.drop_table("outbox_events")
    op.drop_index("ix_transactions_reference_type_reference_id", table_name="transactions")
    op.drop_index("ix_transactions_user_id_created_at", table_name="transactions")
    op.drop_table("transactions")
    op.drop_index("ix_users_referred_by_id", table_name="users")
    op.drop_table("users")
