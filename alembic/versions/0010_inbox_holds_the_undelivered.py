"""the inbox holds only what is undelivered, and answers acknowledgements

An acknowledged 1:1 message's inbox row is deleted instead of marked
received, so the inbox stays as small as what waits for delivery: every
new message's inbox entries then land on the same few hot pages, where
on a table of every message ever received they spread over one page per
recipient (docs/benchmarks.rst, round 6).  The rows already received go,
and with them the index of the unreceived ones, which the primary key
(uid, seq) now equals.  The received column stays (always false): dropping
it would rebuild the table on SQLite.

An acknowledgement names (recipient, msgid): the inbox now holds the msgid
and an index of (uid, msgid), small like the inbox, and messages lose
their index of (to_uid, msgid), which cost every message a page of its
own per recipient.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 08:00:00
"""

from alembic import op
import sqlalchemy as sa

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM inbox WHERE received = TRUE")
    op.drop_index("ix_inbox_unreceived", table_name="inbox")
    # A plain ADD COLUMN, never a batch copy (see 0008).
    op.add_column("inbox", sa.Column("msgid", sa.String(64), server_default="", nullable=False))
    op.execute("UPDATE inbox SET msgid = (SELECT messages.msgid FROM messages WHERE messages.id = inbox.message_id)")
    op.create_index("ix_inbox_uid_msgid", "inbox", ["uid", "msgid"])
    op.drop_index("ix_messages_to_uid_msgid", table_name="messages")


def downgrade() -> None:
    # The deleted rows are not needed back: nothing read a received row.
    op.create_index("ix_messages_to_uid_msgid", "messages", ["to_uid", "msgid"])
    op.drop_index("ix_inbox_uid_msgid", table_name="inbox")
    op.drop_column("inbox", "msgid")
    op.create_index(
        "ix_inbox_unreceived",
        "inbox",
        ["uid", "seq"],
        sqlite_where=sa.text("received = 0"),
        postgresql_where=sa.text("received = false"),
    )
