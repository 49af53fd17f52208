"""claims: keys taken once for a while (replayed signed requests)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 03:05:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "claims",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_claims_expires_at", "claims", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_claims_expires_at", table_name="claims")
    op.drop_table("claims")
