# -*- test-case-name: tests.test_store_outbox,tests.test_serverapi -*-
"""
Custom notifications kept for their recipients until written to one of
their sessions, and the outbox row that reports one, in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from imd.store import outbox
from imd.store import schema as s
from imd.store.database import Database

n = s.notices.c


@dataclass(frozen=True)
class Notice:
    id: int
    uid: str
    sender: str
    gid: str | None
    body: str
    badge: bool
    created_at: int


_COLUMNS = [getattr(n, f) for f in Notice.__dataclass_fields__]


class NoticeStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
        self,
        sender: str,
        uids: Sequence[str],
        gid: str | None,
        body: str,
        badge: bool,
        now: int,
        keep: bool,
        report: tuple[str, dict] | None = None,
    ) -> "Deferred[list[Notice]]":
        """
        With C{keep}, a notice for each of C{uids}, kept until received;
        with C{report} (outbox kind, data), its outbox row, committed
        with them.  The kept notices, in the order of C{uids}.
        """

        def thd(conn: Connection) -> list[Notice]:
            kept = []
            if keep:
                for uid in uids:
                    id_ = conn.execute(
                        insert(s.notices)
                        .values(uid=uid, sender=sender, gid=gid, body=body, badge=badge, created_at=now)
                        .returning(n.id)
                    ).scalar_one()
                    kept.append(Notice(id_, uid, sender, gid, body, badge, now))
            if report is not None:
                outbox.add_txn(conn, report[0], report[1], now)
            return kept

        return self._db.run("notices.add", thd)

    def pending(self, uid: str, limit: int = 500) -> "Deferred[list[Notice]]":
        """C{uid}'s notices not yet received, oldest first."""
        return self._db.run("notices.pending", read_pending_notices, uid, limit)

    def mark_received(self, uid: str, notice_id: int) -> "Deferred[bool]":
        def thd(conn: Connection) -> bool:
            return conn.execute(
                update(s.notices).where(n.id == notice_id, n.uid == uid, n.received.is_(False)).values(received=True)
            ).rowcount == 1

        return self._db.run("notices.mark_received", thd)

    def purge_received(self, before: int) -> "Deferred[int]":
        """Delete the received notices made before C{before} (ms); how many."""

        def thd(conn: Connection) -> int:
            return conn.execute(delete(s.notices).where(n.received.is_(True), n.created_at < before)).rowcount

        return self._db.run("notices.purge_received", thd)


def read_pending_notices(conn: Connection, uid: str, limit: int) -> list[Notice]:
    """L{NoticeStore.pending}, in C{conn}'s transaction."""
    rows = conn.execute(select(*_COLUMNS).where(n.uid == uid, n.received.is_(False)).order_by(n.id).limit(limit))
    return [Notice(*row) for row in rows]
