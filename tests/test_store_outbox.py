"""The outbox, on SQLite and on Postgres."""

from __future__ import annotations

from sqlalchemy import update
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.store import schema as s
from imd.store.store import Store
from tests.support import PostgresBackend, SQLiteBackend

NOW = 1_700_000_000_000


class OutboxMixin:
    def setUp(self):
        self.store = Store(self.database_url(), reactor=reactor)
        self.store.migrate()
        self.store.start()
        self.addCleanup(self.store.stop)

    @inlineCallbacks
    def test_add_many_and_due(self):
        yield self.store.outbox.add_many([("a", '{"n":1}', NOW + 20), ("b", '{"n":2}', NOW + 10), ("c", "{}", NOW + 30)])
        yield self.store.outbox.add_many([])
        due = yield self.store.outbox.due(NOW + 20)
        self.assertEqual([(r.kind, r.payload, r.created_at, r.next_attempt_at) for r in due],
                         [("b", '{"n":2}', NOW + 10, NOW + 10), ("a", '{"n":1}', NOW + 20, NOW + 20)])
        self.assertEqual([(r.attempts, r.last_error) for r in due], [(0, None), (0, None)])
        self.assertEqual([r.kind for r in (yield self.store.outbox.due(NOW + 30, limit=2))], ["b", "a"])
        with self.store.db.engine.begin() as conn:
            conn.execute(update(s.outbox).where(s.outbox.c.kind == "b").values(delivered_at=NOW + 15))
        self.assertEqual([r.kind for r in (yield self.store.outbox.due(NOW + 30))], ["a", "c"])


class SQLiteOutboxTests(OutboxMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresOutboxTests(OutboxMixin, PostgresBackend, unittest.TestCase):
    pass
