"""Referral shares: a bonus waits for its token's first use before it is paid.

One row per token a referee bought: the token's share of the bonus its purchase earns, pending
until the token is first used (then credited, or forfeited when nothing can be paid) or refunded
(then cancelled). A bonus paid at purchase could be spent before the purchase was refunded, and
the clawback then found nothing to take back: money nobody paid for.

Existing data is left as it is. Bonuses already credited at purchase stay in `referral_bonuses`
and keep their old rule: refunding one of their tokens still reverses its share
(`referral_clawback`), never below zero. No share is created for them, since they were paid
already. `zenzefi check-ledger` reports a referrer who kept more than such a clawback could
take back.

Downgrading drops the table, and with it the shares still pending: those bonuses were never
paid, and the older code does not know them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(18, 2)
MOMENT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "referral_shares",
        sa.Column("token_id", sa.Uuid(), nullable=False),
        sa.Column("referrer_id", sa.Uuid(), nullable=False),
        sa.Column("referee_id", sa.Uuid(), nullable=False),
        sa.Column("purchase_type", sa.String(32), nullable=False),
        sa.Column("purchase_id", sa.Uuid(), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("credited", MONEY, nullable=False),
        sa.Column("transaction_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.Column("settled_at", MOMENT, nullable=True),
        sa.CheckConstraint("amount > 0", name="ck_referral_shares_amount_positive"),
        sa.CheckConstraint(
            "credited >= 0 AND credited <= amount", name="ck_referral_shares_credited_within_share"
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'credited', 'cancelled', 'forfeited')",
            name="ck_referral_shares_known_state",
        ),
        sa.CheckConstraint(
            "(state = 'credited') = (transaction_id IS NOT NULL)",
            name="ck_referral_shares_credited_has_entry",
        ),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["access_tokens.id"],
            name="fk_referral_shares_token_id_access_tokens",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["referrer_id"],
            ["users.id"],
            name="fk_referral_shares_referrer_id_users",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["referee_id"],
            ["users.id"],
            name="fk_referral_shares_referee_id_users",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["transactions.id"],
            name="fk_referral_shares_transaction_id_transactions",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("token_id", name="pk_referral_shares"),
    )
    op.create_index(
        "ix_referral_shares_referrer_id_state", "referral_shares", ["referrer_id", "state"]
    )
    op.create_index(
        "ix_referral_shares_referrer_id_settled_at",
        "referral_shares",
        ["referrer_id", "settled_at"],
    )
    op.create_index("ix_referral_shares_referee_id", "referral_shares", ["referee_id"])


def downgrade() -> None:
    op.drop_index("ix_referral_shares_referee_id", table_name="referral_shares")
    op.drop_index("ix_referral_shares_referrer_id_settled_at", table_name="referral_shares")
    op.drop_index("ix_referral_shares_referrer_id_state", table_name="referral_shares")
    op.drop_table("referral_shares")
