# -*- test-case-name: tests.test_store_process -*-
"""
The store's hot path in a process of its own.

One Python process runs on one core: the reactor's Python and the store
thread's share one GIL, and under load each waits for the other.  The
batches of messages (L{imd.store.persist}) are most of the store's
Python, so they can run in a child process (L{imd.store.worker}) on its
own connection, while the server keeps its own for everything else.

The child gets each batch over a pipe, runs it in one transaction as
L{imd.store.database.Database.run_raw} would, and answers in order.  A
batch and its answer cross the pipe as pickles; both ends are this
program, started by the server, so nothing else writes to that pipe.

What differs from running in the server:
  - A batch reads the child's wall clock where it would read the server's
    clock (L{imd.store.messages.Send.now}); the same thing in a deployment,
    not under a test's fake clock.
  - On SQLite the child and the server share the one write lock; the
    server's own transactions wait for a batch (busy_timeout).
  - If the child dies, the requests it had fail, and a new child starts;
    the batcher runs a failed batch's requests again one by one, and a
    request the dead child had committed is then found, as any resend
    (L{imd.store.batch}).
"""

from __future__ import annotations

import copyreg
import fcntl
import os
import pickle
import sys
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from imd.store.database import Observer
from imd.store.messages import Send
from imd.store.worker import HEADER, frame, select_one, wall_ms

log = Logger()
# Seconds: the longest wait before a child that keeps dying is started again.
MAX_RESPAWN_DELAY = 30.0
# Bytes each pipe to and from the child holds (Linux; 64 KiB by default):
# a batch of messages with long bodies, or its answer, crosses in one write.
PIPE_SIZE = 1 << 20


class StoreProcessLost(Exception):
    """The store process ended with this request unanswered; it may or may not have committed."""


def _send_reduced(send: Send) -> tuple:
    # The server's clock is a method of a service; the child reads its own.
    return Send, (*send[:7], wall_ms, send.outbox)


_PICKLES = copyreg.dispatch_table.copy()
_PICKLES[Send] = _send_reduced


