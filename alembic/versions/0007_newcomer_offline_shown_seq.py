"""users.offline_shown_seq: the last inbox row an offline fetch showed

Seed 001's QID_IM_RECIVE_OFFLINE_MSG names its cursor by a time string of
whole seconds; with this, rows of that second the client was shown are
acknowledged and rows it was not shown are kept.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 05:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("offline_shown_seq", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("offline_shown_seq")
