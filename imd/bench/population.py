# -*- test-case-name: tests.test_bench -*-
"""
The benchmark's users, written straight into imd's tables in bulk: one
argon2 hash computed once for everyone, a token per user issued the way
``AccountService.issue_token`` stores it (SHA-256 of a random token), the
default friend group ``UserStore.create`` adds, friendships both ways and
groups with their members.  Logging in then costs one token lookup and
no password hashing, and creating 20,000 users takes seconds.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
import time
from typing import Callable, Iterable

from sqlalchemy import bindparam, delete, insert, text

from imd.store import schema as s
from imd.store.database import create_imd_engine

PASSWORD = "bench-password"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
CHUNK = 2000
TOKEN_TTL_MS = 86_400_000


def token_hash(token: str) -> str:
    # The same as imd.core.accounts.token_hash; kept here so the tool does
    # not import the core.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _chunks(rows: list, size: int = CHUNK) -> Iterable[list]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


class Population:
    """Writes users, tokens, friendships and groups into imd's database at C{url}."""

    def __init__(self, url: str, time_cost: int = 1, memory_kib: int = 1024) -> None:
        self.url = url
        self.engine = create_imd_engine(url, pool_size=1)
        self._time_cost = time_cost
        self._memory_kib = memory_kib
        self._password_hash: str | None = None

    def password_hash(self) -> str:
        if self._password_hash is None:
            from argon2 import PasswordHasher

            self._password_hash = PasswordHasher(
                time_cost=self._time_cost, memory_cost=self._memory_kib, parallelism=1
            ).hash(PASSWORD)
        return self._password_hash

    def add_users(self, uids: list[str]) -> dict[str, str]:
        """Create C{uids}; returns uid -> a live token of that user."""
        now = int(time.time() * 1000)
        pw = self.password_hash()
        gid, gname = s.DEFAULT_FRIEND_GROUP
        tokens = {uid: f"bench.{secrets.token_urlsafe(18)}" for uid in uids}
        with self.engine.begin() as conn:
            for chunk in _chunks(uids):
                conn.execute(
                    insert(s.users),
                    [dict(uid=u, password_hash=pw, name="", created_at=now, updated_at=now) for u in chunk],
                )
                conn.execute(
                    insert(s.friend_groups),
                    [dict(uid=u, gid=gid, name=gname, weight=0, is_default=True) for u in chunk],
                )
                conn.execute(
                    insert(s.tokens),
                    [
                        dict(token_hash=token_hash(tokens[u]), uid=u, created_at=now, expires_at=now + TOKEN_TTL_MS)
                        for u in chunk
                    ],
                )
        return tokens

    def befriend(self, pairs: Iterable[tuple[str, str]]) -> int:
        """Make each pair friends (both directions, default friend group)."""
        now = int(time.time() * 1000)
        seen: set[tuple[str, str]] = set()
        rows = []
        for a, b in pairs:
            for uid, fid in ((a, b), (b, a)):
                if uid != fid and (uid, fid) not in seen:
                    seen.add((uid, fid))
                    rows.append(dict(uid=uid, fid=fid, gid=s.DEFAULT_FRIEND_GROUP[0], remark="", created_at=now))
        with self.engine.begin() as conn:
            for chunk in _chunks(rows):
                conn.execute(insert(s.friendships), chunk)
        return len(rows)

    def add_group(self, gid: str, creator: str, members: list[str], name: str = "bench") -> None:
        """A private group of C{members} (C{creator} first, as its admin)."""
        now = int(time.time() * 1000)
        with self.engine.begin() as conn:
            conn.execute(
                insert(s.groups).values(
                    gid=gid, name=name, creator=creator, type=1, exitable=True, created_at=now, updated_at=now
                )
            )
            rows = [
                dict(gid=gid, uid=u, role=1 if u == creator else 0, remark="", join_time=now, synced_seq=0, read_seq=0)
                for u in dict.fromkeys([creator, *members])
            ]
            for chunk in _chunks(rows):
                conn.execute(insert(s.group_members), chunk)

    def add_history(self, pairs: list[tuple[str, str]], n: int) -> int:
        """
        C{n} 1:1 messages spread over C{pairs}, both ways, each received by
        its recipient: what a deployment's database holds from before the
        run (deeper indexes, a larger file), with nothing left offline, so
        no inbox rows (an acknowledged message leaves its recipient's inbox).
        """
        now = int(time.time() * 1000)
        seqs: dict[str, int] = {}
        messages = []
        with self.engine.begin() as conn:
            first = conn.execute(text("SELECT coalesce(max(id), 0) FROM messages")).scalar_one() + 1
            for k in range(n):
                a, b = pairs[k % len(pairs)]
                sender, to = (a, b) if (k // len(pairs)) % 2 == 0 else (b, a)
                seqs[to] = seqs.get(to, 0) + 1
                messages.append((first + k, f"history.{k}", sender, "bench", to, "text", f"history {k}", "", now - n + k))
            marks = "%s" if self.engine.dialect.name == "postgresql" else "?"
            for chunk in _chunks(messages, 20_000):
                conn.connection.cursor().executemany(
                    "INSERT INTO messages (id, msgid, sender, sender_res, to_uid, kind, body, client_time, created_at)"
                    f" VALUES ({', '.join([marks] * 9)})",
                    chunk,
                )
            if seqs:
                conn.execute(
                    s.users.update().where(s.users.c.uid == bindparam("u")).values(inbox_seq=bindparam("seq")),
                    [{"u": uid, "seq": seq} for uid, seq in seqs.items()],
                )
            if n and self.engine.dialect.name == "postgresql":
                # Explicit ids leave the sequence behind them.
                conn.execute(text("SELECT setval(pg_get_serial_sequence('messages', 'id'), :last)"), {"last": first + n - 1})
        if self.engine.dialect.name == "postgresql":
            # What autovacuum would have done by now in a deployment (it may
            # be off on a benchmark machine): without statistics the planner
            # takes 450,000 rows for none and scans them.
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE messages, inbox, users"))
        return n

    def remove_users(self, uids: list[str]) -> None:
        """Delete C{uids} and all that is theirs: the messages they sent or received and their inbox rows, then the rest by the schema's cascades."""
        m = s.messages.c
        with self.engine.begin() as conn:
            for chunk in _chunks(uids, 500):
                # No foreign keys there (see imd.store.schema): deleted here.
                conn.execute(delete(s.inbox).where(s.inbox.c.uid.in_(chunk)))
                conn.execute(delete(s.messages).where(m.sender.in_(chunk) | m.to_uid.in_(chunk)))
                conn.execute(delete(s.groups).where(s.groups.c.creator.in_(chunk)))
                conn.execute(delete(s.users).where(s.users.c.uid.in_(chunk)))

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one()
                for t in ("users", "tokens", "friendships", "groups", "group_members", "messages", "inbox")
            }

    def close(self) -> None:
        self.engine.dispose()


def fresh_database(kind: str) -> tuple[str, str, Callable[[], None]]:
    """
    A new, empty database for a server the tool starts: C{kind} is
    ``sqlite`` (a file in a temporary directory), ``postgres`` (a new
    schema in C{IMD_BENCH_POSTGRES_URL}, default the local database
    ``test``) or a ``postgresql://`` URL (a new schema in that database).
    Returns (url, backend name, cleanup).
    """
    if kind == "sqlite":
        directory = tempfile.mkdtemp(prefix="imd-bench-db-")
        return (
            f"sqlite:///{directory}/imd.sqlite3",
            "sqlite",
            lambda: shutil.rmtree(directory, ignore_errors=True),
        )
    if kind in ("postgres", "postgresql"):
        base = os.environ.get("IMD_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    elif kind.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        base = kind
    elif kind.startswith("sqlite:///"):
        # An explicit file: used as it is, and left behind.
        return kind, "sqlite", lambda: None
    else:
        raise ValueError(f"--database must be sqlite, postgres or a postgresql:// URL, not {kind!r}")
    from imd.store.scratch import scratch_schema

    url, drop = scratch_schema(base, f"imd_bench_{os.getpid()}")
    return url, "postgresql", drop
