"""Access tokens, the bundle catalogue and bundle purchases, and referral bonuses.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(18, 2)
PERCENT = sa.Numeric(5, 2)
MOMENT = sa.DateTime(timezone=True)
KNOWN_SCOPE = "scope IN ('full', 'certificates_only')"


def upgrade() -> None:
    op.create_table(
        "token_bundles",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.Column("duration_hours", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("discount_percent", PERCENT, nullable=False),
        sa.Column("base_price", MONEY, nullable=False),
        sa.Column("total_price", MONEY, nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.CheckConstraint("token_count > 0", name="ck_token_bundles_token_count_positive"),
        sa.CheckConstraint(
            "discount_percent >= 0 AND discount_percent < 100",
            name="ck_token_bundles_discount_in_range",
        ),
        sa.CheckConstraint(
            "total_price > 0 AND total_price <= base_price", name="ck_token_bundles_price_derived"
        ),
        sa.CheckConstraint(KNOWN_SCOPE, name="ck_token_bundles_known_scope"),
        sa.PrimaryKeyConstraint("id", name="pk_token_bundles"),
    )
    op.create_index(
        "ix_token_bundles_is_active_total_price", "token_bundles", ["is_active", "total_price"]
    )

    op.create_table(
        "bundle_purchases",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("bundle_id", sa.Uuid(), nullable=False),
        sa.Column("bundle_name", sa.String(100), nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.Column("duration_hours", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("total_price", MONEY, nullable=False),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.CheckConstraint("total_price > 0", name="ck_bundle_purchases_price_positive"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_bundle_purchases_user_id_users",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["bundle_id"],
            ["token_bundles.id"],
            name="fk_bundle_purchases_bundle_id_token_bundles",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_bundle_purchases"),
    )
    op.create_index(
        "ix_bundle_purchases_user_id_created_at", "bundle_purchases", ["user_id", "created_at"]
    )
    op.create_index("ix_bundle_purchases_bundle_id", "bundle_purchases", ["bundle_id"])

    op.create_table(
        "access_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("token_prefix", sa.String(16), nullable=False),
        sa.Column("duration_hours", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("price_paid", MONEY, nullable=False),
        sa.Column("bundle_purchase_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.Column("activated_at", MOMENT, nullable=True),
        sa.Column("expires_at", MOMENT, nullable=True),
        sa.Column("revoked_at", MOMENT, nullable=True),
        sa.CheckConstraint("duration_hours > 0", name="ck_access_tokens_duration_positive"),
        sa.CheckConstraint("price_paid > 0", name="ck_access_tokens_price_positive"),
        sa.CheckConstraint(KNOWN_SCOPE, name="ck_access_tokens_known_scope"),
        sa.CheckConstraint(
            "(activated_at IS NULL AND expires_at IS NULL) "
            "OR (activated_at IS NOT NULL AND expires_at IS NOT NULL)",
            name="ck_access_tokens_activation_complete",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_access_tokens_user_id_users", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["bundle_purchase_id"],
            ["bundle_purchases.id"],
            name="fk_access_tokens_bundle_purchase_id_bundle_purchases",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_access_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_access_tokens_token_hash"),
    )
    op.create_index(
        "ix_access_tokens_user_id_created_at", "access_tokens", ["user_id", "created_at"]
    )
    op.create_index("ix_access_tokens_bundle_purchase_id", "access_tokens", ["bundle_purchase_id"])
    op.create_index("ix_access_tokens_expires_at", "access_tokens", ["expires_at"])

    op.create_table(
        "referral_bonuses",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("referrer_id", sa.Uuid(), nullable=False),
        sa.Column("referee_id", sa.Uuid(), nullable=False),
        sa.Column("purchase_type", sa.String(32), nullable=False),
        sa.Column("purchase_id", sa.Uuid(), nullable=False),
        sa.Column("purchase_amount", MONEY, nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("clawed_back", MONEY, nullable=False),
        sa.Column("shortfall", MONEY, nullable=False),
        sa.Column("transaction_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_referral_bonuses_amount_positive"),
        sa.CheckConstraint(
            "clawed_back >= 0 AND shortfall >= 0 AND ROUND(clawed_back + shortfall, 2) <= amount",
            name="ck_referral_bonuses_reversal_within_bonus",
        ),
        sa.ForeignKeyConstraint(
            ["referrer_id"],
            ["users.id"],
            name="fk_referral_bonuses_referrer_id_users",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["referee_id"],
            ["users.id"],
            name="fk_referral_bonuses_referee_id_users",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["transactions.id"],
            name="fk_referral_bonuses_transaction_id_transactions",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_referral_bonuses"),
        sa.UniqueConstraint("purchase_id", name="uq_referral_bonuses_purchase_id"),
    )
    op.create_index(
        "ix_referral_bonuses_referrer_id_created_at",
        "referral_bonuses",
        ["referrer_id", "created_at"],
    )
    op.create_index("ix_referral_bonuses_referee_id", "referral_bonuses", ["referee_id"])


def downgrade() -> None:
    op.drop_index("ix_referral_bonuses_referee_id", table_name="referral_bonuses")
    op.drop_index("ix_referral_bonuses_referrer_id_created_at", table_name="referral_bonuses")
    op.drop_table("referral_bonuses")
    op.drop_index("ix_access_tokens_expires_at", table_name="access_tokens")
    op.drop_index("ix_access_tokens_bundle_purchase_id", table_name="access_tokens")
    op.drop_index("ix_access_tokens_user_id_created_at", table_name="access_tokens")
    op.drop_table("access_tokens")
    op.drop_index("ix_bundle_purchases_bundle_id", table_name="bundle_purchases")
    op.drop_index("ix_bundle_purchases_user_id_created_at", table_name="bundle_purchases")
    op.drop_table("bundle_purchases")
    op.drop_index("ix_token_bundles_is_active_total_price", table_name="token_bundles")
    op.drop_table("token_bundles")
