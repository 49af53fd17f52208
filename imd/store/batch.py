# -*- test-case-name: tests.test_store_batch -*-
"""
Group commit: requests that arrive while a transaction is in flight wait
for it, and then all go in the next transaction together.

Under load one commit (one fsync on SQLite, one round trip on Postgres)
serves many messages; with one request at a time nothing waits, so an idle
server answers as fast as before.  Each request still gets its own answer,
in the order requests arrived, and one bad request does not fail the
others: if a batch fails, its requests are run again one by one.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


class Batcher:
    """
    Runs C{fn(conn, items) -> results} (one result per item, in order) for
    batches of at most C{max_batch} items, one batch at a time, through
    C{run(name, fn, items) -> Deferred}: L{imd.store.database.Database.run},
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
    ) -> None:
        self._run = run
        self._name = name
        self._fn = fn
        self._max = max_batch
        self._pending: list[tuple[Any, Deferred]] = []
        self._running = False

    def submit(self, item: Any) -> Deferred:
        d: Deferred = Deferred()
        self._pending.append((item, d))
        if not self._running:
            self._next()
        return d

    def _next(self) -> None:
        if not self._pending:
            self._running = False
            return
        self._running = True
        batch, self._pending = self._pending[: self._max], self._pending[self._max :]
        d = self._run(self._name, self._fn, [item for item, _ in batch])
        d.addCallbacks(self._answered, self._failed, callbackArgs=(batch,), errbackArgs=(batch,))
        d.addErrback(lambda f: log.failure("batch {name}", f, name=self._name))

    def _answered(self, results: list[Any], batch: list[tuple[Any, Deferred]]) -> None:
        # The next batch goes to the store first: it commits while this
        # one's answers are sent, instead of the two taking turns.
        self._next()
        for (_, d), result in zip(batch, results):
            d.callback(result)

    def _failed(self, failure: Failure, batch: list[tuple[Any, Deferred]]) -> Deferred | None:
        if len(batch) == 1:
            self._next()
            batch[0][1].errback(failure)
            return None
        # One request spoiled the transaction; find it by running each alone.
        log.info(
            "batch {name} of {n} failed ({error}); retrying one by one",
            name=self._name,
            n=len(batch),
            error=failure.getErrorMessage(),
        )
        d = Deferred()
        d.callback(None)
        for item, waiter in batch:
            d.addCallback(lambda _, item=item, waiter=waiter: self._single(item, waiter))
        d.addBoth(lambda _: self._next())
        return d

    def _single(self, item: Any, waiter: Deferred) -> Deferred:
        d = self._run(self._name, self._fn, [item])
        d.addCallbacks(lambda results: waiter.callback(results[0]), waiter.errback)
        return d
