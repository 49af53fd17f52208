"""The store's repositories and its Database, on SQLite and on Postgres."""

from __future__ import annotations

import os

from sqlalchemy import insert, select
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial import unittest

from imd.errors import Conflict
from imd.store import schema as s
from imd.store.store import Store
from imd.store.users import SmsCode, TokenRow
from tests.support import PostgresBackend, SQLiteBackend

NOW = 1_700_000_000_000


class Boom(Exception):
    pass


def _conflict_as_none(failure):
    failure.trap(Conflict)
    return None


class StoreMixin:
    def make_store(self, observer=None) -> Store:
        store = Store(self.database_url(), reactor=reactor, observer=observer)
        store.migrate()
        store.start()
        self.addCleanup(store.stop)
        return store

    def select_all(self, store: Store, stmt):
        # Straight to the engine, past the repositories, to see what is stored.
        with store.db.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(stmt)]


class UserStoreMixin(StoreMixin):
    @inlineCallbacks
    def test_create(self):
        store = self.make_store()
        user = yield store.users.create(
            "alice", "hash1", NOW, telephone="13800000000", name="Alice"
        )
        self.assertEqual(user.uid, "alice")
        self.assertEqual(user.password_hash, "hash1")
        self.assertEqual(user.telephone, "13800000000")
        self.assertEqual(user.name, "Alice")
        self.assertEqual((user.sign, user.avatar), ("", ""))
        self.assertIs(user.disabled, False)
        self.assertEqual(user.created_at, NOW)
        self.assertEqual((yield store.users.get("alice")), user)

    @inlineCallbacks
    def test_create_without_password_or_telephone(self):
        store = self.make_store()
        user = yield store.users.create("bob", None, NOW)
        self.assertIsNone(user.password_hash)
        self.assertIsNone(user.telephone)
        self.assertEqual(user.name, "")
        # NULL telephones are not duplicates of each other.
        yield store.users.create("carol", None, NOW)

    @inlineCallbacks
    def test_default_friend_group(self):
        store = self.make_store()
        yield store.users.create("alice", "h", NOW)
        g = s.friend_groups.c
        rows = self.select_all(
            store, select(g.uid, g.gid, g.name, g.weight, g.is_default)
        )
        self.assertEqual(rows, [("alice", "1", "我的好友", 0, True)])

    @inlineCallbacks
    def test_duplicate_uid(self):
        store = self.make_store()
        yield store.users.create("alice", "h", NOW, telephone="1")
        yield self.assertFailure(store.users.create("alice", "other", NOW), Conflict)
        user = yield store.users.get("alice")
        self.assertEqual(user.password_hash, "h")
        # The failed create added no second friend group.
        rows = self.select_all(store, select(s.friend_groups.c.uid))
        self.assertEqual(rows, [("alice",)])

    @inlineCallbacks
    def test_duplicate_telephone(self):
        store = self.make_store()
        yield store.users.create("alice", "h", NOW, telephone="13800000000")
        yield self.assertFailure(
            store.users.create("bob", "h", NOW, telephone="13800000000"), Conflict
        )
        self.assertIsNone((yield store.users.get("bob")))
        rows = self.select_all(store, select(s.friend_groups.c.uid))
        self.assertEqual(rows, [("alice",)])

    @inlineCallbacks
    def test_racing_creates_of_one_uid(self):
        # Both pass the existence check; the primary key decides, and the
        # loser gets Conflict rather than a database error.
        store = self.make_store()
        results = yield gatherResults(
            [
                store.users.create("alice", f"h{i}", NOW).addErrback(_conflict_as_none)
                for i in range(5)
            ]
        )
        self.assertEqual(len([r for r in results if r is not None]), 1)
        rows = self.select_all(store, select(s.users.c.uid))
        self.assertEqual(rows, [("alice",)])

    @inlineCallbacks
    def test_get(self):
        store = self.make_store()
        yield store.users.create("alice", "h", NOW, telephone="13800000000")
        self.assertEqual((yield store.users.get("alice")).uid, "alice")
        self.assertIsNone((yield store.users.get("nobody")))
        self.assertEqual((yield store.users.get_by_telephone("13800000000")).uid, "alice")
        self.assertIsNone((yield store.users.get_by_telephone("13900000000")))

    @inlineCallbacks
    def test_set_password_hash(self):
        store = self.make_store()
        yield store.users.create("alice", "old", NOW)
        self.assertIs((yield store.users.set_password_hash("alice", "new", NOW + 1)), True)
        self.assertEqual((yield store.users.get("alice")).password_hash, "new")
        rows = self.select_all(store, select(s.users.c.updated_at))
        self.assertEqual(rows, [(NOW + 1,)])
        self.assertIs((yield store.users.set_password_hash("nobody", "new", NOW)), False)

    @inlineCallbacks
    def test_list(self):
        store = self.make_store()
        for uid in ("carol", "alice", "dave", "bob"):
            yield store.users.create(uid, "h", NOW)

        def uids(users):
            return [u.uid for u in users]

        self.assertEqual(uids((yield store.users.list())), ["alice", "bob", "carol", "dave"])
        self.assertEqual(uids((yield store.users.list(limit=2))), ["alice", "bob"])
        self.assertEqual(uids((yield store.users.list(after="bob"))), ["carol", "dave"])
        self.assertEqual(uids((yield store.users.list(after="alice", limit=2))), ["bob", "carol"])
        # after need not be an existing uid.
        self.assertEqual(uids((yield store.users.list(after="b"))), ["bob", "carol", "dave"])
        self.assertEqual((yield store.users.list(after="dave")), [])

    @inlineCallbacks
    def test_list_pages_through_everything(self):
        store = self.make_store()
        expected = [f"u{i:02d}" for i in range(7)]
        for uid in reversed(expected):
            yield store.users.create(uid, "h", NOW)
        seen, after = [], ""
        while True:
            page = yield store.users.list(after=after, limit=3)
            if not page:
                break
            self.assertLessEqual(len(page), 3)
            seen.extend(u.uid for u in page)
            after = page[-1].uid
        self.assertEqual(seen, expected)

    @inlineCallbacks
    def test_unicode(self):
        store = self.make_store()
        user = yield store.users.create("张三", "h", NOW, name="张三丰 🀄")
        self.assertEqual(user.uid, "张三")
        self.assertEqual(user.name, "张三丰 🀄")
        again = yield store.users.get("张三")
        self.assertEqual(again.name, "张三丰 🀄")
        self.assertEqual([u.uid for u in (yield store.users.list())], ["张三"])

    @inlineCallbacks
    def test_concurrent_creates(self):
        store = self.make_store()
        uids = [f"user{i:02d}" for i in range(20)]
        users = yield gatherResults(
            [
                store.users.create(uid, "h", NOW, telephone=f"1380000{i:04d}")
                for i, uid in enumerate(uids)
            ]
        )
        self.assertEqual(sorted(u.uid for u in users), uids)
        self.assertEqual([u.uid for u in (yield store.users.list())], uids)
        groups = self.select_all(store, select(s.friend_groups.c.uid))
        self.assertEqual(sorted(g for (g,) in groups), uids)


