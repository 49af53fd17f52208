"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 05:10:53.023915
"""

from alembic import op
import sqlalchemy as sa


revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('contacts',
    sa.Column('uid', sa.String(length=50), nullable=False),
    sa.Column('dept_id', sa.String(length=50), nullable=True),
    sa.Column('name', sa.String(length=100), server_default='', nullable=False),
    sa.Column('telephone', sa.String(length=32), server_default='', nullable=False),
    sa.Column('cellphone', sa.String(length=32), server_default='', nullable=False),
    sa.Column('email', sa.String(length=255), server_default='', nullable=False),
    sa.Column('position', sa.String(length=100), server_default='', nullable=False),
    sa.Column('ord', sa.Integer(), server_default='0', nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('deleted', sa.Boolean(), server_default=sa.text('(false)'), nullable=False),
    sa.PrimaryKeyConstraint('uid', name=op.f('pk_contacts'))
    )
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contacts_version'), ['version'], unique=False)

    op.create_table('departments',
    sa.Column('id', sa.String(length=50), nullable=False),
    sa.Column('parent_id', sa.String(length=50), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('ord', sa.Integer(), server_default='0', nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('deleted', sa.Boolean(), server_default=sa.text('(false)'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_departments'))
    )
    with op.batch_alter_table('departments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_departments_version'), ['version'], unique=False)

    op.create_table('directory_versions',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('kind', name=op.f('pk_directory_versions'))
    )
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_attempt_at', sa.BigInteger(), nullable=False),
    sa.Column('delivered_at', sa.BigInteger(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_delivered_at_next_attempt_at', ['delivered_at', 'next_attempt_at'], unique=False)

    op.create_table('sms_codes',
    sa.Column('telephone', sa.String(length=32), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('sent_at', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('telephone', name=op.f('pk_sms_codes'))
    )
    op.create_table('users',
    sa.Column('uid', sa.String(length=50), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=True),
    sa.Column('telephone', sa.String(length=32), nullable=True),
    sa.Column('name', sa.String(length=100), server_default='', nullable=False),
    sa.Column('sign', sa.String(length=500), server_default='', nullable=False),
    sa.Column('avatar', sa.String(length=500), server_default='', nullable=False),
    sa.Column('props', sa.Text(), nullable=True),
    sa.Column('disabled', sa.Boolean(), server_default=sa.text('(false)'), nullable=False),
    sa.Column('inbox_seq', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('uid', name=op.f('pk_users')),
    sa.UniqueConstraint('telephone', name=op.f('uq_users_telephone'))
    )
    op.create_table('files',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('owner', sa.String(length=50), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('stored', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('md5', sa.String(length=32), nullable=True),
    sa.Column('content_type', sa.String(length=127), server_default='application/octet-stream', nullable=False),
    sa.Column('complete', sa.Boolean(), server_default=sa.text('(false)'), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['owner'], ['users.uid'], name=op.f('fk_files_owner_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_files')),
    sa.UniqueConstraint('name', name=op.f('uq_files_name'))
    )
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_files_owner'), ['owner'], unique=False)

    op.create_table('friend_groups',
    sa.Column('uid', sa.String(length=50), nullable=False),
    sa.Column('gid', sa.String(length=50), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('weight', sa.Integer(), server_default='0', nullable=False),
    sa.Column('is_default', sa.Boolean(), server_default=sa.text('(false)'), nullable=False),
    sa.ForeignKeyConstraint(['uid'], ['users.uid'], name=op.f('fk_friend_groups_uid_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('uid', 'gid', name=op.f('pk_friend_groups'))
    )
    op.create_table('friend_requests',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('msgid', sa.String(length=64), nullable=False),
    sa.Column('msgfrom', sa.String(length=50), nullable=False),
    sa.Column('msgto', sa.String(length=50), nullable=False),
    sa.Column('msg', sa.String(length=500), server_default='', nullable=False),
    sa.Column('req_gid', sa.String(length=50), nullable=True),
    sa.Column('req_name', sa.String(length=100), nullable=True),
    sa.Column('state', sa.SmallInteger(), server_default='0', nullable=False),
    sa.Column('received', sa.Boolean(), server_default=sa.text('(false)'), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('answered_at', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['msgfrom'], ['users.uid'], name=op.f('fk_friend_requests_msgfrom_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['msgto'], ['users.uid'], name=op.f('fk_friend_requests_msgto_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_friend_requests')),
    sa.UniqueConstraint('msgfrom', 'msgid', name=op.f('uq_friend_requests_msgfrom_msgid'))
    )
    with op.batch_alter_table('friend_requests', schema=None) as batch_op:
        batch_op.create_index('ix_friend_requests_msgto_state', ['msgto', 'state'], unique=False)

    op.create_table('friendships',
    sa.Column('uid', sa.String(length=50), nullable=False),
    sa.Column('fid', sa.String(length=50), nullable=False),
    sa.Column('gid', sa.String(length=50), server_default='1', nullable=False),
    sa.Column('remark', sa.String(length=100), server_default='', nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['fid'], ['users.uid'], name=op.f('fk_friendships_fid_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['uid'], ['users.uid'], name=op.f('fk_friendships_uid_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('uid', 'fid', name=op.f('pk_friendships'))
    )
    with op.batch_alter_table('friendships', schema=None) as batch_op:
        batch_op.create_index('ix_friendships_fid', ['fid'], unique=False)

    op.create_table('groups',
    sa.Column('gid', sa.String(length=50), nullable=False),
    sa.Column('name', sa.String(length=500), server_default='', nullable=False),
    sa.Column('creator', sa.String(length=50), nullable=False),
    sa.Column('type', sa.SmallInteger(), server_default='1', nullable=False),
    sa.Column('exitable', sa.Boolean(), server_default=sa.text('(true)'), nullable=False),
    sa.Column('announcement', sa.Text(), nullable=True),
    sa.Column('last_seq', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.Column('deleted_at', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['creator'], ['users.uid'], name=op.f('fk_groups_creator_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('gid', name=op.f('pk_groups'))
    )
    with op.batch_alter_table('groups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_groups_creator'), ['creator'], unique=False)

    op.create_table('profiles',
    sa.Column('uid', sa.String(length=50), nullable=False),
    sa.Column('sex', sa.String(length=8), server_default='', nullable=False),
    sa.Column('age', sa.String(length=8), server_default='', nullable=False),
    sa.Column('birthday', sa.String(length=32), server_default='', nullable=False),
    sa.Column('telephone', sa.String(length=32), server_default='', nullable=False),
    sa.Column('cellphone', sa.String(length=32), server_default='', nullable=False),
    sa.Column('email', sa.String(length=255), server_default='', nullable=False),
    sa.Column('address', sa.String(length=500), server_default='', nullable=False),
    sa.Column('zipcode', sa.String(length=16), server_default='', nullable=False),
    sa.Column('position', sa.String(length=100), server_default='', nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['uid'], ['users.uid'], name=op.f('fk_profiles_uid_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('uid', name=op.f('pk_profiles'))
    )
    op.create_table('tokens',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('uid', sa.String(length=50), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['uid'], ['users.uid'], name=op.f('fk_tokens_uid_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_tokens'))
    )
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tokens_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_tokens_uid'), ['uid'], unique=False)

    op.create_table('group_invites',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('msgid', sa.String(length=64), nullable=False),
    sa.Column('gid', sa.String(length=50), nullable=False),
    sa.Column('msgfrom', sa.String(length=50), nullable=False),
    sa.Column('msgto', sa.String(length=50), nullable=False),
    sa.Column('gname', sa.String(length=500), server_default='', nullable=False),
    sa.Column('state', sa.SmallInteger(), server_default='0', nullable=False),
    sa.Column('received', sa.Boolean(), server_default=sa.text('(false)'), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('answered_at', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['gid'], ['groups.gid'], name=op.f('fk_group_invites_gid_groups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['msgfrom'], ['users.uid'], name=op.f('fk_group_invites_msgfrom_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['msgto'], ['users.uid'], name=op.f('fk_group_invites_msgto_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_group_invites')),
    sa.UniqueConstraint('msgfrom', 'msgid', name=op.f('uq_group_invites_msgfrom_msgid'))
    )
    with op.batch_alter_table('group_invites', schema=None) as batch_op:
        batch_op.create_index('ix_group_invites_msgto_state', ['msgto', 'state'], unique=False)

    op.create_table('group_members',
    sa.Column('gid', sa.String(length=50), nullable=False),
    sa.Column('uid', sa.String(length=50), nullable=False),
    sa.Column('role', sa.SmallInteger(), server_default='0', nullable=False),
    sa.Column('remark', sa.String(length=200), server_default='', nullable=False),
    sa.Column('join_time', sa.BigInteger(), nullable=False),
    sa.Column('synced_seq', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('read_seq', sa.BigInteger(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['gid'], ['groups.gid'], name=op.f('fk_group_members_gid_groups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['uid'], ['users.uid'], name=op.f('fk_group_members_uid_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('gid', 'uid', name=op.f('pk_group_members'))
    )
    with op.batch_alter_table('group_members', schema=None) as batch_op:
        batch_op.create_index('ix_group_members_uid', ['uid'], unique=False)

    op.create_table('messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('msgid', sa.String(length=64), nullable=False),
    sa.Column('sender', sa.String(length=50), nullable=False),
    sa.Column('sender_res', sa.String(length=64), server_default='', nullable=False),
    sa.Column('to_uid', sa.String(length=50), nullable=True),
    sa.Column('gid', sa.String(length=50), nullable=True),
    sa.Column('group_seq', sa.BigInteger(), nullable=True),
    sa.Column('kind', sa.String(length=16), server_default='text', nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('client_time', sa.String(length=32), server_default='', nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('recalled_at', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['gid'], ['groups.gid'], name=op.f('fk_messages_gid_groups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sender'], ['users.uid'], name=op.f('fk_messages_sender_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['to_uid'], ['users.uid'], name=op.f('fk_messages_to_uid_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages')),
    sa.UniqueConstraint('gid', 'group_seq', name=op.f('uq_messages_gid_group_seq')),
    sa.UniqueConstraint('sender', 'msgid', name=op.f('uq_messages_sender_msgid'))
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index('ix_messages_gid_created_at', ['gid', 'created_at'], unique=False)
        batch_op.create_index('ix_messages_sender_to_uid_created_at', ['sender', 'to_uid', 'created_at'], unique=False)
        batch_op.create_index('ix_messages_to_uid_sender_created_at', ['to_uid', 'sender', 'created_at'], unique=False)

    op.create_table('inbox',
    sa.Column('uid', sa.String(length=50), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('message_id', sa.BigInteger(), nullable=False),
    sa.Column('received', sa.Boolean(), server_default=sa.text('(false)'), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_inbox_message_id_messages'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['uid'], ['users.uid'], name=op.f('fk_inbox_uid_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('uid', 'seq', name=op.f('pk_inbox'))
    )
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.create_index('ix_inbox_message_id', ['message_id'], unique=False)
        batch_op.create_index('ix_inbox_uid_received_seq', ['uid', 'received', 'seq'], unique=False)

    op.create_table('receipts',
    sa.Column('message_id', sa.BigInteger(), nullable=False),
    sa.Column('uid', sa.String(length=50), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_receipts_message_id_messages'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['uid'], ['users.uid'], name=op.f('fk_receipts_uid_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('message_id', 'uid', 'kind', name=op.f('pk_receipts'))
    )


def downgrade() -> None:
    op.drop_table('receipts')
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.drop_index('ix_inbox_uid_received_seq')
        batch_op.drop_index('ix_inbox_message_id')

    op.drop_table('inbox')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_to_uid_sender_created_at')
        batch_op.drop_index('ix_messages_sender_to_uid_created_at')
        batch_op.drop_index('ix_messages_gid_created_at')

    op.drop_table('messages')
    with op.batch_alter_table('group_members', schema=None) as batch_op:
        batch_op.drop_index('ix_group_members_uid')

    op.drop_table('group_members')
    with op.batch_alter_table('group_invites', schema=None) as batch_op:
        batch_op.drop_index('ix_group_invites_msgto_state')

    op.drop_table('group_invites')
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tokens_uid'))
        batch_op.drop_index(batch_op.f('ix_tokens_expires_at'))

    op.drop_table('tokens')
    op.drop_table('profiles')
    with op.batch_alter_table('groups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_groups_creator'))

    op.drop_table('groups')
    with op.batch_alter_table('friendships', schema=None) as batch_op:
        batch_op.drop_index('ix_friendships_fid')

    op.drop_table('friendships')
    with op.batch_alter_table('friend_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_friend_requests_msgto_state')

    op.drop_table('friend_requests')
    op.drop_table('friend_groups')
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_files_owner'))

    op.drop_table('files')
    op.drop_table('users')
    op.drop_table('sms_codes')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_delivered_at_next_attempt_at')

    op.drop_table('outbox')
    op.drop_table('directory_versions')
    with op.batch_alter_table('departments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_departments_version'))

    op.drop_table('departments')
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contacts_version'))

    op.drop_table('contacts')
