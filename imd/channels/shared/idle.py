# -*- test-case-name: tests.test_longconn -*-
"""
Idle connections, closed by one periodic sweep rather than a timer per
connection: a frame then costs an attribute write instead of moving a
timer in the reactor's heap, and an idle connection holds no timer.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


class IdleSweeper:
    """
    Calls C{timeoutConnection()} on every registered connection whose
    C{last_seen} (reactor seconds) is more than C{timeout} s old.  The
    sweep runs every quarter of the timeout (at most every 10 s), so a
    connection is closed between C{timeout} and C{1.25 * timeout} s after
    its last frame.
    """

    def __init__(self, reactor: Any, timeout: float) -> None:
        self._reactor = reactor
        self.timeout = timeout
        self._connections: set[Any] = set()
        self._loop = LoopingCall(self._sweep)
        self._loop.clock = reactor

    def add(self, connection: Any) -> None:
        connection.last_seen = self._reactor.seconds()
        self._connections.add(connection)
        if not self._loop.running:
            self._loop.start(min(self.timeout / 4, 10), now=False).addErrback(
                lambda f: log.failure("idle sweep", f)
            )

    def discard(self, connection: Any) -> None:
        self._connections.discard(connection)
        if not self._connections and self._loop.running:
            self._loop.stop()

    def _sweep(self) -> None:
        cutoff = self._reactor.seconds() - self.timeout
        for connection in [c for c in self._connections if c.last_seen < cutoff]:
            self.discard(connection)
            try:
                connection.timeoutConnection()
            except Exception:
                log.failure("closing an idle connection")
