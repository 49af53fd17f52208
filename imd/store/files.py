# -*- test-case-name: tests.test_files -*-
"""
What the database knows about uploaded files: owner, declared size, bytes
acknowledged so far (``stored``), MD5 and content type once complete.

``stored`` only ever moves forward by compare-and-set from the value the
caller saw, so two writers can never both count a chunk; the bytes behind
it are the storage's business (:mod:`imd.files.storage`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred

from imd.store import schema as s
from imd.store.database import Database


@dataclass(frozen=True)
class FileRow:
    id: str
    name: str
    owner: str
    size: int
    stored: int
    md5: str | None
    content_type: str
    complete: bool
    created_at: int
    updated_at: int


_COLUMNS = [getattr(s.files.c, f) for f in FileRow.__dataclass_fields__]


def _row(row) -> FileRow | None:
    return None if row is None else FileRow(**row._mapping)


class NameTaken(Exception):
    """The name is someone's file already; C{existing} is its row."""

    def __init__(self, existing: FileRow) -> None:
        super().__init__(f"file name {existing.name} is taken")
        self.existing = existing


class QuotaExceeded(Exception):
    """
    The owner's files (complete or not) already declare C{usage} bytes, so
    C{size} more would pass C{quota}.
    """

    def __init__(self, usage: int, size: int, quota: int) -> None:
        super().__init__(f"{usage} + {size} bytes is over the quota of {quota}")
        self.usage = usage
        self.size = size
        self.quota = quota


class FileStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(
        self,
        id: str,
        name: str,
        owner: str,
        size: int,
        content_type: str,
        now: int,
        quota: int,
    ) -> "Deferred[FileRow]":
        """
        A new, empty, incomplete file.  Fails with L{NameTaken} when C{name}
        exists and L{QuotaExceeded} when the owner's declared sizes plus
        C{size} would pass C{quota}.
        """

        def thd(conn: Connection) -> FileRow:
            existing = _row(conn.execute(select(*_COLUMNS).where(s.files.c.name == name)).first())
            if existing is not None:
                raise NameTaken(existing)
            # Lock the owner's row (Postgres; SQLite has one writer anyway)
            # so two uploads of one user starting together cannot both fit
            # in the last bit of quota.
            conn.execute(select(s.users.c.uid).where(s.users.c.uid == owner).with_for_update()).first()
            usage = conn.execute(
                select(func.coalesce(func.sum(s.files.c.size), 0)).where(s.files.c.owner == owner)
            ).scalar_one()
            if usage + size > quota:
                raise QuotaExceeded(int(usage), size, quota)
            conn.execute(
                insert(s.files).values(
                    id=id,
                    name=name,
                    owner=owner,
                    size=size,
                    stored=0,
                    content_type=content_type,
                    complete=False,
                    created_at=now,
                    updated_at=now,
                )
            )
            return _row(conn.execute(select(*_COLUMNS).where(s.files.c.id == id)).first())

        def taken(failure):
            # Two first chunks of one name raced past the check above: the
            # unique key decided, and the loser sees the winner's row.
            failure.trap(IntegrityError)

            def winner(existing: FileRow | None):
                if existing is None:
                    return failure
                raise NameTaken(existing)

            return self.by_name(name).addCallback(winner)

        return self._db.run("files.create", thd).addErrback(taken)

    def by_name(self, name: str) -> "Deferred[FileRow | None]":
        def thd(conn: Connection) -> FileRow | None:
            return _row(conn.execute(select(*_COLUMNS).where(s.files.c.name == name)).first())

        return self._db.run("files.by_name", thd)

    def by_id(self, id: str) -> "Deferred[FileRow | None]":
        def thd(conn: Connection) -> FileRow | None:
            return _row(conn.execute(select(*_COLUMNS).where(s.files.c.id == id)).first())

        return self._db.run("files.by_id", thd)

    def advance(self, id: str, seen: int, stored: int, now: int) -> "Deferred[bool]":
        """
        Count bytes up to C{stored} as acknowledged, if the count is still
        C{seen} and the file is incomplete; False if not (someone else moved
        it, or it completed).
        """

        def thd(conn: Connection) -> bool:
            f = s.files.c
            return conn.execute(
                update(s.files)
                .where(f.id == id, f.stored == seen, f.complete.is_(False), f.size >= stored)
                .values(stored=stored, updated_at=now)
            ).rowcount == 1

        return self._db.run("files.advance", thd)

    def reset_stored(self, id: str, seen: int, stored: int, now: int) -> "Deferred[bool]":
        """
        Move the count of an incomplete file back from C{seen} to C{stored}:
        only for bytes the storage has lost, so the client re-sends them.
        """

        def thd(conn: Connection) -> bool:
            f = s.files.c
            return conn.execute(
                update(s.files)
                .where(f.id == id, f.stored == seen, f.complete.is_(False), f.stored > stored)
                .values(stored=stored, updated_at=now)
            ).rowcount == 1

        return self._db.run("files.reset_stored", thd)

    def complete(self, id: str, md5: str, now: int) -> "Deferred[FileRow | None]":
        """
        Mark the file complete with C{md5} once every byte is stored; its
        row afterwards (None: no such file).  Repeating it is harmless.
        """

        def thd(conn: Connection) -> FileRow | None:
            f = s.files.c
            conn.execute(
                update(s.files)
                .where(f.id == id, f.stored == f.size, f.complete.is_(False))
                .values(complete=True, md5=md5, updated_at=now)
            )
            return _row(conn.execute(select(*_COLUMNS).where(f.id == id)).first())

        return self._db.run("files.complete", thd)

    def delete(self, id: str) -> "Deferred[bool]":
        def thd(conn: Connection) -> bool:
            return conn.execute(s.files.delete().where(s.files.c.id == id)).rowcount == 1

        return self._db.run("files.delete", thd)

    def stale_unfinished(self, before: int, limit: int = 500) -> "Deferred[list[FileRow]]":
        """Unfinished uploads that no chunk has advanced since C{before} (ms), oldest first."""
        f = s.files.c

        def thd(conn: Connection) -> list[FileRow]:
            rows = conn.execute(
                select(*_COLUMNS)
                .where(f.complete.is_(False), f.updated_at < before)
                .order_by(f.updated_at)
                .limit(limit)
            )
            return [_row(row) for row in rows]

        return self._db.run("files.stale_unfinished", thd)

    def delete_stale(self, id: str, before: int) -> "Deferred[bool]":
        """Delete the unfinished upload C{id} if it is still unfinished and untouched since C{before}."""
        f = s.files.c

        def thd(conn: Connection) -> bool:
            deleted = conn.execute(
                s.files.delete().where(f.id == id, f.complete.is_(False), f.updated_at < before)
            )
            return deleted.rowcount == 1

        return self._db.run("files.delete_stale", thd)

    def usage(self, owner: str) -> "Deferred[int]":
        """Bytes C{owner}'s files declare, complete or not: what counts against the quota."""

        def thd(conn: Connection) -> int:
            return int(
                conn.execute(
                    select(func.coalesce(func.sum(s.files.c.size), 0)).where(s.files.c.owner == owner)
                ).scalar_one()
            )

        return self._db.run("files.usage", thd)
