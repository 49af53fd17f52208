"""The SQLite write-ahead log is copied back by its own thread, not by commits."""

from __future__ import annotations

import os
import sqlite3

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial import unittest

from imd.store.database import Database
from imd.store.messages import Send
from imd.store.migrate import upgrade
from imd.store.persist import persist_direct_txn


class CheckpointTests(unittest.TestCase):
    def database(self, mode):
        path = os.path.abspath(self.mktemp()) + ".sqlite3"
        url = f"sqlite:///{path}"
        upgrade(url)
        db = Database(url, sqlite_checkpoint=mode)
        db.start()
        self.addCleanup(db.stop)
        with sqlite3.connect(path) as conn:
            for uid in ("a", "b"):
                conn.execute("INSERT INTO users (uid, password_hash, name, created_at, updated_at) VALUES (?, '', '', 0, 0)", (uid,))
        return db, path

    def autocheckpoint(self, db):
        return db.run_sync("t", lambda conn: conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar())

    def send(self, db, n):
        for i in range(n):
            db.run_raw_sync("t", persist_direct_txn, [Send("a", "", "b", f"m{i}", "text", "hi", "", lambda: 1)])

    @inlineCallbacks
    def test_background(self):
        db, path = self.database("background")
        # The server's connection never checkpoints in a commit.
        self.assertEqual(self.autocheckpoint(db), 0)
        self.send(db, 20)
        for _ in range(200):
            if db.checkpointer.copied:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertGreater(db.checkpointer.copied, 0)
        db.stop()
        self.assertIsNone(db.checkpointer._thread)

    def test_inline(self):
        db, _ = self.database("inline")
        self.assertIsNone(db.checkpointer)
        self.assertEqual(self.autocheckpoint(db), 10000)

    def test_memory_and_postgres_have_none(self):
        self.assertIsNone(Database("sqlite://").checkpointer)
        self.assertIsNone(Database("postgresql://u@127.0.0.1:1/x").checkpointer)