class TokenStoreMixin(StoreMixin):
    @inlineCallbacks
    def make_store_with_users(self, *uids):
        store = self.make_store()
        for uid in uids:
            yield store.users.create(uid, "h", NOW)
        return store

    @inlineCallbacks
    def test_add_get(self):
        store = yield self.make_store_with_users("alice")
        yield store.tokens.add("t1", "alice", NOW, NOW + 1000)
        self.assertEqual((yield store.tokens.get("t1")), TokenRow("alice", NOW, NOW + 1000, False))
        self.assertIsNone((yield store.tokens.get("t2")))

    @inlineCallbacks
    def test_extend_only_forward(self):
        store = yield self.make_store_with_users("alice")
        yield store.tokens.add("t1", "alice", NOW, NOW + 1000)
        yield store.tokens.extend("t1", NOW + 5000)
        self.assertEqual((yield store.tokens.get("t1")).expires_at, NOW + 5000)
        # A renewal computed before a later one must not shorten it.
        yield store.tokens.extend("t1", NOW + 2000)
        self.assertEqual((yield store.tokens.get("t1")).expires_at, NOW + 5000)
        yield store.tokens.extend("missing", NOW + 9000)
        self.assertIsNone((yield store.tokens.get("missing")))

    @inlineCallbacks
    def test_revoke(self):
        store = yield self.make_store_with_users("alice")
        yield store.tokens.add("t1", "alice", NOW, NOW + 1000)
        self.assertIs((yield store.tokens.revoke("t1")), True)
        self.assertIsNone((yield store.tokens.get("t1")))
        self.assertIs((yield store.tokens.revoke("t1")), False)

    @inlineCallbacks
    def test_revoke_all(self):
        store = yield self.make_store_with_users("alice", "bob")
        for t in ("a1", "a2", "a3"):
            yield store.tokens.add(t, "alice", NOW, NOW + 1000)
        yield store.tokens.add("b1", "bob", NOW, NOW + 1000)
        self.assertEqual((yield store.tokens.revoke_all("alice", keep="a2")), 2)
        self.assertIsNone((yield store.tokens.get("a1")))
        self.assertIsNotNone((yield store.tokens.get("a2")))
        self.assertIsNone((yield store.tokens.get("a3")))
        self.assertEqual((yield store.tokens.revoke_all("alice")), 1)
        self.assertIsNone((yield store.tokens.get("a2")))
        self.assertEqual((yield store.tokens.revoke_all("alice")), 0)
        self.assertIsNotNone((yield store.tokens.get("b1")))

    @inlineCallbacks
    def test_purge_expired(self):
        store = yield self.make_store_with_users("alice")
        yield store.tokens.add("past", "alice", NOW - 2000, NOW - 1)
        yield store.tokens.add("now", "alice", NOW - 2000, NOW)
        yield store.tokens.add("future", "alice", NOW - 2000, NOW + 1)
        self.assertEqual((yield store.tokens.purge_expired(NOW)), 2)
        self.assertIsNone((yield store.tokens.get("past")))
        self.assertIsNone((yield store.tokens.get("now")))
        self.assertIsNotNone((yield store.tokens.get("future")))
        self.assertEqual((yield store.tokens.purge_expired(NOW)), 0)