class _Child(ProcessProtocol):
    def __init__(self, owner: "StoreProcess") -> None:
        self._owner = owner
        # Appended to in place: a large answer comes in many reads.
        self._buffer = bytearray()
        self.ended: Deferred = Deferred()

    def outReceived(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, offset)
            start = offset + HEADER.size
            if len(buffer) - start < size:
                break
            with memoryview(buffer) as view:
                answer = pickle.loads(view[start : start + size])
            offset = start + size
            self._owner._answered(answer)
        del buffer[:offset]

    def errReceived(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            log.warn("store process: {line}", line=line)

    def processEnded(self, reason: Failure) -> None:
        self._owner._ended(reason)
        self.ended.callback(None)


def _enlarge(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (AttributeError, OSError):
        pass  # not Linux, or above its pipe-max-size: the default serves, a write at a time


class StoreProcess:
    """
    Runs batches C{fn(raw, items) -> results} in a child process, one at a
    time, in the order of L{run_batch}; C{fn} (a module's function), the
    items and the results must pickle.
    """

    def __init__(
        self,
        url: str,
        reactor: Any,
        checkpoint_pages: int,
        observer: Observer | None = None,
        env: dict[str, str] | None = None,
        started: Callable[[], None] | None = None,
    ) -> None:
        """C{env}: the child's environment, this process's unless given; C{started()}: called for each child started."""
        self._url = url
        self._env = env
        self._reactor = reactor
        self._checkpoint_pages = checkpoint_pages
        self._observer = observer
        self._started = started
        self._child: _Child | None = None
        self._transport: Any = None
        self._started_at = 0.0
        # Frames for a child not started yet, and when it will be.
        self._queued: list[bytes] = []
        self._spawning: Any = None
        self._delay = 0.0
        # Request id: (name, when it was sent, its Deferred).
        self._waiting: dict[int, tuple[str, float, Deferred]] = {}
        self._next_id = 0
        self._running = False

    def start(self) -> None:
        """Starts the child now: its start (imports, connection) is not the first message's to wait for."""
        self._running = True
        self._spawn_later()

    def stop(self) -> Deferred:
        """Ends the child once it has answered every request it has."""
        self._running = False
        if self._spawning is not None:
            self._spawning.cancel()
            self._spawning = None
            self._queued = []
            self._lost("the server stopped")
        if self._child is None:
            return succeed(None)
        ended = self._child.ended
        self._transport.closeStdin()
        return ended

    def run_batch(self, name: str, fn: Callable[[Any, Sequence[Any]], list], items: Sequence[Any]) -> "Deferred[list]":
        """
        L{imd.store.database.Database.run_raw}'s C{fn(raw, items)} in the
        child; if the batch fails, each request runs alone, and one that
        fails alone is answered with an L{imd.store.batch.ItemFailed}.
        """
        if not self._running:
            return fail(RuntimeError("the store process is stopped"))
        try:
            data = frame((self._next_id + 1, name, fn, items), _PICKLES)
        except Exception:
            return fail()
        self._next_id += 1
        d: Deferred = Deferred()
        self._waiting[self._next_id] = (name, self._reactor.seconds(), d)
        if self._transport is not None:
            # No pipe: the child closed it and is ending; _ended answers.
            writer = self._transport.pipes.get(0)
            if writer is not None:
                writer.write(data)
                # Now, not when the reactor next polls: this turn may go on
                # to deliver the answers of the batch before, many
                # milliseconds for which the child would wait for this one
                # instead of committing it meanwhile (docs/benchmarks.rst,
                # round 8).
                writer.doWrite()
        else:
            self._queued.append(data)
            self._spawn_later()
        return d

    def ping(self) -> "Deferred[None]":
        """Fires once the child has run a statement, after the batches before it."""
        d = self.run_batch("ping", select_one, [None])
        d.addCallback(lambda _: None)
        return d

    def _spawn_later(self) -> None:
        if self._spawning is None and self._child is None:
            self._spawning = self._reactor.callLater(self._delay, self._spawn)

    def _spawn(self) -> None:
        self._spawning = None
        child = _Child(self)
        # -P: nothing of the working directory shadows imd.
        argv = [sys.executable, "-P", "-m", "imd.store.worker"]
        env = self._env if self._env is not None else os.environ.copy()
        self._started_at = self._reactor.seconds()
        try:
            self._transport = self._reactor.spawnProcess(child, sys.executable, argv, env=env)
        except Exception as e:
            # No fork (out of memory, out of processes): as a child that died at once.
            self._queued = []
            self._ended(Failure(e))
            return
        self._child = child
        for fd in (0, 1):
            _enlarge(self._transport.pipes[fd].fileno())
        self._transport.writeSequence([frame((self._url, self._checkpoint_pages))] + self._queued)
        self._queued = []
        log.info("store process {pid} started", pid=self._transport.pid)
        if self._started is not None:
            self._started()

    def _answered(self, answer: tuple) -> None:
        rid, ok, result, seconds = answer
        name, _, d = self._waiting.pop(rid)
        if self._observer is not None:
            self._observer(name, seconds, ok)
        if ok:
            d.callback(result)
        else:
            d.errback(Failure(result))

    def _ended(self, reason: Failure) -> None:
        self._child = self._transport = None
        if reason.check(ProcessDone) and not self._waiting:
            return
        lived = self._reactor.seconds() - self._started_at
        # A child that cannot get going (no database, say) is started
        # again less and less often, not for every request.
        self._delay = min(max(2 * self._delay, 0.5), MAX_RESPAWN_DELAY) if lived < MAX_RESPAWN_DELAY else 0.0
        log.error(
            "store process ended ({reason}) after {lived:.1f} s with {n} requests unanswered",
            reason=reason.getErrorMessage(),
            lived=lived,
            n=len(self._waiting),
        )
        self._lost(f"the store process ended ({reason.getErrorMessage()})")
        if self._running:
            self._spawn_later()

    def _lost(self, why: str) -> None:
        waiting, self._waiting = self._waiting, {}
        now = self._reactor.seconds()
        for name, sent, d in waiting.values():
            if self._observer is not None:
                self._observer(name, now - sent, False)
            d.errback(StoreProcessLost(f"{name}: {why}"))
