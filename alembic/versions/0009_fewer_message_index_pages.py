"""two fewer index entries per 1:1 message

ix_messages_sender_to_uid_created_at goes: history and unread counts
probe ix_messages_to_uid_sender_created_at in both directions.  The
inbox index covers only messages not yet received, so an
acknowledgement takes an entry out instead of moving it.  On a database
with history each of the two cost every message a page write
(docs/benchmarks.rst, round 4).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 01:30:00
"""

from alembic import op
import sqlalchemy as sa

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_messages_sender_to_uid_created_at", table_name="messages")
    op.create_index(
        "ix_inbox_unreceived",
        "inbox",
        ["uid", "seq"],
        sqlite_where=sa.text("received = 0"),
        postgresql_where=sa.text("received = false"),
    )
    op.drop_index("ix_inbox_uid_received_seq", table_name="inbox")


def downgrade() -> None:
    op.create_index("ix_inbox_uid_received_seq", "inbox", ["uid", "received", "seq"])
    op.drop_index("ix_inbox_unreceived", table_name="inbox")
    op.create_index("ix_messages_sender_to_uid_created_at", "messages", ["sender", "to_uid", "created_at"])
