"""the inbox holds only what is undelivered

An acknowledged 1:1 message's inbox row is deleted instead of marked
received, so the inbox stays as small as what waits for delivery: every
new message's inbox entries then land on the same few hot pages, where
on a table of every message ever received they spread over one page per
recipient (docs/benchmarks.rst, round 6).  The rows already received go,
and with them the index of the unreceived ones, which the primary key
(uid, seq) now equals.  The received column stays (always false): dropping
it would rebuild the table on SQLite.

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


def downgrade() -> None:
    # The deleted rows are not needed back: nothing read a received row.
    op.create_index(
        "ix_inbox_unreceived",
        "inbox",
        ["uid", "seq"],
        sqlite_where=sa.text("received = 0"),
        postgresql_where=sa.text("received = false"),
    )
