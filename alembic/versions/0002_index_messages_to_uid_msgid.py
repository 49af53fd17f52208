"""index messages by recipient and msgid, for acknowledgements

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 06:30:00
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_messages_to_uid_msgid", "messages", ["to_uid", "msgid"])


def downgrade() -> None:
    op.drop_index("ix_messages_to_uid_msgid", table_name="messages")