class SmsCodeStoreMixin(StoreMixin):
    TEL = "13800000000"

    @inlineCallbacks
    def test_put_and_resend_interval(self):
        store = self.make_store()
        codes = store.sms_codes
        self.assertIs((yield codes.put(self.TEL, "c1", NOW, NOW + 300_000, NOW - 60_000)), True)
        # Asked again 10 s later, with a 60 s interval: refused, code kept.
        later = NOW + 10_000
        stored = yield codes.put(self.TEL, "c2", later, later + 300_000, later - 60_000)
        self.assertIs(stored, False)
        self.assertEqual((yield codes.take_attempt(self.TEL)).code_hash, "c1")
        # 60 s after the first: a new code with a fresh attempt count.
        later = NOW + 60_000
        stored = yield codes.put(self.TEL, "c3", later, later + 300_000, later - 60_000)
        self.assertIs(stored, True)
        self.assertEqual(
            (yield codes.take_attempt(self.TEL)), SmsCode("c3", later, later + 300_000, 0)
        )

    @inlineCallbacks
    def test_put_other_telephones_independent(self):
        store = self.make_store()
        codes = store.sms_codes
        self.assertIs((yield codes.put("1", "c1", NOW, NOW + 1, NOW - 60_000)), True)
        self.assertIs((yield codes.put("2", "c2", NOW, NOW + 1, NOW - 60_000)), True)

    @inlineCallbacks
    def test_take_attempt(self):
        store = self.make_store()
        codes = store.sms_codes
        self.assertIsNone((yield codes.take_attempt(self.TEL)))
        yield codes.put(self.TEL, "c1", NOW, NOW + 300_000, NOW - 60_000)
        for expected in range(3):
            code = yield codes.take_attempt(self.TEL)
            self.assertEqual(code, SmsCode("c1", NOW, NOW + 300_000, expected))
        rows = self.select_all(store, select(s.sms_codes.c.attempts))
        self.assertEqual(rows, [(3,)])

    @inlineCallbacks
    def test_delete(self):
        store = self.make_store()
        codes = store.sms_codes
        yield codes.put(self.TEL, "c1", NOW, NOW + 300_000, NOW - 60_000)
        yield codes.delete(self.TEL)
        self.assertIsNone((yield codes.take_attempt(self.TEL)))
        yield codes.delete(self.TEL)
        # Nothing left to wait for: a new code may go out at once.
        self.assertIs((yield codes.put(self.TEL, "c2", NOW + 1, NOW + 2, NOW - 60_000)), True)


    @inlineCallbacks
    def test_racing_attempts_each_see_their_own_count(self):
        # Otherwise a burst of guesses all see the count from before the
        # burst and slip past the attempt limit.
        store = self.make_store()
        codes = store.sms_codes
        yield codes.put(self.TEL, "c1", NOW, NOW + 300_000, NOW - 60_000)
        results = yield gatherResults([codes.take_attempt(self.TEL) for _ in range(10)])
        self.assertEqual(sorted(code.attempts for code in results), list(range(10)))

    @inlineCallbacks
    def test_racing_first_puts_send_one_code(self):
        store = self.make_store()
        codes = store.sms_codes
        results = yield gatherResults(
            [codes.put(self.TEL, f"c{i}", NOW, NOW + 300_000, NOW - 60_000) for i in range(5)]
        )
        self.assertEqual(results.count(True), 1)
        code = yield codes.take_attempt(self.TEL)
        self.assertEqual(code.code_hash, f"c{results.index(True)}")

    @inlineCallbacks
    def test_racing_resends_send_one_code(self):
        store = self.make_store()
        codes = store.sms_codes
        yield codes.put(self.TEL, "old", NOW, NOW + 300_000, NOW - 60_000)
        later = NOW + 60_000
        results = yield gatherResults(
            [codes.put(self.TEL, f"c{i}", later, later + 300_000, later - 60_000) for i in range(5)]
        )
        self.assertEqual(results.count(True), 1)
        code = yield codes.take_attempt(self.TEL)
        self.assertEqual(code.code_hash, f"c{results.index(True)}")


