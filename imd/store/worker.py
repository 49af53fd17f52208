# -*- test-case-name: tests.test_store_process -*-
"""
The store process: runs the batches of L{imd.store.process.StoreProcess}
on its own connection, one at a time, in the order they arrive.

It reads frames on its standard input and answers each on its standard
output; a frame is a 4-byte big-endian length and a pickle.  The first
frame is (database URL, SQLite checkpoint pages); each next one is
(request id, name, function, items), answered by (request id, ok, results
or error, seconds).  A batch that fails is run again a request at a time,
and the requests that fail alone are answered with
L{imd.store.batch.ItemFailed}: the others commit, in their order, before
the next batch begins.  The URL comes on the pipe, not the command line,
where anyone on the host could read its password.

It lives as long as its input: the server closes it to stop, and a
server that died closes it too; it answers everything it read before it
exits.  Ctrl-C and SIGTERM, which reach the whole process group, are the
server's to act on, not its own.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import struct
import sys
import time
from typing import Any, BinaryIO

HEADER = struct.Struct(">I")


def wall_ms() -> int:
    """The clock a batch reads here, in place of the server's (see L{imd.store.process})."""
    return int(time.time() * 1000)


def select_one(raw: Any, items: Any) -> list:
    """A batch that proves the process and its connection answer (L{imd.store.process.StoreProcess.ping})."""
    raw.execute("SELECT 1").fetchone()
    return [None for _ in items]


def read_frame(stream: BinaryIO) -> Any:
    """The next frame's object, or None at the end of C{stream}."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return pickle.loads(payload)


def frame(obj: Any, pickles: dict | None = None) -> bytes:
    """C{obj} as a frame; C{pickles}: a dispatch table (as copyreg's) for types that cross in a form of their own."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    if pickles is not None:
        pickler.dispatch_table = pickles
    pickler.dump(obj)
    payload = buffer.getvalue()
    return HEADER.pack(len(payload)) + payload


def _portable(e: BaseException) -> BaseException:
    """C{e}, if it survives a pickle; else a RuntimeError that says what it was."""
    try:
        pickle.loads(pickle.dumps(e, protocol=pickle.HIGHEST_PROTOCOL))
        return e
    except Exception:
        return RuntimeError(f"{type(e).__module__}.{type(e).__qualname__}: {e}")


def _alone(db: Any, name: str, fn: Any, item: Any, failed: type) -> Any:
    try:
        return db.run_raw_sync(name, fn, [item])[0]
    except Exception as e:
        return failed(_portable(e))


def serve(source: BinaryIO, sink: BinaryIO) -> None:
    """Answers the requests of C{source} on C{sink} until C{source} ends."""
    # Late: importing the store is most of this process's start.
    from imd.store.database import Database
    from imd.store.batch import ItemFailed

    setup = read_frame(source)
    if setup is None:
        return
    url, checkpoint_pages = setup
    # Its thread pool is never started: run_raw_sync runs on this thread.
    db = Database(url, pool_size=1, checkpoint_pages=checkpoint_pages)
    try:
        while (request := read_frame(source)) is not None:
            rid, name, fn, items = request
            started = time.perf_counter()
            try:
                answer = (rid, True, db.run_raw_sync(name, fn, items))
            except Exception as e:
                if len(items) == 1:
                    answer = (rid, False, _portable(e))
                else:
                    answer = (rid, True, [_alone(db, name, fn, item, ItemFailed) for item in items])
            sink.write(frame(answer + (time.perf_counter() - started,)))
            sink.flush()
    finally:
        db.engine.dispose()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The answers get a descriptor of their own, and descriptor 1 becomes
    # standard error: nothing a library prints can corrupt a frame.
    sink = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=1 << 16)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    source = os.fdopen(sys.stdin.fileno(), "rb", buffering=1 << 16, closefd=False)
    try:
        serve(source, sink)
    except BrokenPipeError:
        # The server is gone; nobody is left to answer.
        pass


if __name__ == "__main__":
    main()
