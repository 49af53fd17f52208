# -*- test-case-name: tests.test_store_outbox -*-
"""
The outbox: what is to be told to the world outside (webhooks), written
in the transaction of what it tells, so that nothing committed goes untold
and nothing rolled back is told.  A deliverer reads the rows that are due
and sends them after the commit.

Rows go out in id order, one instance at a time: an instance I{claims}
the oldest undelivered rows until a time, and no one else takes them
before that time has passed, so a crashed instance's rows are taken over
and a live one's are not sent twice while it holds them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from imd.store import schema as s
from imd.store.database import Database
from imd.store.raw import Raw

o = s.outbox.c
_COLUMNS = {"kind": "text", "payload": "text", "created_at": "bigint", "next_attempt_at": "bigint"}


# The Postgres advisory lock that orders outbox writers (any number: it is imd's).
ORDER_LOCK = 3_000_003


def add_many_txn(raw: Raw, rows: Sequence[tuple[str, str, int]]) -> None:
    """
    Add C{rows} of (kind, payload as JSON text, created_at), each due at
    once, inside the transaction of C{raw}.

    On Postgres the rows' ids come from a sequence when they are inserted,
    not when they are committed: a transaction could commit row 11 while
    row 10 is still on its way, and a deliverer would send 11 first.  So
    writers take one lock, held until they commit, before they insert:
    ids are then in commit order.  It is taken last in the transaction
    (callers add outbox rows after their other writes), so it is held only
    for the commit.  SQLite writers are serialised already.
    """
    if not rows:
        return
    if raw.postgres:
        raw.execute("SELECT pg_advisory_xact_lock(?)", [ORDER_LOCK])
    raw.insert("outbox", _COLUMNS, [(kind, payload, at, at) for kind, payload, at in rows])


def add_txn(conn: Connection, kind: str, data: dict, at: int) -> None:
    """One row of C{kind} carrying C{data} as JSON, due at once, in the transaction of C{conn}."""
    with Raw(conn) as raw:
        add_many_txn(raw, [(kind, json.dumps(data, ensure_ascii=False, separators=(",", ":")), at)])


@dataclass(frozen=True)
class OutboxRow:
    id: int
    kind: str
    payload: str
    created_at: int
    attempts: int
    next_attempt_at: int
    last_error: str | None


@dataclass(frozen=True)
class OutboxEntry:
    """An undelivered row, as an administrator sees it."""

    id: int
    kind: str
    created_at: int
    attempts: int
    next_attempt_at: int
    last_error: str | None
    claimed_by: str | None
    dead_at: int | None


class OutboxStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add_many(self, rows: Sequence[tuple[str, str, int]]) -> "Deferred[None]":
        """Add C{rows} in a transaction of their own; see L{add_many_txn}."""

        def thd(conn: Connection) -> None:
            with Raw(conn) as raw:
                add_many_txn(raw, rows)

        return self._db.run("outbox.add_many", thd)

    def add(self, kind: str, data: dict, at: int) -> "Deferred[None]":
        """One row carrying C{data}, in a transaction of its own; see L{add_txn}."""
        return self._db.run("outbox.add", add_txn, kind, data, at)

    def due(self, now: int, limit: int = 100) -> "Deferred[list[OutboxRow]]":
        """Undelivered rows whose next attempt is at or before C{now} (ms), longest due first."""

        def thd(conn: Connection) -> list[OutboxRow]:
            rows = conn.execute(
                select(*[getattr(o, f) for f in OutboxRow.__dataclass_fields__])
                .where(o.delivered_at.is_(None), o.next_attempt_at <= now)
                .order_by(o.next_attempt_at, o.id)
                .limit(limit)
            )
            return [OutboxRow(*row) for row in rows]

        return self._db.run("outbox.due", thd)

    def claim(self, instance: str, now: int, until: int, limit: int = 20) -> "Deferred[list[OutboxRow]]":
        """
        The oldest undelivered live rows (at most C{limit}), claimed by
        C{instance} until C{until} (ms): none while the oldest is claimed by
        another instance whose claim holds, or is not due before C{now},
        since a row never overtakes an older one.
        """

        def thd(conn: Connection) -> list[OutboxRow]:
            # FOR UPDATE (Postgres): two instances claiming at once take
            # turns, and the second sees the first one's claim.  SQLite's
            # BEGIN IMMEDIATE already serialises them.
            rows = conn.execute(
                select(*[getattr(o, f) for f in OutboxRow.__dataclass_fields__], o.claimed_by, o.claimed_until)
                .where(o.delivered_at.is_(None), o.dead_at.is_(None))
                .order_by(o.id)
                .limit(limit)
                .with_for_update()
            ).all()
            if not rows:
                return []
            head = rows[0]
            if head.claimed_by not in (None, instance) and (head.claimed_until or 0) > now:
                return []
            if head.next_attempt_at > now:
                return []
            ids = [row.id for row in rows]
            conn.execute(update(s.outbox).where(o.id.in_(ids)).values(claimed_by=instance, claimed_until=until))
            return [OutboxRow(*row[: len(OutboxRow.__dataclass_fields__)]) for row in rows]

        return self._db.run("outbox.claim", thd)

    def delivered(self, row_id: int, now: int) -> "Deferred[None]":
        def thd(conn: Connection) -> None:
            conn.execute(
                update(s.outbox).where(o.id == row_id).values(delivered_at=now, claimed_by=None, claimed_until=None)
            )

        return self._db.run("outbox.delivered", thd)

    def failed(self, row_id: int, instance: str, error: str, next_attempt_at: int, dead_at: int | None) -> "Deferred[None]":
        """
        Row C{row_id} was not delivered: it is due again at
        C{next_attempt_at} (or given up on, with C{dead_at}), and every
        claim of C{instance} is let go, so the rows after it wait for it.
        """

        def thd(conn: Connection) -> None:
            conn.execute(
                update(s.outbox)
                .where(o.id == row_id)
                .values(
                    attempts=o.attempts + 1,
                    last_error=error[:1000],
                    next_attempt_at=next_attempt_at,
                    dead_at=dead_at,
                )
            )
            conn.execute(
                update(s.outbox).where(o.claimed_by == instance).values(claimed_by=None, claimed_until=None)
            )

        return self._db.run("outbox.failed", thd)

    def release(self, instance: str) -> "Deferred[None]":
        """Let go of every claim of C{instance} (it stops delivering)."""

        def thd(conn: Connection) -> None:
            conn.execute(
                update(s.outbox)
                .where(o.claimed_by == instance, o.delivered_at.is_(None))
                .values(claimed_by=None, claimed_until=None)
            )

        return self._db.run("outbox.release", thd)

    def purge_delivered(self, before: int) -> "Deferred[int]":
        """Delete the rows delivered before C{before} (ms); how many."""

        def thd(conn: Connection) -> int:
            return conn.execute(delete(s.outbox).where(o.delivered_at < before)).rowcount

        return self._db.run("outbox.purge_delivered", thd)

    def stats(self) -> "Deferred[tuple[int, int | None, int]]":
        """(undelivered live rows, created_at of the oldest of them, dead rows)."""

        def thd(conn: Connection) -> tuple[int, int | None, int]:
            depth, oldest = conn.execute(
                select(func.count(), func.min(o.created_at)).where(o.delivered_at.is_(None), o.dead_at.is_(None))
            ).one()
            dead = conn.execute(
                select(func.count()).where(o.delivered_at.is_(None), o.dead_at.isnot(None))
            ).scalar_one()
            return depth, oldest, dead

        return self._db.run("outbox.stats", thd)

    def undelivered(self, dead_only: bool = False, limit: int = 1000) -> "Deferred[list[OutboxEntry]]":
        """Undelivered rows, oldest first (only the dead ones, with C{dead_only})."""

        def thd(conn: Connection) -> list[OutboxEntry]:
            query = select(*[getattr(o, f) for f in OutboxEntry.__dataclass_fields__]).where(o.delivered_at.is_(None))
            if dead_only:
                query = query.where(o.dead_at.isnot(None))
            return [OutboxEntry(*row) for row in conn.execute(query.order_by(o.id).limit(limit))]

        return self._db.run("outbox.undelivered", thd)

    def revive(self, ids: Sequence[int] | None, now: int) -> "Deferred[int]":
        """Dead rows C{ids} (None: all of them) are due again at once; how many."""

        def thd(conn: Connection) -> int:
            stmt = update(s.outbox).where(o.dead_at.isnot(None), o.delivered_at.is_(None))
            if ids is not None:
                stmt = stmt.where(o.id.in_(list(ids)))
            return conn.execute(stmt.values(dead_at=None, attempts=0, next_attempt_at=now)).rowcount

        return self._db.run("outbox.revive", thd)

    def drop(self, ids: Sequence[int] | None) -> "Deferred[int]":
        """Delete dead rows C{ids} (None: all of them); how many."""

        def thd(conn: Connection) -> int:
            stmt = delete(s.outbox).where(o.dead_at.isnot(None), o.delivered_at.is_(None))
            if ids is not None:
                stmt = stmt.where(o.id.in_(list(ids)))
            return conn.execute(stmt).rowcount

        return self._db.run("outbox.drop", thd)
