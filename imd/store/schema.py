"""
The whole core model as SQLAlchemy Core tables.

Times are integer milliseconds since the epoch (UTC), which SQLite and
Postgres store and compare alike; channels format them for their wire.
Changes to this module go with an alembic revision in ``alembic/versions``.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

# Constraint names are fixed so that alembic revisions can refer to them on
# every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

UID = String(50)
DEFAULT_FRIEND_GROUP = ("1", "我的好友")


def _uid_fk(name: str = "uid", **kw) -> Column:
    return Column(name, UID, ForeignKey("users.uid", ondelete="CASCADE"), **kw)


# The columns of a message and of an inbox row that name a user or a
# message carry no foreign key (revision 0011).  Postgres checks a key with
# a query and a row lock for every row inserted: half the time of a
# batch's inserts; without them p2p max went a tenth to a sixth faster
# (docs/benchmarks.rst, round 8).
# Nothing the keys guarded can happen: a batch locks its recipients' rows
# (and so finds one that does not exist), a sender is the session's own
# user, an inbox row names the message inserted with it, and imd deletes
# no user and no 1:1 message.  Whatever would delete one must delete
# their messages and inbox rows itself.
def _uid(name: str = "uid", **kw) -> Column:
    return Column(name, UID, **kw)


users = Table(
    "users",
    metadata,
    Column("uid", UID, primary_key=True),
    Column("password_hash", String(255)),
    Column("telephone", String(32), unique=True),
    Column("name", String(100), nullable=False, server_default=""),
    Column("sign", String(500), nullable=False, server_default=""),
    Column("avatar", String(500), nullable=False, server_default=""),
    Column("props", Text),
    Column("disabled", Boolean, nullable=False, server_default=text("false")),
    # May use the admin console.
    Column("admin", Boolean, nullable=False, server_default=text("false")),
    # Next sequence number of the user's 1:1 inbox.  Taking it with an
    # UPDATE serialises writers per recipient, so sequence order is commit
    # order and a cursor never skips a late commit.
    Column("inbox_seq", BigInteger, nullable=False, server_default="0"),
    # The last inbox row an offline fetch showed: a time cursor of whole
    # seconds acknowledges rows of its second only up to here.
    Column("offline_shown_seq", BigInteger, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

profiles = Table(
    "profiles",
    metadata,
    _uid_fk(primary_key=True),
    Column("sex", String(8), nullable=False, server_default=""),
    Column("age", String(8), nullable=False, server_default=""),
    Column("birthday", String(32), nullable=False, server_default=""),
    Column("telephone", String(32), nullable=False, server_default=""),
    Column("cellphone", String(32), nullable=False, server_default=""),
    Column("email", String(255), nullable=False, server_default=""),
    Column("address", String(500), nullable=False, server_default=""),
    Column("zipcode", String(16), nullable=False, server_default=""),
    Column("position", String(100), nullable=False, server_default=""),
    Column("updated_at", BigInteger, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    # SHA-256 of the token: a leaked database does not leak live tokens.
    Column("token_hash", String(64), primary_key=True),
    _uid_fk(nullable=False, index=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False, index=True),
    # A token made for an account by a business server (seed 003): it does
    # not expire and also logs in as the password, until it is replaced.
    Column("permanent", Boolean, nullable=False, server_default=text("false")),
)

# SCRAM (RFC 5802) keys derived from the password, one row per hash
# function, so a client can prove its password without the server ever
# seeing it; written whenever the argon2 hash is.
scram_keys = Table(
    "scram_keys",
    metadata,
    _uid_fk(primary_key=True),
    Column("mechanism", String(32), primary_key=True),
    Column("salt", String(64), nullable=False),
    Column("iterations", Integer, nullable=False),
    Column("stored_key", String(128), nullable=False),
    Column("server_key", String(128), nullable=False),
)

sms_codes = Table(
    "sms_codes",
    metadata,
    Column("telephone", String(32), primary_key=True),
    Column("code_hash", String(64), nullable=False),
    Column("sent_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
)

friend_groups = Table(
    "friend_groups",
    metadata,
    _uid_fk(primary_key=True),
    Column("gid", String(50), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("weight", Integer, nullable=False, server_default="0"),
    Column("is_default", Boolean, nullable=False, server_default=text("false")),
)

friendships = Table(
    "friendships",
    metadata,
    _uid_fk(primary_key=True),
    _uid_fk("fid", primary_key=True),
    Column("gid", String(50), nullable=False, server_default=DEFAULT_FRIEND_GROUP[0]),
    Column("remark", String(100), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    # Presence fans out to the users who have me as a friend.
    Index("ix_friendships_fid", "fid"),
)

friend_requests = Table(
    "friend_requests",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("msgid", String(64), nullable=False),
    _uid_fk("msgfrom", nullable=False),
    _uid_fk("msgto", nullable=False),
    Column("msg", String(500), nullable=False, server_default=""),
    Column("req_gid", String(50)),
    Column("req_name", String(100)),
    # 0 pending, 1 accepted, 2 rejected (seed 001 TP_IM_ROSTER_REQ).
    Column("state", SmallInteger, nullable=False, server_default="0"),
    Column("received", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", BigInteger, nullable=False),
    Column("answered_at", BigInteger),
    UniqueConstraint("msgfrom", "msgid"),
    Index("ix_friend_requests_msgto_state", "msgto", "state"),
)

groups = Table(
    "groups",
    metadata,
    Column("gid", String(50), primary_key=True),
    Column("name", String(500), nullable=False, server_default=""),
    _uid_fk("creator", nullable=False, index=True),
    # 1 private, 2 public (seed 001 TP_IM_GROUP.TYPE).
    Column("type", SmallInteger, nullable=False, server_default="1"),
    Column("exitable", Boolean, nullable=False, server_default=text("true")),
    Column("announcement", Text),
    # Sequence of the group's messages; see users.inbox_seq.
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("deleted_at", BigInteger),
)

group_members = Table(
    "group_members",
    metadata,
    Column("gid", String(50), ForeignKey("groups.gid", ondelete="CASCADE"), primary_key=True),
    _uid_fk(primary_key=True),
    # 0 member, 1 admin (seed 001 TP_IM_GROUP_PEER.RIGHT).
    Column("role", SmallInteger, nullable=False, server_default="0"),
    Column("remark", String(200), nullable=False, server_default=""),
    Column("join_time", BigInteger, nullable=False),
    # Highest group sequence the member has synced (offline cursor) and read.
    Column("synced_seq", BigInteger, nullable=False, server_default="0"),
    Column("read_seq", BigInteger, nullable=False, server_default="0"),
    Index("ix_group_members_uid", "uid"),
)

group_invites = Table(
    "group_invites",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("msgid", String(64), nullable=False),
    Column("gid", String(50), ForeignKey("groups.gid", ondelete="CASCADE"), nullable=False),
    _uid_fk("msgfrom", nullable=False),
    _uid_fk("msgto", nullable=False),
    Column("gname", String(500), nullable=False, server_default=""),
    Column("state", SmallInteger, nullable=False, server_default="0"),
    Column("received", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", BigInteger, nullable=False),
    Column("answered_at", BigInteger),
    UniqueConstraint("msgfrom", "msgid"),
    Index("ix_group_invites_msgto_state", "msgto", "state"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    # The client's id, unique per sender: a resend is found, not stored again.
    Column("msgid", String(64), nullable=False),
    _uid("sender", nullable=False),
    Column("sender_res", String(64), nullable=False, server_default=""),
    _uid("to_uid"),
    Column("gid", String(50), ForeignKey("groups.gid", ondelete="CASCADE")),
    Column("group_seq", BigInteger),
    # text, image, file, voice, custom, notification
    Column("kind", String(16), nullable=False, server_default="text"),
    Column("body", Text, nullable=False),
    Column("client_time", String(32), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("recalled_at", BigInteger),
    UniqueConstraint("sender", "msgid"),
    UniqueConstraint("gid", "group_seq"),
    # 1:1 history, newest first, and unread counts: one index serves
    # both directions of a conversation (two equality probes), since each
    # index costs every new message a page write of its own.
    Index("ix_messages_to_uid_sender_created_at", "to_uid", "sender", "created_at"),
    Index("ix_messages_gid_created_at", "gid", "created_at"),
)

# A 1:1 message waiting for its recipient: the row goes in with the
# message and is deleted when a session of the recipient acknowledges it,
# so offline sync reads it by (uid, seq) and the table stays as small as
# what is undelivered, however long the history (revision 0010; before,
# acknowledged rows stayed, marked received, and every message's entries
# spread over more pages as the table grew; docs/benchmarks.rst, round 6).
inbox = Table(
    "inbox",
    metadata,
    _uid(primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("message_id", BigInteger, nullable=False),
    # The message's msgid: a recipient acknowledges by msgid alone (seed
    # 001's IM_MESSAGE_ACK), and finds it here, in an index of the few
    # undelivered messages, instead of in an index of every message.
    Column("msgid", String(64), nullable=False, server_default=""),
    # Unused since revision 0010 (an acknowledged row is deleted); kept so
    # that the revision is a delete, not a rebuild of the table.
    Column("received", Boolean, nullable=False, server_default=text("false")),
    Index("ix_inbox_message_id", "message_id"),
    Index("ix_inbox_uid_msgid", "uid", "msgid"),
)

receipts = Table(
    "receipts",
    metadata,
    Column("message_id", BigInteger, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    _uid_fk(primary_key=True),
    Column("kind", String(16), primary_key=True),  # delivered, read
    Column("at", BigInteger, nullable=False),
    # Unread counts start after the newest message a user has read.
    Index("ix_receipts_uid_kind_message_id", "uid", "kind", "message_id"),
)

files = Table(
    "files",
    metadata,
    Column("id", String(64), primary_key=True),
    # Seed 001 file names are one namespace: the first uploader owns a name.
    Column("name", String(255), nullable=False, unique=True),
    _uid_fk("owner", nullable=False, index=True),
    Column("size", BigInteger, nullable=False),
    Column("stored", BigInteger, nullable=False, server_default="0"),
    Column("md5", String(32)),
    Column("content_type", String(127), nullable=False, server_default="application/octet-stream"),
    Column("complete", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

departments = Table(
    "departments",
    metadata,
    Column("id", String(50), primary_key=True),
    Column("parent_id", String(50)),
    Column("name", String(200), nullable=False),
    Column("ord", Integer, nullable=False, server_default="0"),
    # Directory version at which this row last changed; clients that know
    # an older version get the rows above it.
    Column("version", BigInteger, nullable=False, index=True),
    Column("deleted", Boolean, nullable=False, server_default=text("false")),
)

contacts = Table(
    "contacts",
    metadata,
    Column("uid", UID, primary_key=True),
    Column("dept_id", String(50)),
    Column("name", String(100), nullable=False, server_default=""),
    Column("telephone", String(32), nullable=False, server_default=""),
    Column("cellphone", String(32), nullable=False, server_default=""),
    Column("email", String(255), nullable=False, server_default=""),
    Column("position", String(100), nullable=False, server_default=""),
    Column("ord", Integer, nullable=False, server_default="0"),
    Column("version", BigInteger, nullable=False, index=True),
    Column("deleted", Boolean, nullable=False, server_default=text("false")),
)

directory_versions = Table(
    "directory_versions",
    metadata,
    Column("kind", String(16), primary_key=True),  # departments, contacts
    Column("version", BigInteger, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("delivered_at", BigInteger),
    Column("last_error", Text),
    # Which instance is delivering the row, and until when: a crashed
    # instance's claim runs out and another takes the row over.
    Column("claimed_by", String(100)),
    Column("claimed_until", BigInteger),
    # Given up on after too many attempts; an administrator retries or drops it.
    Column("dead_at", BigInteger),
    Index("ix_outbox_delivered_at_next_attempt_at", "delivered_at", "next_attempt_at"),
    Index("ix_outbox_delivered_at_dead_at_id", "delivered_at", "dead_at", "id"),
)

apps = Table(
    "apps",
    metadata,
    # The AppKey and AppSecret a business server signs its calls with (seed 003).
    Column("app_key", String(64), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("secret", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

notices = Table(
    "notices",
    metadata,
    # A custom notification kept for one recipient until a session of it
    # has been written it; one row per recipient of a group's notification.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    _uid_fk(nullable=False),
    _uid_fk("sender", nullable=False),
    Column("gid", String(50), ForeignKey("groups.gid", ondelete="CASCADE")),
    Column("body", Text, nullable=False),
    Column("badge", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", BigInteger, nullable=False),
    Column("received", Boolean, nullable=False, server_default=text("false")),
    Index("ix_notices_uid_received_id", "uid", "received", "id"),
)

# Keys claimed once for a while: a signed request's signature, so that it
# cannot be replayed within its window, even after a restart.
claims = Table(
    "claims",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_claims_expires_at", "expires_at"),
)
