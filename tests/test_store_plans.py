"""
The query plans of the store's reads of messages and inboxes, on SQLite
and on Postgres: each finds its rows through an index, never by reading
the whole table, which on a deployment's database holds millions of rows.
The schema keeps few indexes on these tables (each costs every message a
page write), so a query that no longer matches one shows up here.
"""

from __future__ import annotations

from sqlalchemy import event
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.store.messages import Ack, Send
from imd.store.missed import MissedQuery
from imd.store.persist import persist_direct_txn
from imd.store.raw import Raw
from tests.support import PostgresBackend, SQLiteBackend
from tests.test_store import NOW, StoreMixin

TABLES = ("messages", "inbox")
# The statements whose plans are read: every one that can read a table.
EXPLAINED = ("SELECT", "UPDATE", "DELETE", "WITH")


class PlansMixin(StoreMixin):
    @inlineCallbacks
    def setUp(self):
        self.store = self.make_store()
        for uid in ("alice", "bob"):
            yield self.store.users.create(uid, None, NOW)
        for n in range(3):
            yield self.store.messages.send_direct("alice", "", "bob", f"m{n}", "text", "hi", "", lambda: NOW, None)
            yield self.store.messages.send_direct("bob", "", "alice", f"r{n}", "text", "hi", "", lambda: NOW, None)

    @inlineCallbacks
    def plans_of(self, call):
        """The plan of every statement C{call()} sends through SQLAlchemy."""
        statements = []

        def seen(conn, cursor, statement, parameters, context, executemany):
            if statement.lstrip().upper().startswith(EXPLAINED):
                statements.append((statement, parameters))

        engine = self.store.db.engine
        event.listen(engine, "before_cursor_execute", seen)
        try:
            yield call()
        finally:
            event.remove(engine, "before_cursor_execute", seen)
        self.assertTrue(statements)
        return [(statement, self.explain(statement, parameters)) for statement, parameters in statements]

    @inlineCallbacks
    def raw_plans_of(self, name, fn, items):
        """The plan of every statement C{fn} runs on a L{Raw} cursor (the hot path) in one transaction of C{items}."""
        statements = []
        execute = Raw.execute

        def seen(raw, sql, params=()):
            if sql.lstrip().upper().startswith(EXPLAINED):
                statements.append((sql, tuple(params)))
            return execute(raw, sql, params)

        self.patch(Raw, "execute", seen)
        yield self.store.db.run_raw(name, fn, items)
        self.assertTrue(statements)
        return [(sql, self.explain(self.raw_sql(sql), params)) for sql, params in statements]

    def assertIndexed(self, plans, index):
        """No statement reads all of a table, and C{index} serves one of them."""
        for statement, plan in plans:
            self.assertEqual([line for line in plan if self.reads_all(line)], [], statement)
        if self.index_by_rule:
            self.assertTrue(any(index in line for _, plan in plans for line in plan), plans)

    @inlineCallbacks
    def test_offline_page(self):
        plans = yield self.plans_of(lambda: self.store.missed.read(MissedQuery("bob", True, False, 500)))
        self.assertIndexed(plans, self.inbox_key)

    @inlineCallbacks
    def test_mark_received_until(self):
        plans = yield self.plans_of(lambda: self.store.messages.mark_received_until("bob", NOW, NOW))
        self.assertIndexed(plans, self.inbox_key)

    @inlineCallbacks
    def test_history_both_directions_from_one_index(self):
        plans = yield self.plans_of(lambda: self.store.messages.history("alice", "bob", 0))
        self.assertIndexed(plans, "ix_messages_to_uid_sender_created_at")

    @inlineCallbacks
    def test_a_batch_of_acknowledgements(self):
        # Hundreds of rows at once, as under load: a join with that many
        # made SQLite index the whole inbox anew (an automatic index).
        sends = [Send("alice", "", "bob", f"b{n}", "text", "hi", "", lambda: NOW) for n in range(400)]
        yield self.store.db.run_raw("messages.direct", persist_direct_txn, sends)
        acks = [Ack("bob", f"b{n}", "alice" if n % 2 else None) for n in range(400)]
        plans = yield self.raw_plans_of("messages.direct", persist_direct_txn, acks)
        self.assertIndexed(plans, "ix_inbox_uid_msgid")
        self.assertIndexed(plans, "ix_inbox_message_id")

    @inlineCallbacks
    def test_unread(self):
        plans = yield self.plans_of(lambda: self.store.messages.unread("alice", ["bob"]))
        self.assertIndexed(plans, "ix_messages_to_uid_sender_created_at")


class SQLitePlansTests(PlansMixin, SQLiteBackend, unittest.TestCase):
    # Without statistics SQLite picks an index by what the query says, as
    # it will on a deployment's database: the one named must serve.
    index_by_rule = True
    inbox_key = "sqlite_autoindex_inbox_1"

    def explain(self, statement, parameters):
        with self.store.db.engine.connect() as conn:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, tuple(parameters)).all()
        return [row[3] for row in rows]

    def raw_sql(self, sql):
        return sql

    def reads_all(self, line):
        # "SCAN t" reads the table, "SCAN t USING ... INDEX i" all of an
        # index; "SEARCH t USING ..." is a look-up, unless through an
        # AUTOMATIC index, which SQLite builds from the whole table first.
        return line.startswith(tuple(f"SCAN {table}" for table in TABLES)) or (
            "AUTOMATIC" in line and line.startswith(tuple(f"SEARCH {table} " for table in TABLES))
        )


class PostgresPlansTests(PlansMixin, PostgresBackend, unittest.TestCase):
    # Postgres weighs the indexes by the rows it expects, a handful here:
    # any index may serve, so long as none of the tables is read whole.
    index_by_rule = False
    inbox_key = "pk_inbox"

    def explain(self, statement, parameters):
        with self.store.db.engine.connect() as conn:
            # A handful of rows: the planner would rightly read them all.
            # Whether an index can serve is the question.
            conn.exec_driver_sql("SET enable_seqscan = off")
            rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
        return [row[0] for row in rows]

    def raw_sql(self, sql):
        return sql.replace("?", "%s")

    @inlineCallbacks
    def test_no_plan_outlives_the_tables_it_was_made_for(self):
        # A statement prepared while the tables were small kept its plan
        # (read them whole) once they had grown: the store's connections
        # prepare none, however often a statement runs.
        def thd(conn):
            raw = Raw(conn)
            for n in range(8):
                persist_direct_txn(raw, [Send("alice", "", "bob", f"p{n}", "text", "hi", "", lambda: NOW)])
            return conn.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar()

        self.assertEqual((yield self.store.db.run("plans.prepared", thd)), 0)

    def reads_all(self, line):
        return any(f"Seq Scan on {table}" in line for table in TABLES)
