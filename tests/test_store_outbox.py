"""
The outbox, on SQLite and on Postgres: its repository, and its rows
written in the transaction of the message they tell of.
"""

from __future__ import annotations

import json
import threading

from sqlalchemy import create_engine, func, select, update
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial import unittest

from imd.store import outbox, persist
from imd.store import schema as s
from imd.store.database import normalize_url
from imd.store.messages import Ack, Send
from imd.store.raw import Raw
from imd.store.store import Store
from tests.support import PostgresBackend, SQLiteBackend

NOW = 1_700_000_000_000


class Boom(Exception):
    pass


def now() -> int:
    return NOW


class OutboxMixin:
    def setUp(self):
        self.url = self.database_url()
        self.store = Store(self.url, reactor=reactor)
        self.store.migrate()
        self.store.start()
        self.addCleanup(self.store.stop)
        # A second engine, without the store's BEGIN IMMEDIATE: it sees
        # only what is committed, even while a store transaction is open.
        self.reader = create_engine(normalize_url(self.url))
        self.addCleanup(self.reader.dispose)

    def committed(self) -> tuple[int, int]:
        """(messages, outbox rows) committed."""
        with self.reader.connect() as conn:
            return (
                conn.execute(select(func.count()).select_from(s.messages)).scalar(),
                conn.execute(select(func.count()).select_from(s.outbox)).scalar(),
            )

    def outbox_rows(self) -> list[tuple]:
        o = s.outbox.c
        with self.reader.connect() as conn:
            return [tuple(row) for row in conn.execute(select(o.kind, o.payload, o.created_at, o.next_attempt_at).order_by(o.id))]

    @inlineCallbacks
    def users(self, *uids):
        for uid in uids:
            yield self.store.users.create(uid, None, NOW)

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

    @inlineCallbacks
    def test_committed_with_its_message(self):
        yield self.users("a", "b")
        with self.store.db.engine.connect() as conn:
            transaction = conn.begin()
            [(message, created)] = persist.persist_direct_txn(
                Raw(conn), [Send("a", "phone", "b", "m1", "text", "hi", "", now, "message")]
            )
            self.assertEqual(self.committed(), (0, 0))
            transaction.commit()
        self.assertTrue(created)
        self.assertEqual(self.committed(), (1, 1))
        [(kind, payload, created_at, next_attempt_at)] = self.outbox_rows()
        self.assertEqual((kind, created_at, next_attempt_at), ("message", NOW, NOW))
        self.assertEqual(
            json.loads(payload),
            {"id": message.id, "msgid": "m1", "from": "a", "from_res": "phone", "to": "b", "kind": "text",
             "body": "hi", "time": NOW, "client_time": "", "recalled": False},
        )

    @inlineCallbacks
    def test_rolled_back_with_its_message(self):
        yield self.users("a", "b")
        written = []

        def fail(raw, items):
            # Acknowledgements come after the sends: the outbox row is in.
            written.extend(kind for (kind,) in raw.rows("SELECT kind FROM outbox", (), 1))
            raise Boom()

        self.patch(persist, "_mark_received_txn", fail)
        items = [Send("a", "", "b", "m1", "text", "hi", "", now, "message"), Ack("b", "m0", None)]
        yield self.assertFailure(self.store.db.run_raw("test", persist.persist_direct_txn, items), Boom)
        self.assertEqual(written, ["message"])
        self.assertEqual(self.committed(), (0, 0))

    @inlineCallbacks
    def test_a_resend_adds_no_row(self):
        yield self.users("a", "b")

        def send(msgid):
            return self.store.messages.send_direct("a", "", "b", msgid, "text", "hi", "", now, outbox="message")

        # m0 goes to the store at once; both m1 wait for it and then go
        # in one batch: a resend racing its original.
        results = yield gatherResults([send("m0"), send("m1"), send("m1")])
        results.append((yield send("m1")))
        self.assertEqual([created for _, created in results], [True, True, False, False])
        self.assertEqual(self.committed(), (2, 2))
        self.assertEqual([json.loads(payload)["msgid"] for _, payload, _, _ in self.outbox_rows()], ["m0", "m1"])

    @inlineCallbacks
    def test_group_message(self):
        yield self.users("a")
        yield self.store.groups.create("g1", "g", "a", 1, True, NOW)
        messages = self.store.messages
        message, _ = yield messages.send_group("a", "", "g1", "m1", "text", "hi", "", now, outbox="group")
        yield messages.send_group("a", "", "g1", "m1", "text", "hi", "", now, outbox="group")
        [(kind, payload, _, _)] = self.outbox_rows()
        data = json.loads(payload)
        self.assertEqual((kind, data["id"], data["gid"], data["seq"]), ("group", message.id, "g1", 1))
        self.assertNotIn("to", data)

    @inlineCallbacks
    def test_none_unless_asked(self):
        yield self.users("a", "b")
        yield self.store.groups.create("g1", "g", "a", 1, True, NOW)
        yield self.store.messages.send_direct("a", "", "b", "m1", "text", "hi", "", now)
        yield self.store.messages.send_group("a", "", "g1", "m2", "text", "hi", "", now)
        self.assertEqual(self.committed(), (2, 0))

    @inlineCallbacks
    def test_recall_and_receipt_rows(self):
        yield self.users("a", "b")
        messages = self.store.messages
        message, _ = yield messages.send_direct("a", "", "b", "m1", "text", "hi", "", now)
        self.assertTrue((yield messages.add_receipt(message.id, "b", "read", NOW + 1, outbox="receipt")))
        self.assertFalse((yield messages.add_receipt(message.id, "b", "read", NOW + 2, outbox="receipt")))
        self.assertTrue((yield messages.recall(message.id, NOW + 3, outbox="recall")))
        self.assertFalse((yield messages.recall(message.id, NOW + 4, outbox="recall")))
        yield messages.add_receipt(message.id, "b", "delivered", NOW + 5)
        rows = self.outbox_rows()
        self.assertEqual([(kind, created) for kind, _, created, _ in rows], [("receipt", NOW + 1), ("recall", NOW + 3)])
        self.assertEqual(json.loads(rows[0][1]),
                         {"id": message.id, "msgid": "m1", "from": "b", "to": "a", "kind": "read", "time": NOW + 1})
        recall = json.loads(rows[1][1])
        self.assertEqual((recall["id"], recall["recalled_at"], recall["recalled"], recall["to"]), (message.id, NOW + 3, True, "b"))

    @inlineCallbacks
    def test_notice_rows_and_their_report(self):
        yield self.users("a", "b", "c")
        notices = self.store.notices
        kept = yield notices.add("a", ["b", "c"], None, "x", True, NOW, True, ("notice", {"from": "a"}))
        self.assertEqual([(n.uid, n.body) for n in kept], [("b", "x"), ("c", "x")])
        self.assertEqual(self.committed(), (0, 1))
        self.assertEqual((yield notices.add("a", ["b"], None, "y", True, NOW, False)), [])
        self.assertEqual(self.committed(), (0, 1))
        self.assertEqual([n.body for n in (yield notices.pending("b"))], ["x"])
        self.assertTrue((yield notices.mark_received("b", kept[0].id)))
        self.assertFalse((yield notices.mark_received("c", kept[0].id)))
        self.assertEqual((yield notices.pending("b")), [])
        self.assertEqual((yield notices.purge_received(NOW)), 0)
        self.assertEqual((yield notices.purge_received(NOW + 1)), 1)
        self.assertEqual([n.uid for n in (yield notices.pending("c"))], ["c"])

    @inlineCallbacks
    def test_one_instance_at_a_time_and_takeover(self):
        outbox = self.store.outbox
        yield outbox.add_many([("message", "{}", NOW + i) for i in range(5)])
        rows = yield outbox.claim("A", NOW, NOW + 1000, limit=3)
        self.assertEqual(len(rows), 3)
        # B waits while A's claim holds, and takes over once it has run out.
        self.assertEqual((yield outbox.claim("B", NOW + 999, NOW + 2000)), [])
        yield outbox.delivered(rows[0].id, NOW + 10)
        self.assertEqual((yield outbox.claim("B", NOW + 500, NOW + 2000)), [])
        taken = yield outbox.claim("B", NOW + 1001, NOW + 3000)
        self.assertEqual([r.id for r in taken], [r.id for r in rows[1:]] + [r.id + 3 for r in rows[:2]])
        # A failure lets go of every claim of its instance; the row is due later.
        yield outbox.failed(taken[0].id, "B", "down", NOW + 5000, None)
        self.assertEqual((yield outbox.claim("A", NOW + 1002, NOW + 4000)), [])
        again = yield outbox.claim("A", NOW + 5000, NOW + 9000)
        self.assertEqual((again[0].id, again[0].attempts, again[0].last_error), (taken[0].id, 1, "down"))
        yield outbox.release("A")
        self.assertEqual(len((yield outbox.claim("B", NOW + 5001, NOW + 9000))), 4)
        depth, oldest, dead = yield outbox.stats()
        self.assertEqual((depth, oldest, dead), (4, NOW + 1, 0))

    @inlineCallbacks
    def test_dead_rows_are_skipped_retried_and_dropped(self):
        outbox = self.store.outbox
        yield outbox.add_many([("message", "{}", NOW + i) for i in range(3)])
        [first, *_] = yield outbox.claim("A", NOW, NOW + 1000, limit=1)
        yield outbox.failed(first.id, "A", "gone", NOW + 10, NOW)
        rows = yield outbox.claim("A", NOW + 5, NOW + 1000)
        self.assertEqual([r.id for r in rows], [first.id + 1, first.id + 2])
        self.assertEqual([r.id for r in (yield outbox.undelivered(dead_only=True))], [first.id])
        self.assertEqual((yield outbox.stats()), (2, NOW + 1, 1))
        self.assertEqual((yield outbox.revive([first.id], NOW)), 1)
        self.assertEqual((yield outbox.undelivered(dead_only=True)), [])
        yield outbox.failed(first.id, "A", "gone", NOW + 10, NOW)
        self.assertEqual((yield outbox.drop(None)), 1)
        self.assertEqual(len((yield outbox.undelivered())), 2)

    @inlineCallbacks
    def test_purge_delivered(self):
        outbox = self.store.outbox
        yield outbox.add_many([("message", "{}", NOW + i) for i in range(3)])
        rows = yield outbox.claim("A", NOW + 5, NOW + 1000)
        yield outbox.delivered(rows[0].id, NOW + 10)
        yield outbox.delivered(rows[1].id, NOW + 20)
        self.assertEqual((yield outbox.purge_delivered(NOW + 15)), 1)
        self.assertEqual((yield outbox.purge_delivered(NOW + 15)), 0)
        self.assertEqual(self.committed()[1], 2)
        self.assertEqual([r.id for r in (yield outbox.undelivered())], [rows[2].id])


class SQLiteOutboxTests(OutboxMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresOutboxTests(OutboxMixin, PostgresBackend, unittest.TestCase):
    def test_ids_in_commit_order(self):
        """A writer waits for an earlier one's commit: a later id is never committed first."""
        first = self.store.db.engine.connect()
        self.addCleanup(first.close)
        transaction = first.begin()
        outbox.add_txn(first, "a", {}, NOW)
        done = threading.Event()

        def second():
            with self.store.db.engine.begin() as conn:
                outbox.add_txn(conn, "b", {}, NOW)
            done.set()

        thread = threading.Thread(target=second)
        thread.start()
        # It waits as long as the first is open; a bound, not a duration measured.
        self.assertFalse(done.wait(0.5))
        transaction.commit()
        thread.join(30)
        self.assertTrue(done.is_set())
        self.assertEqual([kind for kind, *_ in self.outbox_rows()], ["a", "b"])
