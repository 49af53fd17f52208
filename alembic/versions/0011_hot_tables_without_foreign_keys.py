"""messages and inbox rows name users and messages without foreign keys

Postgres checks each of these keys with a query and a row lock for every
row inserted: in a batch of 500 messages, 4.1 of the 8.5 ms its insert
took, and p2p max went a tenth to a sixth faster without them
(docs/benchmarks.rst, round 8).  Nothing they guarded can happen (see
imd.store.schema).

On SQLite a key is dropped by copying the table, with foreign keys off
(alembic/env.py): copying messages is the slow part, 2.5 s for
450,000 messages on the benchmark machine.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 16:00:00
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Each table's keys: (constraint, column, referred table, referred column).
KEYS = {
    "messages": [
        ("fk_messages_sender_users", "sender", "users", "uid"),
        ("fk_messages_to_uid_users", "to_uid", "users", "uid"),
    ],
    "inbox": [
        ("fk_inbox_uid_users", "uid", "users", "uid"),
        ("fk_inbox_message_id_messages", "message_id", "messages", "id"),
    ],
}


def upgrade() -> None:
    for table, keys in KEYS.items():
        with op.batch_alter_table(table) as batch:
            for name, *_ in keys:
                batch.drop_constraint(name, type_="foreignkey")


def downgrade() -> None:
    for table, keys in KEYS.items():
        with op.batch_alter_table(table) as batch:
            for name, column, referred, referred_column in keys:
                batch.create_foreign_key(name, referred, [column], [referred_column], ondelete="CASCADE")
