# -*- test-case-name: tests.test_qid -*-
"""What users say about themselves: sign, avatar and seed 001's profile."""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from imd.store import schema as s
from imd.store.database import Database

PROFILE_FIELDS = (
    "sex",
    "age",
    "birthday",
    "telephone",
    "cellphone",
    "email",
    "address",
    "zipcode",
    "position",
)


class ProfileStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def set_user_fields(self, uid: str, now: int, **values: str) -> "Deferred[bool]":
        """Set C{sign}, C{avatar} or C{name} on the user; False when there is no such user."""

        def thd(conn: Connection) -> bool:
            return conn.execute(
                update(s.users).where(s.users.c.uid == uid).values(updated_at=now, **values)
            ).rowcount == 1

        return self._db.run("profiles.set_user_fields", thd)

    def get(self, uid: str) -> "Deferred[dict[str, str] | None]":
        """C{uid}'s profile fields (empty strings where unset), with C{name}; None: no user."""

        def thd(conn: Connection) -> dict[str, str] | None:
            user = conn.execute(
                select(s.users.c.name, s.users.c.sign, s.users.c.avatar).where(s.users.c.uid == uid)
            ).first()
            if user is None:
                return None
            p = s.profiles.c
            row = conn.execute(
                select(*[getattr(p, f) for f in PROFILE_FIELDS]).where(p.uid == uid)
            ).first()
            profile = dict.fromkeys(PROFILE_FIELDS, "")
            if row is not None:
                profile.update(row._mapping)
            profile.update(user._mapping)
            return profile

        return self._db.run("profiles.get", thd)

    def set(self, uid: str, values: dict[str, str], now: int) -> "Deferred[None]":
        """Set some of C{PROFILE_FIELDS}; the others keep their values."""

        def thd(conn: Connection) -> None:
            p = s.profiles.c
            if conn.execute(select(p.uid).where(p.uid == uid)).first():
                conn.execute(update(s.profiles).where(p.uid == uid).values(updated_at=now, **values))
            else:
                conn.execute(insert(s.profiles).values(uid=uid, updated_at=now, **values))

        return self._db.run("profiles.set", thd)
