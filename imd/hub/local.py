# -*- test-case-name: tests.test_hub -*-
"""The in-process hub: a registry of live sessions and delivery to them."""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from imd.hub.counters import MemoryCounters
from imd.hub.interfaces import Event, IHub, ISession

log = Logger()


def tell_observers(observers: list[Callable[[str, bool], None]], uid: str, online: bool) -> None:
    """Call each of C{observers} with (C{uid}, C{online}); one that raises does not stop the rest."""
    for observer in list(observers):
        try:
            observer(uid, online)
        except Exception:
            log.failure("presence observer for {uid}", uid=uid)


@implementer(IHub)
class LocalHub:
    # Nothing to link to: one process always reaches all of its sessions.
    healthy = True

    def __init__(self, clock: Any = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.counters = MemoryCounters(clock)
        # uid -> resource -> session
        self._sessions: dict[str, dict[str, ISession]] = {}
        self._by_channel: Counter[str] = Counter()
        # Called with (uid, online) when a user's first session arrives or
        # last one leaves: presence, or the Redis bridge that holds this hub.
        self.presence_observers: list[Callable[[str, bool], None]] = []

    def start(self, instance: str) -> None:
        pass

    def stop(self) -> None:
        pass

    def register(self, session: ISession) -> None:
        resources = self._sessions.setdefault(session.uid, {})
        old = resources.get(session.resource)
        if old is session:
            # Counting it again would leave session_counts one too high
            # forever after its single unregister.
            return
        first = not resources
        if old is not None:
            self._remove(old)
            resources = self._sessions.setdefault(session.uid, {})
            first = False
        resources[session.resource] = session
        self._by_channel[session.channel] += 1
        if old is not None:
            log.info(
                "{uid}/{resource} logged in again; kicking the older session",
                uid=session.uid,
                resource=session.resource,
            )
            # Kicked only once the new session is in place: a kick that
            # raises must not leave the user registered with no session.
            try:
                old.kick("logged in elsewhere")
            except Exception:
                log.failure("kicking {uid}/{resource}", uid=old.uid, resource=old.resource)
        if first:
            self._notify(session.uid, True)

    def unregister(self, session: ISession) -> None:
        if self._remove(session) and not self._sessions.get(session.uid):
            self._notify(session.uid, False)

    def _remove(self, session: ISession) -> bool:
        resources = self._sessions.get(session.uid)
        if not resources or resources.get(session.resource) is not session:
            return False
        del resources[session.resource]
        if not resources:
            del self._sessions[session.uid]
        self._by_channel[session.channel] -= 1
        return True

    def sessions(self, uid: str) -> list[ISession]:
        return list(self._sessions.get(uid, {}).values())

    def is_online(self, uid: str) -> bool:
        return uid in self._sessions

    def uids(self) -> list[str]:
        """The users with a live session here."""
        return list(self._sessions)

    def deliver(
        self,
        uids: Iterable[str],
        event: Event,
        exclude: ISession | None = None,
        resource: str | None = None,
    ) -> None:
        # A uid named twice (a message to oneself) still gets it once.
        for uid in dict.fromkeys(uids):
            for session in self.sessions(uid):
                if session is exclude or (resource is not None and session.resource != resource):
                    continue
                try:
                    session.deliver(event)
                except Exception:
                    # One broken connection must not cost the others their event.
                    log.failure(
                        "delivering {kind} to {uid}/{resource}",
                        kind=event.kind,
                        uid=uid,
                        resource=session.resource,
                    )

    def claim_once(self, key: str, ttl: int) -> "Deferred[bool]":
        """
        Whether C{key} is claimed here for the first time within C{ttl} s.
        One process remembers for itself (see SignatureGuard), so the
        in-process hub grants every claim; a clustered hub asks Redis.
        """
        return succeed(True)

    def set_show(self, session: ISession, show: str | None) -> None:
        session.show = show

    def presence(self, uids: Iterable[str]) -> "Deferred[list[tuple[str, str, str]]]":
        """(uid, resource, show) of the sessions of C{uids} that have a show state."""
        return succeed(
            [
                (uid, session.resource, session.show)
                for uid in uids
                for session in self.sessions(uid)
                if getattr(session, "show", None)
            ]
        )

    def session_counts(self) -> dict[str, int]:
        """Live sessions per channel."""
        return {channel: n for channel, n in self._by_channel.items() if n}

    def _notify(self, uid: str, online: bool) -> None:
        tell_observers(self.presence_observers, uid, online)
