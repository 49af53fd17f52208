"""SCRAM keys beside the password hash, for XMPP logins (seed 002)

Accounts that exist before this revision have none; they get theirs at
their next password login on any channel.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 03:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scram_keys",
        sa.Column("uid", sa.String(50), sa.ForeignKey("users.uid", ondelete="CASCADE", name="fk_scram_keys_uid_users")),
        sa.Column("mechanism", sa.String(32)),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("iterations", sa.Integer, nullable=False),
        sa.Column("stored_key", sa.String(128), nullable=False),
        sa.Column("server_key", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("uid", "mechanism", name="pk_scram_keys"),
    )


def downgrade() -> None:
    op.drop_table("scram_keys")
