# -*- test-case-name: tests.test_store_checkpoint -*-
"""
SQLite's write-ahead log copied back into the database file on a thread of
its own, not inside a commit.

Left to itself, SQLite checkpoints in the transaction whose commit took the
log past ``wal_autocheckpoint`` pages: that commit copies thousands of
pages and syncs the database file before it returns, and every message
waiting for the next batch waits with it.  A batch of one message and its
acknowledgement writes about eight pages, so at 1,000 messages a second
that happened every fraction of a second and set the 99th percentile of
the delivery time.  Here the server's connections never checkpoint, and
this thread runs a PASSIVE checkpoint every C{interval} seconds: it copies
what is committed without waiting for, or blocking, the writer, and the
writer starts the log again from its beginning once it has all been copied.
"""

from __future__ import annotations

import sqlite3
import threading

from twisted.logger import Logger

log = Logger()


class Checkpointer:
    def __init__(self, path: str, interval: float = 0.5) -> None:
        self.path = path
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Pages copied back so far (for tests and curiosity).
        self.copied = 0

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="imd-sqlite-checkpoint", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            # The copy is synced before the log may be started again.
            conn.execute("PRAGMA synchronous=FULL")
            while not self._stop.wait(self.interval):
                self.checkpoint(conn)
        finally:
            conn.close()

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            busy, _, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as e:
            # Another checkpoint (a CLI's) holds the lock, say: next time.
            log.info("sqlite checkpoint: {error}", error=str(e))
            return
        if not busy and copied > 0:
            self.copied += copied
