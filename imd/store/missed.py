# -*- test-case-name: tests.test_store_missed -*-
"""
What a session missed, read for many sessions in one transaction.

A login reads five things before its session goes live: its offline 1:1
messages and group messages, and its friend requests, group invites and
notices not yet received.  As five store calls each, a burst of logins
spent more of the store's one SQLite thread beginning and committing
transactions (and the reactor handing calls to it) than in the queries;
here the logins waiting meanwhile are read together, one transaction per
batch (L{imd.store.batch.Batcher}).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from imd.store.batch import Batcher
from imd.store.database import Database
from imd.store.groups import GroupInvite, read_pending_invites
from imd.store.messages import Message, read_group_offline, read_offline_page
from imd.store.notices import Notice, read_pending_notices
from imd.store.roster import FriendRequest, read_pending_requests


@dataclass(frozen=True)
class MissedQuery:
    """A page of what C{uid} missed: C{messages} past the two cursors, and with C{others} the rest."""

    uid: str
    messages: bool
    others: bool
    limit: int
    after_seq: int = 0
    after_group: tuple[str, int] | None = None


@dataclass
class Missed:
    direct: list[tuple[int, Message]] = field(default_factory=list)
    group: list[Message] = field(default_factory=list)
    requests: list[FriendRequest] = field(default_factory=list)
    invites: list[GroupInvite] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)


def _read(conn: Connection, query: MissedQuery) -> Missed:
    found = Missed()
    if query.messages:
        found.direct = read_offline_page(conn, query.uid, query.after_seq, query.limit)
        found.group = read_group_offline(conn, query.uid, None, query.limit, query.after_group)
    if query.others:
        found.requests = read_pending_requests(conn, query.uid, True)
        found.invites = read_pending_invites(conn, query.uid, True)
        found.notices = read_pending_notices(conn, query.uid, query.limit)
    return found


def _read_many(conn: Connection, queries: Sequence[MissedQuery]) -> list[Missed]:
    return [_read(conn, query) for query in queries]


class MissedStore:
    def __init__(self, db: Database) -> None:
        # A batch is a read transaction that holds the store's thread for
        # each query's five statements; a few hundred logins at a time.
        self._batch = Batcher(db.run, "missed.read", _read_many, max_batch=256)

    def read(self, query: MissedQuery) -> "Deferred[Missed]":
        return self._batch.submit(query)
