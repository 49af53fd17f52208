# -*- test-case-name: tests.test_store -*-
"""
The engine and the thread pool every repository runs its statements on.

A repository method defines a synchronous function of a SQLAlchemy
connection and hands it to :meth:`Database.run`, which runs it inside one
transaction on a dedicated thread pool sized to the connection pool, and
returns a Deferred of its result.  Rows are fetched inside the thread.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Protocol, TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from imd.config import DatabaseConfig
from imd.store.raw import Raw

T = TypeVar("T")
log = Logger()
# Postgres' deadlock_detected and serialization_failure: the transaction
# was rolled back whole and may simply be run again.
RETRY_SQLSTATES = ("40P01", "40001")
RETRIES = 3
DEFAULT_CHECKPOINT_PAGES = DatabaseConfig.sqlite_checkpoint_pages


class Observer(Protocol):
    def __call__(self, name: str, seconds: float, ok: bool) -> None: ...


def normalize_url(url: str) -> URL:
    """
    Parse C{url}; a bare C{postgresql://} URL gets the psycopg 3 driver,
    which is the one imd installs.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_imd_engine(url: str, pool_size: int = 5, checkpoint_pages: int = DEFAULT_CHECKPOINT_PAGES) -> Engine:
    """C{checkpoint_pages}: SQLite's C{wal_autocheckpoint} (database.sqlite_checkpoint_pages)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, checkpoint_pages)
    return create_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=0,
        # A connection that died with a database restart is replaced, not
        # handed to a request.
        pool_pre_ping=True,
        # No prepared statements: psycopg prepares a statement on its fifth
        # run, and Postgres then keeps a plan made for the tables as they
        # were, which on a new database are empty.  The hot path's look-up
        # of resent messages kept reading every message, a batch slower as
        # the table grew (docs/benchmarks.rst, round 8).  Planned on each
        # run, a statement sees the tables as they are.
        connect_args={"connect_timeout": 5, "prepare_threshold": None},
    )


def sqlite_in_memory(url: URL) -> bool:
    """Whether C{url} names a SQLite database in memory, one process's own."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _sqlite_engine(url: URL, checkpoint_pages: int) -> Engine:
    path = url.database
    memory = sqlite_in_memory(url)
    if memory:
        # One shared connection, or every thread would see its own database.
        engine = create_engine(
            url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        engine = create_engine(
            url,
            pool_size=1,
            max_overflow=0,
            connect_args={"check_same_thread": False, "timeout": 30},
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        # Python's sqlite3 opens a transaction on its own only before a
        # statement that starts with INSERT, UPDATE, DELETE or REPLACE; a
        # "WITH ... INSERT" ran outside any transaction and committed
        # alone, half a batch.  Off, and imd says BEGIN itself (below),
        # so every statement of a transaction commits or rolls back with it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: an acknowledged commit survives power loss, not just a kill.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # 64 MiB of pages (the default is 2 MiB): a batch of messages
        # touches a leaf page per sender and per recipient in each index.
        cursor.execute("PRAGMA cache_size=-65536")
        # The commit that takes the WAL past this many pages copies it
        # back into the database and waits for that.  Fewer copies write
        # each hot index page once for many commits; each copy is longer.
        # Which wins depends on the disk (docs/benchmarks.rst, round 4).
        cursor.execute(f"PRAGMA wal_autocheckpoint={int(checkpoint_pages)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock now, waiting up to busy_timeout:
        # a transaction that read first and another process (the CLI)
        # wrote meanwhile would otherwise fail at its first write with
        # SQLITE_BUSY, which no timeout waits out.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Database:
    """
    An engine plus the thread pool its statements run on.

    SQLite gets one thread (it has one writer anyway); Postgres one thread
    per pooled connection, so a statement never waits for a connection
    while holding a thread.
    """

    def __init__(
        self,
        url: str,
        pool_size: int = 5,
        reactor: Any = None,
        observer: Observer | None = None,
        checkpoint_pages: int = DEFAULT_CHECKPOINT_PAGES,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.url = url
        self.engine = create_imd_engine(url, pool_size, checkpoint_pages)
        self.dialect = self.engine.dialect.name
        threads = 1 if self.dialect == "sqlite" else pool_size
        self.reactor = reactor
        self._threadpool = ThreadPool(minthreads=1, maxthreads=threads, name="imd-store")
        self._observer = observer
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        if not self._running:
            self._threadpool.start()
            self._running = True

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._threadpool.stop()
            self.engine.dispose()

    def run(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> "Deferred[T]":
        """
        Run C{fn(conn, *args, **kwargs)} in one transaction on the store's
        thread pool; C{name} labels it in logs and metrics.
        """
        return deferToThreadPool(
            self.reactor, self._threadpool, self.run_sync, name, fn, *args, **kwargs
        )

    def run_sync(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """
        The body of L{run}, for a caller already off the reactor thread.
        A transaction the database aborted as a deadlock or a serialization
        failure is run again (it wrote nothing), a few times.
        """
        return self._retried(name, self._in_transaction, fn, *args, **kwargs)

    def run_raw(self, name: str, fn: Callable[..., T], *args: Any) -> "Deferred[T]":
        """
        L{run} for the hot path: C{fn(raw, *args)} with a L{Raw} cursor of
        the DBAPI connection, in one transaction that imd begins and
        commits itself.  SQLAlchemy's Connection (its begin, commit and
        their events) costs more Python per transaction than a small
        batch's own statements, on the thread whose Python shares the GIL
        with the reactor.
        """
        return deferToThreadPool(self.reactor, self._threadpool, self.run_raw_sync, name, fn, *args)

    def run_raw_sync(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """The body of L{run_raw}, for a caller already off the reactor thread."""
        return self._retried(name, self._in_raw_transaction, fn, *args)

    def _in_transaction(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self.engine.begin() as conn:
            return fn(conn, *args, **kwargs)

    def _in_raw_transaction(self, fn: Callable[..., T], *args: Any) -> T:
        pooled = self.engine.raw_connection()
        try:
            dbapi = pooled.dbapi_connection
            if self.dialect == "sqlite":
                # As _on_begin does for SQLAlchemy's transactions.
                dbapi.execute("BEGIN IMMEDIATE")
            try:
                with Raw(dbapi=dbapi, postgres=self.dialect == "postgresql") as raw:
                    result = fn(raw, *args)
                dbapi.commit()
            except BaseException:
                dbapi.rollback()
                raise
            return result
        finally:
            pooled.close()

    def _retried(self, name: str, body: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        started = time.perf_counter()
        ok = False
        try:
            for attempt in range(1, RETRIES + 1):
                try:
                    result = body(*args, **kwargs)
                    ok = True
                    return result
                except Exception as e:
                    # SQLAlchemy wraps the driver's error; run_raw sees it bare.
                    error = e.orig if isinstance(e, OperationalError) else e
                    if attempt == RETRIES or getattr(error, "sqlstate", None) not in RETRY_SQLSTATES:
                        raise
                    log.info("store: {name} aborted ({error}); trying again", name=name, error=type(error).__name__)
        finally:
            if self._observer is not None:
                self._observer(name, time.perf_counter() - started, ok)

    def ping(self) -> "Deferred[None]":
        def select_one(conn: Connection) -> None:
            conn.execute(text("SELECT 1")).scalar_one()

        return self.run("ping", select_one)
