"""apps of the server API, custom notifications kept offline, permanent
tokens, outbox claims and the receipts index of unread counts (seed 003)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 03:00:00
"""

from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column("app_key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("secret", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("app_key", name=op.f("pk_apps")),
        sa.UniqueConstraint("name", name=op.f("uq_apps_name")),
    )
    op.create_table(
        "notices",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("uid", sa.String(length=50), nullable=False),
        sa.Column("sender", sa.String(length=50), nullable=False),
        sa.Column("gid", sa.String(length=50), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("badge", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("received", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.ForeignKeyConstraint(["gid"], ["groups.gid"], name=op.f("fk_notices_gid_groups"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["sender"], ["users.uid"], name=op.f("fk_notices_sender_users"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["uid"], ["users.uid"], name=op.f("fk_notices_uid_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notices")),
    )
    op.create_index("ix_notices_uid_received_id", "notices", ["uid", "received", "id"])
    op.create_index("ix_receipts_uid_kind_message_id", "receipts", ["uid", "kind", "message_id"])
    with op.batch_alter_table("tokens") as batch_op:
        batch_op.add_column(sa.Column("permanent", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("claimed_until", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("dead_at", sa.BigInteger(), nullable=True))
        batch_op.create_index("ix_outbox_delivered_at_dead_at_id", ["delivered_at", "dead_at", "id"])


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_index("ix_outbox_delivered_at_dead_at_id")
        batch_op.drop_column("dead_at")
        batch_op.drop_column("claimed_until")
        batch_op.drop_column("claimed_by")
    with op.batch_alter_table("tokens") as batch_op:
        batch_op.drop_column("permanent")
    op.drop_index("ix_receipts_uid_kind_message_id", table_name="receipts")
    op.drop_index("ix_notices_uid_received_id", table_name="notices")
    op.drop_table("notices")
    op.drop_table("apps")
