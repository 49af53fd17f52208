# -*- test-case-name: tests.test_store_claims -*-
"""
Claims: a name taken once until it expires, in the database, so that it
holds across restarts and across instances sharing the database (the
seed-004 replay guard without Redis).
"""

from __future__ import annotations

from sqlalchemy import delete, text
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from imd.store import schema as s
from imd.store.database import Database

c = s.claims.c
# Both SQLite (3.24+) and Postgres take this form; a conflict is no error,
# so the transaction goes on either way.
_CLAIM = text("INSERT INTO claims (name, expires_at) VALUES (:name, :expires_at) ON CONFLICT (name) DO NOTHING")


class ClaimStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def claim(self, name: str, now: int, expires_at: int) -> "Deferred[bool]":
        """True if C{name} was free at C{now} (ms) and is now taken until C{expires_at}."""

        def thd(conn: Connection) -> bool:
            # An expired claim of the same name is gone first.
            conn.execute(delete(s.claims).where(c.name == name, c.expires_at <= now))
            return conn.execute(_CLAIM, {"name": name, "expires_at": expires_at}).rowcount == 1

        return self._db.run("claims.claim", thd)

    def purge_expired(self, now: int) -> "Deferred[int]":
        def thd(conn: Connection) -> int:
            return conn.execute(delete(s.claims).where(c.expires_at <= now)).rowcount

        return self._db.run("claims.purge_expired", thd)
