# -*- test-case-name: tests.test_webhooks -*-
"""
Logins and logouts reported to the outbox (webhooks), when the world
outside asked for them: one row as a session starts and one as it ends,
whichever channel it is on.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
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
        # The login row being written, by session: its logout row waits for
        # it, since two writes on two store threads may commit either way.
        self._logins: dict[int, Deferred] = {}

    def started(self, session: Any, address: str) -> None:
        if self.enabled:
            self._logins[id(session)] = self._add(LOGIN, self._data(session, address))

    def ended(self, session: Any, address: str) -> None:
        if not self.enabled:
            return
        login = self._logins.pop(id(session), None)
        data = self._data(session, address)
        if login is None or login.called:
            self._add(LOGOUT, data)
        else:
            login.addCallback(lambda _: self._add(LOGOUT, data))

    def _data(self, session: Any, address: str) -> dict[str, Any]:
        now = int(self._clock.seconds() * 1000)
        return session_data(session.uid, session.resource, session.channel, address, now)

    def _add(self, kind: str, data: dict[str, Any]) -> Deferred:
        # Nothing waits for it: a session's start or end never waits on the store.
        return self._outbox.add(kind, data, data["time"]).addErrback(
            lambda f: log.failure("reporting the {kind} of {uid}", f, kind=kind, uid=data["uid"])
        )
