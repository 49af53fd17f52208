# -*- test-case-name: tests.test_store_batch -*-
"""
Group commit: requests that arrive while a transaction is in flight wait
for it, and then all go in the next transaction together.

Under load one commit (one fsync on SQLite, one round trip on Postgres)
serves many messages; with one request at a time nothing waits, so an idle
server answers as fast as before.  Each request still gets its own answer,
in the order requests arrived, and one bad request does not fail the
others: if a batch fails, its requests are run again one by one, before
any later request.

A runner that answers in order (the store process) may hold a second
batch while it commits the first (C{depth=2}), sent only when a full
batch waits, so that under load the runner never idles between batches.
Such a runner finds a bad request itself and answers it with
L{ItemFailed}.  A batch that fails whole holds back everything newer
until the batch sent after it has answered too; the requests of both are
then run again one by one, in the order they came.

A request no one waits on promptly (a client's acknowledgement, which it
gets no answer to) may be I{lazy}: it goes with the next request that is
not, or after C{lazy_delay} seconds, so that at low load an
acknowledgement rides in the commit of a message instead of paying a
commit of its own.  It keeps its place in the order either way.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, NamedTuple, Sequence

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


class ItemFailed(NamedTuple):
    """In a batch's results: the request that failed, alone (see the module's docstring)."""

    error: BaseException


class Batcher:
    """
    Runs C{fn(conn, items) -> results} (one result per item, in order) for
    batches of at most C{max_batch} items, at most C{depth} at a time,
    through C{run(name, fn, items) -> Deferred}: L{imd.store.database.Database.run},
    or C{run_raw} for a C{fn} that takes a L{imd.store.raw.Raw} cursor.
    """

    def __init__(
        self,
        run: Callable[..., Deferred],
        name: str,
        fn: Callable[[Any, Sequence[Any]], list[Any]],
        # Large: a connection pipelines its messages, so under load a
        # batch holds several per user, and bigger ones commit more
        # messages per page written.
        max_batch: int = 4096,
        depth: int = 1,
        clock: Any = None,
        lazy_delay: float = 0.005,
    ) -> None:
        self._run = run
        self._name = name
        self._fn = fn
        self._max = max_batch
        self._depth = depth
        self._pending: list[tuple[Any, Deferred]] = []
        # Requests of failed batches, to run alone, before anything else.
        self._alone: deque[tuple[Any, Deferred]] = deque()
        self._held = False
        self._running = 0
        self._clock = clock
        self._lazy_delay = lazy_delay
        # Whether what is pending goes as soon as the runner takes it;
        # False only while every pending request is lazy (and _timer runs).
        self._due = False
        self._timer: Any = None

    def submit(self, item: Any, lazy: bool = False) -> Deferred:
        """C{item}'s result; C{lazy}: see the module's docstring (only with a C{clock})."""
        d: Deferred = Deferred()
        self._pending.append((item, d))
        if not lazy or self._clock is None:
            self._due = True
        elif not self._due and self._timer is None:
            self._timer = self._clock.callLater(self._lazy_delay, self.flush)
        self._next()
        return d

    def flush(self) -> None:
        """Send what is pending, lazy or not, as soon as the runner takes it."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        self._due = True
        self._next()

    def _next(self) -> None:
        if self._held:
            # A batch failed: what was sent after it may fail too, and
            # must be run again before anything newer is sent.
            if self._running:
                return
            self._held = False
        if self._alone:
            if not self._running:
                self._send([self._alone.popleft()])
            return
        while (
            self._pending
            and (self._due or len(self._pending) >= self._max)
            and (not self._running or (self._running < self._depth and len(self._pending) >= self._max))
        ):
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            if not self._pending:
                self._due = False
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            self._send(batch)

    def _send(self, batch: list[tuple[Any, Deferred]]) -> None:
        self._running += 1
        try:
            d = self._run(self._name, self._fn, [item for item, _ in batch])
        except Exception:
            # Answered as a failed batch: one still counted as running
            # would hold back every request after it.
            d = fail()
        d.addCallbacks(self._answered, self._failed, callbackArgs=(batch,), errbackArgs=(batch,))
        d.addErrback(lambda f: log.failure("batch {name}", f, name=self._name))

    def _answered(self, results: list[Any], batch: list[tuple[Any, Deferred]]) -> None:
        self._running -= 1
        # The next batch goes to the store first: it commits while this
        # one's answers are sent, instead of the two taking turns.
        self._next()
        for (_, d), result in zip(batch, results):
            if type(result) is ItemFailed:
                d.errback(result.error)
            else:
                d.callback(result)

    def _failed(self, failure: Failure, batch: list[tuple[Any, Deferred]]) -> None:
        self._running -= 1
        self._held = True
        if len(batch) == 1:
            self._next()
            batch[0][1].errback(failure)
            return
        # One request spoiled the transaction; find it by running each alone.
        log.info(
            "batch {name} of {n} failed ({error}); retrying one by one",
            name=self._name,
            n=len(batch),
            error=failure.getErrorMessage(),
        )
        self._alone.extend(batch)
        self._next()
