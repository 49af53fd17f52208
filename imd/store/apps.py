# -*- test-case-name: tests.test_serverapi,tests.test_cli -*-
"""Apps: the AppKey and AppSecret a business server signs its calls with."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred

from imd.errors import Conflict
from imd.store import schema as s
from imd.store.database import Database

a = s.apps.c


@dataclass(frozen=True)
class App:
    app_key: str
    name: str
    secret: str
    created_at: int


_COLUMNS = [getattr(a, f) for f in App.__dataclass_fields__]


class AppStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, app_key: str, name: str, secret: str, now: int) -> "Deferred[App]":
        def thd(conn: Connection) -> App:
            if conn.execute(select(a.app_key).where(a.name == name)).first():
                raise Conflict(f"an app named {name} already exists")
            try:
                conn.execute(insert(s.apps).values(app_key=app_key, name=name, secret=secret, created_at=now))
            except IntegrityError:
                raise Conflict(f"an app named {name} already exists") from None
            return App(app_key, name, secret, now)

        return self._db.run("apps.add", thd)

    def get(self, app_key: str) -> "Deferred[App | None]":
        def thd(conn: Connection) -> App | None:
            row = conn.execute(select(*_COLUMNS).where(a.app_key == app_key)).first()
            return None if row is None else App(*row)

        return self._db.run("apps.get", thd)

    def list(self) -> "Deferred[list[App]]":
        def thd(conn: Connection) -> list[App]:
            return [App(*row) for row in conn.execute(select(*_COLUMNS).order_by(a.name))]

        return self._db.run("apps.list", thd)

    def remove(self, name_or_key: str) -> "Deferred[bool]":
        """Remove the app named C{name_or_key}, or whose AppKey it is."""

        def thd(conn: Connection) -> bool:
            return conn.execute(
                delete(s.apps).where(or_(a.name == name_or_key, a.app_key == name_or_key))
            ).rowcount > 0

        return self._db.run("apps.remove", thd)
