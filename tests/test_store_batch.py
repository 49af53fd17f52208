"""Group commit: batches, order, isolation of a bad request; on each backend."""

import time

from sqlalchemy import func, select
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial import unittest

from imd.store import schema
from imd.store.batch import Batcher
from imd.store.store import Store
from tests.support import PostgresBackend, SQLiteBackend


def now():
    return int(time.time() * 1000)


class BatchTestsMixin:
    def setUp(self):
        self.store = Store(self.database_url(), reactor=reactor)
        self.store.migrate()
        self.store.start()
        self.addCleanup(self.store.stop)

    @inlineCallbacks
    def users(self, *uids):
        for uid in uids:
            yield self.store.users.create(uid, None, now())

    @inlineCallbacks
    def test_concurrent_sends_are_batched_and_keep_order(self):
        yield self.users("a", "b", "c")
        batches = []
        observer = self.store.db._observer
        self.store.db._observer = lambda name, s, ok: batches.append(name)
        self.addCleanup(setattr, self.store.db, "_observer", observer)
        sends = [
            self.store.messages.send_direct("a", "", "b" if i % 2 else "c", f"m{i}", "text", str(i), "", now)
            for i in range(200)
        ]
        results = yield gatherResults(sends)
        self.assertTrue(all(created for _, created in results))
        # Far fewer transactions than messages.
        self.assertTrue(0 < batches.count("messages.direct") < 20, batches)
        for uid in ("b", "c"):
            offline = yield self.store.messages.offline(uid, limit=1000)
            bodies = [int(m.body) for m in offline]
            self.assertEqual(bodies, sorted(bodies))
            self.assertEqual(len(bodies), 100)
        with self.store.db.engine.connect() as conn:
            seqs = dict(conn.execute(select(schema.users.c.uid, schema.users.c.inbox_seq)).all())
        self.assertEqual((seqs["b"], seqs["c"]), (100, 100))

    @inlineCallbacks
    def test_resend_in_the_same_batch_and_unknown_recipient(self):
        yield self.users("a", "b")
        sends = [
            self.store.messages.send_direct("a", "", "b", "same", "text", "x", "", now),
            self.store.messages.send_direct("a", "", "b", "same", "text", "x", "", now),
            self.store.messages.send_direct("a", "", "nobody", "m2", "text", "x", "", now),
            self.store.messages.send_direct("a", "", "b", "m3", "text", "y", "", now),
        ]
        first, second, missing, third = yield gatherResults(sends)
        self.assertTrue(first[1])
        self.assertEqual(second, (first[0], False))
        self.assertIsNone(missing)
        self.assertTrue(third[1])
        with self.store.db.engine.connect() as conn:
            self.assertEqual(conn.execute(select(func.count()).select_from(schema.messages)).scalar(), 2)

    @inlineCallbacks
    def test_group_sends_number_in_order(self):
        yield self.users("a")
        group = yield self.store.groups.create("g1", "g", "a", 1, True, now())
        results = yield gatherResults(
            [self.store.messages.send_group("a", "", group.gid, f"g{i}", "text", str(i), "", now) for i in range(50)]
        )
        self.assertEqual([m.group_seq for m, _ in results], list(range(1, 51)))
        missing = yield self.store.messages.send_group("a", "", "nogroup", "x", "text", "x", "", now)
        self.assertIsNone(missing)

    @inlineCallbacks
    def test_acknowledgements_batched(self):
        yield self.users("a", "b")
        for i in range(20):
            yield self.store.messages.send_direct("a", "", "b", f"m{i}", "text", "x", "", now)
        counts = yield gatherResults(
            [self.store.messages.mark_received("b", f"m{i}") for i in range(0, 20, 2)]
            + [self.store.messages.mark_received("b", "m1", sender="someone-else"), self.store.messages.mark_received("b", "nope")]
        )
        self.assertEqual(counts, [1] * 10 + [0, 0])
        offline = yield self.store.messages.offline("b")
        self.assertEqual([m.msgid for m in offline], [f"m{i}" for i in range(1, 20, 2)])

    @inlineCallbacks
    def test_a_bad_request_fails_alone(self):
        def fn(conn, items):
            if "bad" in items:
                raise ValueError("bad item")
            return [item.upper() for item in items]

        batcher = Batcher(self.store.db.run, "test", fn)
        ds = [batcher.submit(x) for x in ("a", "b", "bad", "c")]
        self.assertEqual((yield ds[0]), "A")
        self.assertEqual((yield ds[1]), "B")
        yield self.assertFailure(ds[2], ValueError)
        self.assertEqual((yield ds[3]), "C")
        self.assertEqual((yield batcher.submit("d")), "D")


class SQLiteBatchTests(BatchTestsMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresBatchTests(BatchTestsMixin, PostgresBackend, unittest.TestCase):
    pass
