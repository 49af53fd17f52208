"""give every stored 1:1 message an inbox row

Before imd said BEGIN itself on SQLite, a process killed inside a batch
could leave messages committed without their inbox rows: a resend of one
was acknowledged, yet it never reached offline sync.  Each such message
goes to the end of its recipient's inbox, unreceived, so it is delivered
(at worst twice; clients drop a msgid they already have) rather than lost.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 02:40:00
"""

from alembic import op
from sqlalchemy import text

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    orphans = conn.execute(
        text(
            "SELECT m.id, m.to_uid FROM messages m"
            " LEFT JOIN inbox i ON i.message_id = m.id"
            " WHERE m.to_uid IS NOT NULL AND i.message_id IS NULL ORDER BY m.id"
        )
    ).all()
    seqs: dict[str, int] = {}
    for message_id, uid in orphans:
        if uid not in seqs:
            seqs[uid] = conn.execute(text("SELECT inbox_seq FROM users WHERE uid = :uid"), {"uid": uid}).scalar_one()
        seqs[uid] += 1
        conn.execute(
            text("INSERT INTO inbox (uid, seq, message_id, received) VALUES (:uid, :seq, :id, :received)"),
            {"uid": uid, "seq": seqs[uid], "id": message_id, "received": False},
        )
    for uid, seq in seqs.items():
        conn.execute(text("UPDATE users SET inbox_seq = :seq WHERE uid = :uid"), {"uid": uid, "seq": seq})


def downgrade() -> None:
    # The rows it added are ordinary inbox rows.
    pass
