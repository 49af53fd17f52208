# -*- test-case-name: tests.test_webhooks -*-
"""
The outbox deliverer: sends the outbox's rows to the world outside, each
at least once, in outbox order, retrying one that failed with a growing
wait (and holding back the rows after it) until it goes through or is set
aside as dead after C{max_attempts}.

One instance delivers at a time: it claims the oldest rows for
C{lease} seconds (L{imd.store.outbox.OutboxStore.claim}); a crashed
instance's claim runs out and another takes the rows over.  What a row
becomes on the wire is the caller's C{send(row)}, a Deferred that fails
when the row was not taken.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger

from imd.config import WebhooksConfig

log = Logger()
# An idle deliverer deletes old delivered rows at most this often (ms).
PURGE_EVERY_MS = 60_000
# The depth metrics count the backlog: at most this often (ms), not once
# per batch while a long backlog drains.
STATS_EVERY_MS = 1_000


def backoff_ms(config: WebhooksConfig, attempts: int) -> int:
    """The wait after the C{attempts}-th failure of a row."""
    return min(config.retry_max_ms, config.retry_min_ms * 2 ** min(attempts - 1, 40))


class OutboxDeliverer(Service):
    name = "outbox"

    def __init__(
        self,
        outbox: Any,
        send: Callable[[Any], Deferred],
        config: WebhooksConfig,
        clock: Any,
        instance: Callable[[], str],
        metrics: Any,
    ) -> None:
        self._outbox = outbox
        self._send = send
        self._config = config
        self._clock = clock
        self._instance = instance
        self._metrics = metrics
        self._sleeping: Deferred | None = None
        self._sending: Deferred | None = None
        self.me = ""
        self._purged_at = 0
        self._counted_at = -STATS_EVERY_MS

    def _now(self) -> int:
        return int(self._clock.seconds() * 1000)

    def startService(self) -> None:
        super().startService()
        # Named now: the default instance name uses the HTTP port.
        self.me = self._instance()
        self._loop()

    def stopService(self) -> None:
        super().stopService()
        if self._sleeping is not None:
            self._sleeping.cancel()
        if self._sending is not None:
            # Not delivered, then: the row stays for the next instance.
            self._sending.cancel()
        # Not waited for: the store stops beside this service.  Letting go
        # now means another instance goes on at once, not after the lease.
        self._outbox.release(self.me).addErrback(
            lambda f: log.failure("outbox: letting go of the claims of {me}", f, me=self.me)
        )

    def wake(self) -> None:
        """New rows: look now rather than at the next poll."""
        if self._sleeping is not None:
            self._sleeping.cancel()

    @inlineCallbacks
    def _loop(self):
        while self.running:
            try:
                delay = yield self._round()
            except Exception:
                if not self.running:
                    break
                log.failure("outbox: a delivery round failed")
                delay = self._config.poll_ms
            if not self.running:
                break
            self._sleeping = deferLater(self._clock, delay / 1000, lambda: None) if delay else succeed(None)
            try:
                yield self._sleeping
            except CancelledError:
                pass
            finally:
                self._sleeping = None

    @inlineCallbacks
    def _round(self):
        """Deliver what can be delivered now; the ms to wait before the next round."""
        config = self._config
        now = self._now()
        until = now + config.lease * 1000
        rows = yield self._outbox.claim(self.me, now, until, config.batch)
        if now - self._counted_at >= STATS_EVERY_MS or not rows:
            self._counted_at = now
            yield self._report_depth()
        if not rows:
            if now - self._purged_at >= PURGE_EVERY_MS:
                self._purged_at = now
                purged = yield self._outbox.purge_delivered(now - config.keep_delivered * 1000)
                if purged:
                    log.info("outbox: deleted {n} rows delivered long ago", n=purged)
            return config.poll_ms
        for row in rows:
            # Never send on a claim that could run out before the answer.
            if not self.running or self._now() + config.timeout * 1000 >= until:
                return 0
            self._sending = self._send(row)
            try:
                yield self._sending
            except Exception as e:
                if not self.running:
                    return 0
                return (yield self._failed(row, e))
            finally:
                self._sending = None
            yield self._outbox.delivered(row.id, self._now())
            self._metrics.outbox_delivered.inc()
        return 0

    @inlineCallbacks
    def _failed(self, row: Any, error: Exception):
        config = self._config
        attempts = row.attempts + 1
        now = self._now()
        dead = bool(config.max_attempts) and attempts >= config.max_attempts
        wait = backoff_ms(config, attempts)
        reason = str(error) or type(error).__name__
        yield self._outbox.failed(row.id, self.me, reason, now + wait, now if dead else None)
        self._metrics.outbox_retried.inc()
        if dead:
            log.error(
                "outbox: row {id} ({kind}) failed {attempts} times and is set aside: {reason}",
                id=row.id, kind=row.kind, attempts=attempts, reason=reason,
            )
            return 0
        log.warn(
            "outbox: row {id} ({kind}) not delivered ({reason}); attempt {attempts}, next in {wait} ms",
            id=row.id, kind=row.kind, reason=reason, attempts=attempts, wait=wait,
        )
        return wait

    @inlineCallbacks
    def _report_depth(self):
        depth, oldest, dead = yield self._outbox.stats()
        self._metrics.outbox_depth.set(depth)
        self._metrics.outbox_dead.set(dead)
        self._metrics.outbox_oldest_seconds.set(0 if oldest is None else max(0, self._now() - oldest) / 1000)