class DatabaseMixin(StoreMixin):
    @inlineCallbacks
    def test_error_rolls_back(self):
        store = self.make_store()

        def half_done(conn):
            conn.execute(
                insert(s.users).values(uid="ghost", created_at=NOW, updated_at=NOW)
            )
            raise Boom("after the insert")

        yield self.assertFailure(store.db.run("test.half_done", half_done), Boom)
        self.assertIsNone((yield store.users.get("ghost")))
        self.assertEqual(self.select_all(store, select(s.users.c.uid)), [])

    @inlineCallbacks
    def test_result_and_arguments(self):
        store = self.make_store()

        def add(conn, a, b=0):
            return a + b

        self.assertEqual((yield store.db.run("test.add", add, 2, b=3)), 5)

    @inlineCallbacks
    def test_observer(self):
        calls = []
        store = self.make_store(observer=lambda *args: calls.append(args))

        def fail(conn):
            raise Boom()

        yield store.db.run("test.ok", lambda conn: None)
        yield self.assertFailure(store.db.run("test.fail", fail), Boom)
        yield store.users.get("nobody")
        self.assertEqual([(name, ok) for name, _, ok in calls],
                         [("test.ok", True), ("test.fail", False), ("users.get", True)])
        for _, seconds, _ in calls:
            self.assertIsInstance(seconds, float)
            self.assertGreaterEqual(seconds, 0)

    @inlineCallbacks
    def test_ping(self):
        store = self.make_store()
        self.assertIsNone((yield store.db.ping()))

    def test_dialect(self):
        store = self.make_store()
        self.assertEqual(store.db.dialect, self.backend)
        self.assertTrue(store.db.running)

    def test_stop_idempotent(self):
        store = self.make_store()
        store.stop()
        store.stop()
        self.assertFalse(store.db.running)


