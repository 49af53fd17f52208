# -*- test-case-name: tests.test_longconn -*-
"""
Presence: each session's show state, told to friends when it comes
online, changes or answers, and "offline" when a user's last session
closes.
"""

from __future__ import annotations

from typing import Any, Iterable

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from imd.core import events, fields
from imd.errors import InvalidField
from imd.hub.interfaces import Event

log = Logger()
SHOWS = ("online", "chat", "dnd", "away", "xa")
TYPES = ("online", "update", "leave", "ack")


def check_show(show: Any, default: str = "online", offline: bool = False) -> str:
    """C{offline}: whether "offline" is a state this request may announce."""
    if show is None or show == "":
        return default
    allowed = SHOWS + ("offline",) if offline else SHOWS
    if show not in allowed:
        raise InvalidField(f"show must be one of {', '.join(allowed)}")
    return show


class PresenceService:
    def __init__(self, store: Any, hub: Any) -> None:
        self._roster = store.roster
        self._groups = store.groups
        self._hub = hub
        hub.presence_observers.append(self._user_changed)

    def _data(self, session: Any, type: str, show: str) -> dict[str, Any]:
        return {"type": type, "from": session.uid, "from_res": session.resource, "show": show}

    @inlineCallbacks
    def online(self, session: Any, show: Any = "online"):
        """
        C{session} announces itself: its friends hear of it, and it gets
        one "ack" per online session of each friend, so it learns who is
        online without a query.
        """
        self._hub.set_show(session, check_show(show))
        friends = yield self._roster.friend_ids(session.uid)
        self._hub.deliver(friends, Event(events.PRESENCE, self._data(session, "online", session.show)))
        yield self._tell_about(session, friends)

    @inlineCallbacks
    def _tell_about(self, session: Any, uids: Iterable[str]):
        """One "ack" to C{session} per visible session of C{uids}, on any instance."""
        for uid, resource, show in (yield self._hub.presence(list(uids))):
            data = {"type": "ack", "from": uid, "from_res": resource, "show": show}
            session.deliver(Event(events.PRESENCE, data))

    @inlineCallbacks
    def update(self, session: Any, type: Any, show: Any):
        """A change of show state ("update"), or going invisible ("leave")."""
        if type not in ("update", "leave"):
            raise InvalidField(f"type must be one of {', '.join(TYPES)}")
        show = check_show(show, default="offline" if type == "leave" else "online", offline=type == "leave")
        self._hub.set_show(session, None if type == "leave" else show)
        friends = yield self._roster.friend_ids(session.uid)
        self._hub.deliver(friends, Event(events.PRESENCE, self._data(session, type, show)))

    def ack(self, session: Any, to: Any, to_res: Any = None, show: Any = None) -> None:
        """C{session} answers C{to}'s announcement with its own state."""
        to = fields.uid("to", to)
        to_res = fields.text("to_res", to_res, 64, required=False)
        show = check_show(show, default=session.show or "online")
        data = dict(self._data(session, "ack", show), to=to)
        if to_res:
            data["to_res"] = to_res
        self._hub.deliver([to], Event(events.PRESENCE, data), resource=to_res or None)

    @inlineCallbacks
    def introduce(self, uid: str, others: list[str]):
        """C{uid} joined a group of C{others}: each side learns who of the other is online."""
        for session in self._hub.sessions(uid):
            if getattr(session, "show", None):
                self._hub.deliver(others, Event(events.PRESENCE, self._data(session, "online", session.show)))
            yield self._tell_about(session, others)

    @inlineCallbacks
    def _user_changed(self, uid: str, online: bool):
        if online:
            return
        try:
            friends = yield self._roster.friend_ids(uid)
        except Exception:
            log.failure("presence: friends of {uid}", uid=uid)
            return
        data = {"type": "leave", "from": uid, "from_res": "", "show": "offline"}
        self._hub.deliver(friends, Event(events.PRESENCE, data))
