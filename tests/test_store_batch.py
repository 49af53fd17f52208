"""Group commit: batches, order, isolation of a bad request; on each backend."""

import time

from sqlalchemy import func, select
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial import unittest

from imd.store import schema
from imd.store.batch import Batcher, ItemFailed
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
    def test_a_lazy_acknowledgement_is_committed_by_the_stop(self):
        yield self.users("a", "b")
        yield self.store.messages.send_direct("a", "", "b", "m1", "text", "x", "", now)
        acked = self.store.messages.mark_received("b", "m1", lazy=True)
        # Not waiting for its delay: the stop sends it, and its batch's
        # transaction committed before it answers.
        stopped = self.store.stop()
        self.assertEqual((yield acked), 1)
        yield stopped

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


class Runner:
    """A runner whose batches are answered by the test, as a store process's would be."""

    def __init__(self):
        self.sent = []

    def __call__(self, name, fn, items):
        d = Deferred()
        self.sent.append((list(items), d))
        return d

    def answer(self, i, results=None):
        items, d = self.sent[i]
        d.callback([item.upper() for item in items] if results is None else results)

    def fail(self, i):
        self.sent[i][1].errback(RuntimeError("the runner died"))


class DepthTests(unittest.TestCase):
    """A Batcher of depth 2, with a runner that answers in order."""

    def setUp(self):
        self.runner = Runner()
        self.batcher = Batcher(self.runner, "test", None, max_batch=2, depth=2)

    def submit(self, *items):
        return [self.batcher.submit(item) for item in items]

    def batches(self):
        return [items for items, _ in self.runner.sent]

    def test_a_second_batch_only_when_a_full_one_waits(self):
        ds = self.submit("a", "b")
        self.assertEqual(self.batches(), [["a"]])
        ds += self.submit("c")
        self.assertEqual(self.batches(), [["a"], ["b", "c"]])
        ds += self.submit("d", "e", "f")
        # Two in flight: the rest waits, however much.
        self.assertEqual(self.batches(), [["a"], ["b", "c"]])
        self.runner.answer(0)
        self.assertEqual(self.batches(), [["a"], ["b", "c"], ["d", "e"]])
        self.runner.answer(1)
        self.runner.answer(2)
        self.runner.answer(3)
        self.assertEqual([self.successResultOf(d) for d in ds], ["A", "B", "C", "D", "E", "F"])

    def test_a_request_failed_alone_fails_alone(self):
        ds = self.submit("a", "b", "c")
        self.runner.answer(0)
        self.runner.answer(1, ["B", ItemFailed(ValueError("bad c"))])
        self.assertEqual(self.successResultOf(ds[1]), "B")
        self.assertEqual(str(self.failureResultOf(ds[2], ValueError).value), "bad c")

    def test_failed_batches_run_again_alone_and_in_order_before_the_next(self):
        ds = self.submit("a", "b", "c", "d", "e")
        self.assertEqual(self.batches(), [["a"], ["b", "c"]])
        # The runner died with both batches: the lone request fails; the
        # others run again alone, in the order they came, and nothing
        # newer goes before them.
        self.runner.fail(0)
        self.assertEqual(len(self.batches()), 2)
        self.failureResultOf(ds[0], RuntimeError)
        self.runner.fail(1)
        self.assertEqual(self.batches()[2:], [["b"]])
        later = self.batcher.submit("f")
        self.runner.answer(2)
        self.assertEqual(self.batches()[3:], [["c"]])
        self.runner.answer(3)
        self.assertEqual(self.batches()[4:], [["d", "e"]])
        self.runner.answer(4)
        self.assertEqual(self.batches()[5:], [["f"]])
        self.runner.answer(5)
        self.assertEqual([self.successResultOf(d) for d in ds[1:] + [later]], ["B", "C", "D", "E", "F"])

    def test_a_runner_that_raises_fails_the_batch_and_the_next_goes_on(self):
        runner = self.runner

        def raising(name, fn, items):
            raise RuntimeError("no process")

        self.batcher._run = raising
        failed = self.submit("a")
        self.failureResultOf(failed[0], RuntimeError)
        self.batcher._run = runner
        later = self.submit("b")
        runner.answer(0)
        self.assertEqual(self.successResultOf(later[0]), "B")


class LazyTests(unittest.TestCase):
    """Lazy requests (acknowledgements) wait for the next request that is not, or for the delay."""

    def setUp(self):
        self.runner = Runner()
        self.clock = Clock()
        self.batcher = Batcher(self.runner, "test", None, max_batch=3, clock=self.clock, lazy_delay=0.005)

    def batches(self):
        return [items for items, _ in self.runner.sent]

    def test_a_lazy_request_goes_after_the_delay(self):
        d = self.batcher.submit("ack", lazy=True)
        self.clock.advance(0.004)
        self.assertEqual(self.batches(), [])
        self.clock.advance(0.001)
        self.assertEqual(self.batches(), [["ack"]])
        self.runner.answer(0)
        self.assertEqual(self.successResultOf(d), "ACK")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lazy_requests_ride_with_the_next_one_in_their_order(self):
        ds = [self.batcher.submit("ack1", lazy=True), self.batcher.submit("ack2", lazy=True)]
        ds.append(self.batcher.submit("send"))
        self.assertEqual(self.batches(), [["ack1", "ack2", "send"]])
        # Nothing left for the timer to send.
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.runner.answer(0)
        self.assertEqual([self.successResultOf(d) for d in ds], ["ACK1", "ACK2", "SEND"])

    def test_lazy_requests_wait_behind_a_running_batch_until_the_delay(self):
        first = self.batcher.submit("send")
        ack = self.batcher.submit("ack", lazy=True)
        self.runner.answer(0)
        self.successResultOf(first)
        self.assertEqual(self.batches(), [["send"]])
        self.clock.advance(0.005)
        self.assertEqual(self.batches(), [["send"], ["ack"]])
        self.runner.answer(1)
        self.assertEqual(self.successResultOf(ack), "ACK")

    def test_a_full_batch_of_lazy_requests_goes_at_once(self):
        ds = [self.batcher.submit(f"ack{i}", lazy=True) for i in range(4)]
        self.assertEqual(self.batches(), [["ack0", "ack1", "ack2"]])
        self.runner.answer(0)
        # The one left over still waits for the delay, not for ever.
        self.assertEqual(len(self.batches()), 1)
        self.clock.advance(0.005)
        self.assertEqual(self.batches()[1:], [["ack3"]])
        self.runner.answer(1)
        self.assertEqual([self.successResultOf(d) for d in ds], ["ACK0", "ACK1", "ACK2", "ACK3"])

    def test_flush_sends_lazy_requests_now(self):
        d = self.batcher.submit("ack", lazy=True)
        self.batcher.flush()
        self.assertEqual(self.batches(), [["ack"]])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.runner.answer(0)
        self.assertEqual(self.successResultOf(d), "ACK")

    def test_without_a_clock_nothing_is_lazy(self):
        batcher = Batcher(self.runner, "test", None)
        batcher.submit("ack", lazy=True)
        self.assertEqual(self.batches(), [["ack"]])