class SQLiteUserStoreTests(UserStoreMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresUserStoreTests(UserStoreMixin, PostgresBackend, unittest.TestCase):
    pass


class SQLiteTokenStoreTests(TokenStoreMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresTokenStoreTests(TokenStoreMixin, PostgresBackend, unittest.TestCase):
    pass


class SQLiteSmsCodeStoreTests(SmsCodeStoreMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresSmsCodeStoreTests(SmsCodeStoreMixin, PostgresBackend, unittest.TestCase):
    pass


class SQLiteDatabaseTests(DatabaseMixin, SQLiteBackend, unittest.TestCase):
    def test_checkpoint_pages(self):
        for pages in (None, 1234):
            store = Store(self.database_url(), reactor=reactor, **({} if pages is None else {"checkpoint_pages": pages}))
            self.addCleanup(store.db.engine.dispose)
            with store.db.engine.connect() as conn:
                found = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
            self.assertEqual(found, pages or 10_000)


class PostgresDatabaseTests(DatabaseMixin, PostgresBackend, unittest.TestCase):
    pass


class RetryTests(unittest.TestCase):
    """A transaction Postgres aborted as a deadlock is run again; other errors are not."""

    def setUp(self):
        from imd.store.database import Database

        self.db = Database(f"sqlite:///{os.path.abspath(self.mktemp())}.sqlite3", reactor=reactor)

    def aborted(self, sqlstate):
        from sqlalchemy.exc import OperationalError

        class Orig(Exception):
            pass

        orig = Orig("aborted")
        orig.sqlstate = sqlstate
        return OperationalError("SELECT 1", {}, orig)

    def test_deadlock_retried(self):
        calls = []

        def fn(conn):
            calls.append(1)
            if len(calls) < 3:
                raise self.aborted("40P01")
            return "done"

        self.assertEqual(self.db.run_sync("t", fn), "done")
        self.assertEqual(len(calls), 3)

    def test_gives_up(self):
        from sqlalchemy.exc import OperationalError

        def fn(conn):
            raise self.aborted("40001")

        self.assertRaises(OperationalError, self.db.run_sync, "t", fn)

    def test_other_errors_not_retried(self):
        from sqlalchemy.exc import OperationalError

        calls = []

        def fn(conn):
            calls.append(1)
            raise self.aborted("08006")

        self.assertRaises(OperationalError, self.db.run_sync, "t", fn)
        self.assertEqual(len(calls), 1)

    def test_raw_deadlock_retried_and_rolled_back(self):
        # run_raw sees the driver's error bare, not wrapped by SQLAlchemy.
        self.db.run_sync("t", lambda conn: conn.exec_driver_sql("CREATE TABLE t (n INTEGER)"))
        calls = []

        def fn(raw):
            calls.append(1)
            raw.execute("INSERT INTO t VALUES (?)", [len(calls)])
            if len(calls) < 3:
                raise self.aborted("40P01").orig
            return "done"

        self.assertEqual(self.db.run_raw_sync("t", fn), "done")
        self.assertEqual(len(calls), 3)
        # The aborted attempts wrote nothing.
        self.assertEqual(self.db.run_sync("t", lambda conn: conn.exec_driver_sql("SELECT n FROM t").all()), [(3,)])

        def other(raw):
            calls.append(1)
            raise ValueError("not a database error")

        self.assertRaises(ValueError, self.db.run_raw_sync, "t", other)
        self.assertEqual(len(calls), 4)
