# -*- test-case-name: tests.test_directory -*-
"""
The enterprise directory: departments and contacts, each list with a
version number.  Every row carries the version at which it last changed,
so a client that knows version N gets just the rows changed after N.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from imd.store import schema as s
from imd.store.database import Database

KINDS = {
    "departments": (s.departments, "id", ("parent_id", "name", "ord")),
    "contacts": (
        s.contacts,
        "uid",
        ("dept_id", "name", "telephone", "cellphone", "email", "position", "ord"),
    ),
}


def _version(conn: Connection, kind: str) -> int:
    v = s.directory_versions.c
    return conn.execute(select(v.version).where(v.kind == kind)).scalar() or 0


class DirectoryStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def version(self, kind: str) -> "Deferred[int]":
        return self._db.run("directory.version", _version, kind)

    def listing(self, kind: str, since: int | None) -> "Deferred[tuple[int, list[dict]]]":
        """
        (version, rows): every current row when C{since} is None, else the
        rows changed after version C{since}, deleted ones included.
        """
        table, key, columns = KINDS[kind]

        def thd(conn: Connection):
            c = table.c
            # The version first: each statement may see a newer snapshot
            # (Postgres read committed, SQLite outside a write), and rows
            # newer than the version a client is told only come again,
            # while a version newer than the rows would hide them for good.
            version = _version(conn, kind)
            query = select(getattr(c, key), *[getattr(c, n) for n in columns], c.version, c.deleted)
            if since is None:
                query = query.where(c.deleted.is_(False))
            else:
                query = query.where(c.version > since)
            rows = [dict(row._mapping) for row in conn.execute(query.order_by(c.ord, getattr(c, key)))]
            return version, rows

        return self._db.run("directory.listing", thd)

    def replace(self, kind: str, rows: list[dict[str, Any]]) -> "Deferred[tuple[int, int]]":
        """
        Make C{rows} the whole list of C{kind}: new and changed rows are
        written, missing ones marked deleted.  The version goes up by one
        if anything changed.  Returns (version, rows changed).
        """
        table, key, columns = KINDS[kind]

        def thd(conn: Connection):
            c = table.c
            v = s.directory_versions.c
            # Bump the version before reading anything: the update takes the
            # row's lock (SQLite: the write lock), so two imports of a kind
            # queue up instead of both writing their changes at one version.
            bumped = conn.execute(
                update(s.directory_versions).where(v.kind == kind).values(version=v.version + 1)
            ).rowcount
            if not bumped:
                conn.execute(insert(s.directory_versions).values(kind=kind, version=1))
            version = _version(conn, kind)
            current = {
                row[key]: row
                for row in (
                    dict(r._mapping)
                    for r in conn.execute(
                        select(getattr(c, key), *[getattr(c, n) for n in columns], c.deleted)
                    )
                )
            }
            changed = 0
            seen = set()
            for row in rows:
                seen.add(row[key])
                values = {n: row[n] for n in columns}
                old = current.get(row[key])
                if old is None:
                    conn.execute(insert(table).values({key: row[key], **values, "version": version}))
                elif old["deleted"] or any(old[n] != values[n] for n in columns):
                    conn.execute(
                        update(table)
                        .where(getattr(c, key) == row[key])
                        .values(**values, version=version, deleted=False)
                    )
                else:
                    continue
                changed += 1
            for gone in set(current) - seen:
                if not current[gone]["deleted"]:
                    conn.execute(
                        update(table)
                        .where(getattr(c, key) == gone)
                        .values(deleted=True, version=version)
                    )
                    changed += 1
            if not changed:
                conn.execute(update(s.directory_versions).where(v.kind == kind).values(version=version - 1))
                return version - 1, 0
            return version, changed

        return self._db.run("directory.replace", thd)
