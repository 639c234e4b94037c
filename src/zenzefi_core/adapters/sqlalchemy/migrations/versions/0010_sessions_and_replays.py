"""Login sessions that end, and Idempotency-Key replays that return the tokens' secrets.

- `users.session_version`: every login token carries the version it was issued at, and is
  accepted only while it is still the account's; a password change or a deactivation raises it,
  so every login made before ends at once. Existing rows start at 0, as do tokens issued before
  this revision (they carry no version), so nobody is logged out by the upgrade itself.
- `idempotency_keys.secrets_encrypted`: the access tokens' secrets of a purchase made with an
  `Idempotency-Key`, encrypted with a key derived from the server's secret key, so a retry gets
  the whole first response; a scheduled job deletes keys older than their lifetime, and with
  them the secrets (`created_at` is indexed for it).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("session_version", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("secrets_encrypted", sa.Text(), nullable=True))
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("secrets_encrypted")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("session_version")
