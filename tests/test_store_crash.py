"""
Nothing acknowledged is lost when the process dies inside a batch: a child
store is killed (SIGKILL) before each statement of a batch in turn, and
every message it acknowledged, and every one acknowledged when the client
sends it again, must then be in its recipient's offline messages.
"""

from __future__ import annotations

import signal

from sqlalchemy import select
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.store import schema as s
from imd.store.store import Store
from tests import crash_store
from tests.processes import spawn
from tests.support import PostgresBackend, SQLiteBackend, child_env, repo_root


class CrashMixin:
    def fresh_url(self) -> str:
        """An empty, migrated database with the three users."""
        url = self.database_url()
        store = Store(url, reactor=reactor)
        store.migrate()
        with store.db.engine.begin() as conn:
            for uid in ("alice", "bob", "carol"):
                conn.execute(s.users.insert().values(uid=uid, created_at=1, updated_at=1))
        store.db.engine.dispose()
        return url

    @inlineCallbacks
    def run_child(self, url: str, kill_at: int):
        child = spawn(self, ["-m", "tests.crash_store", url, str(kill_at)], child_env(), repo_root())
        yield child.ended()
        lines = child.out.decode().splitlines()
        acked = {tuple(line.split()[1:]) for line in lines if line.startswith("acked ")}
        statements = [int(line.split()[1]) for line in lines if line.startswith("statements ")]
        return acked, statements, child

    @inlineCallbacks
    def check(self, url: str, acked: set, finished: bool):
        store = Store(url, reactor=reactor)
        store.start()
        self.addCleanup(store.stop)
        # Acknowledged in the second batch, if it committed: out of the inbox.
        received = {("bob", "alice", "a0"), ("bob", "carol", "c1")} if finished else set()
        m, i = s.messages.c, s.inbox.c
        with store.db.engine.connect() as conn:
            orphans = conn.execute(
                select(m.to_uid, m.sender, m.msgid)
                .outerjoin(s.inbox, i.message_id == m.id)
                .where(m.to_uid.is_not(None), i.message_id.is_(None))
            ).all()
        self.assertEqual(set(map(tuple, orphans)), received, "stored 1:1 messages with no inbox row")
        # Every message is sent again, as a client does that got no answer
        # (or an answer it lost): each must be acknowledged ...
        items = dict.fromkeys(crash_store.FIRST + crash_store.SECOND)
        for sender, to, msgid in items:
            result = yield store.messages.send_direct(
                sender, "phone", to, msgid, "text", "again", "", lambda: crash_store.NOW + 1
            )
            self.assertIsNotNone(result, (sender, msgid))
        # ... and offline, once, unless its recipient acknowledged it in a
        # batch that committed.
        for uid in ("alice", "bob"):
            offline = yield store.messages.offline(uid)
            got = [(message.sender, message.msgid) for message in offline]
            expected = [
                (sender, msgid)
                for sender, to, msgid in items
                if to == uid and (uid, sender, msgid) not in received
            ]
            self.assertEqual(sorted(got), sorted(expected), uid)
        for sender, msgid in acked:
            self.assertIsNotNone((yield store.messages.get(sender, msgid)))

    @inlineCallbacks
    def test_kill_before_each_statement(self):
        url = self.fresh_url()
        acked, statements, child = yield self.run_child(url, 10_000)
        self.assertEqual(child.exit_code, 0, child.output())
        (total,) = statements
        yield self.check(url, acked, finished=True)
        self.assertEqual(acked, {(sender, msgid) for sender, _, msgid in crash_store.FIRST + crash_store.SECOND})
        for kill_at in range(1, total + 1):
            url = self.fresh_url()
            acked, statements, child = yield self.run_child(url, kill_at)
            self.assertEqual((statements, child.exit_signal), ([], signal.SIGKILL), child.output())
            yield self.check(url, acked, finished=False)


class SQLiteCrashTests(CrashMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresCrashTests(CrashMixin, PostgresBackend, unittest.TestCase):
    pass
