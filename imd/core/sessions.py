# -*- test-case-name: tests.test_webhooks -*-
"""
Logins and logouts reported to the outbox (webhooks), when the world
outside asked for them: one row as a session starts and one as it ends,
whichever channel it is on.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

log = Logger()
LOGIN, LOGOUT = "login", "logout"


def session_data(uid: str, resource: str, channel: str, address: str, time: int) -> dict[str, Any]:
    return {"uid": uid, "resource": resource, "channel": channel, "address": address, "time": time}


class SessionReports:
    def __init__(self, store: Any, clock: Any, enabled: bool) -> None:
        self._outbox = store.outbox
        self._clock = clock
        self.enabled = enabled

    def started(self, session: Any, address: str) -> None:
        self._report(LOGIN, session, address)

    def ended(self, session: Any, address: str) -> None:
        self._report(LOGOUT, session, address)

    def _report(self, kind: str, session: Any, address: str) -> None:
        if not self.enabled:
            return
        now = int(self._clock.seconds() * 1000)
        data = session_data(session.uid, session.resource, session.channel, address, now)
        # Nothing waits for it: a session's start or end never waits on the store.
        self._outbox.add(kind, data, now).addErrback(
            lambda f: log.failure("reporting the {kind} of {uid}", f, kind=kind, uid=session.uid)
        )
