# -*- test-case-name: tests.test_xmpp_sm -*-
"""
XEP-0198 stream management: what one stream has handled and what it
wrote that the client has not acknowledged, kept for
C{xmpp.resume_timeout} seconds after the connection dies so the client
can resume.

A message counts as received only once the client's ``<a h>`` covers
it; until then it stays in the user's offline messages, so whatever a
dead stream had not acknowledged is delivered again on resume or at the
next login.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

# h is an unsigned 32-bit counter that wraps (XEP-0198 section 4).
MOD = 2**32


class StreamState:
    """The counters of one managed stream; outlives its connection while resumable."""

    def __init__(self, uid: str, resource: str) -> None:
        self.id = uuid.uuid4().hex
        self.uid = uid
        self.resource = resource
        # Stanzas from the client handled (a message: committed).
        self.handled = 0
        # Stanzas written to the client, and those not acknowledged yet:
        # (number, the message's data or None).
        self.sent = 0
        self.unacked: list[tuple[int, dict | None]] = []
        self.resumable = False
        self.tlim = False
        self.available = False
        self.show = "online"

    def wrote(self, message: dict | None) -> None:
        self.sent = (self.sent + 1) % MOD
        self.unacked.append((self.sent, message))

    def handled_one(self) -> None:
        self.handled = (self.handled + 1) % MOD

    def acked(self, h: int) -> list[dict] | None:
        """
        The client has the first C{h} stanzas: the messages among those
        newly covered, or None when C{h} counts stanzas never written.
        """
        if not 0 <= h < MOD:
            return None
        outstanding = len(self.unacked)
        behind = (self.sent - h) % MOD
        if behind > outstanding:
            # An older h than the last one (nothing new), or one ahead of
            # what was ever written (the client is wrong).
            return [] if behind < MOD // 2 else None
        done, self.unacked = self.unacked[: outstanding - behind], self.unacked[outstanding - behind :]
        return [message for _, message in done if message is not None]


class Resumable:
    """The states of dead streams, each until its timeout."""

    def __init__(self, clock: Any, timeout: int) -> None:
        self._clock = clock
        self._timeout = timeout
        self._states: dict[str, tuple[StreamState, Any]] = {}
        self._closed = False

    def keep(self, state: StreamState, expired: Callable[[StreamState], None]) -> None:
        if self._closed:
            # The listener has stopped: nobody can resume.
            return
        call = self._clock.callLater(self._timeout, self._expire, state.id, expired)
        self._states[state.id] = (state, call)

    def _expire(self, state_id: str, expired: Callable[[StreamState], None]) -> None:
        entry = self._states.pop(state_id, None)
        if entry is not None:
            expired(entry[0])

    def take(self, state_id: str, uid: str) -> StreamState | None:
        """The state of C{uid}'s dead stream C{state_id}, once."""
        entry = self._states.get(state_id)
        if entry is None or entry[0].uid != uid:
            return None
        del self._states[state_id]
        if entry[1].active():
            entry[1].cancel()
        return entry[0]

    def clear(self) -> None:
        self._closed = True
        for _, call in self._states.values():
            if call.active():
                call.cancel()
        self._states.clear()
