"""users.admin: who may use the admin console

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 05:00:00
"""

from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN, never a batch copy: on SQLite, copying users
    # would drop the old table and cascade to every row that refers to it.
    op.add_column("users", sa.Column("admin", sa.Boolean(), server_default=sa.text("false"), nullable=False))


def downgrade() -> None:
    op.drop_column("users", "admin")
