# -*- test-case-name: tests.test_store_outbox -*-
"""
The outbox: what is to be told to the world outside (webhooks), written
in the transaction of what it tells, so that nothing committed goes untold
and nothing rolled back is told.  A deliverer reads the rows that are due
and sends them after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import select
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from imd.store import schema as s
from imd.store.database import Database
from imd.store.raw import Raw

o = s.outbox.c
_COLUMNS = {"kind": "text", "payload": "text", "created_at": "bigint", "next_attempt_at": "bigint"}


def add_many_txn(raw: Raw, rows: Sequence[tuple[str, str, int]]) -> None:
    """
    Add C{rows} of (kind, payload as JSON text, created_at), each due at
    once, inside the transaction of C{raw}.
    """
    raw.insert("outbox", _COLUMNS, [(kind, payload, at, at) for kind, payload, at in rows])


@dataclass(frozen=True)
class OutboxRow:
    id: int
    kind: str
    payload: str
    created_at: int
    attempts: int
    next_attempt_at: int
    last_error: str | None


class OutboxStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add_many(self, rows: Sequence[tuple[str, str, int]]) -> "Deferred[None]":
        """Add C{rows} in a transaction of their own; see L{add_many_txn}."""

        def thd(conn: Connection) -> None:
            with Raw(conn) as raw:
                add_many_txn(raw, rows)

        return self._db.run("outbox.add_many", thd)

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
