# -*- test-case-name: tests.test_hub -*-
"""What a channel's live connection and the hub promise each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from zope.interface import Attribute, Interface


# The event a clustered hub gives every local session after it could not
# hear other instances for a while: channels then fetch what they missed.
RESYNC = "resync"


@dataclass(frozen=True)
class Event:
    """
    Something that happened, for live sessions to render in their own wire
    format.  C{kind} names it (``"message"``, ``"roster.add"``, …);
    C{data} is JSON-serialisable so that it can cross instances.
    """

    kind: str
    data: Mapping[str, Any] = field(default_factory=dict)


class ISession(Interface):
    """One live, authenticated connection of a user."""

    uid = Attribute("The user id, str.")
    resource = Attribute("The client's resource name (device), str.")
    channel = Attribute("Which channel the connection uses, e.g. 'longconn'.")
    show = Attribute("Presence: online, chat, dnd, away or xa.")

    def deliver(event: Event) -> None:
        """Render C{event} to the client.  Must not raise for a bad client."""

    def kick(reason: str) -> None:
        """Tell the client why, then close the connection."""


class IHub(Interface):
    """
    Where live events go.  The in-process hub reaches sessions of this
    process; a clustered hub also reaches those of other instances.
    """

    healthy = Attribute(
        "Whether the hub reaches every instance it should, bool: the in-process hub "
        "always does; a clustered hub only while linked."
    )
    presence_observers = Attribute(
        "Callables (uid, online), told when a user's first session arrives or the "
        "last one leaves (the last anywhere, for a clustered hub); a list."
    )

    def start(instance: str) -> Any:
        """Begin serving as the instance named C{instance}: None or a Deferred."""

    def stop() -> Any:
        """Stop serving; None or a Deferred that fires once this instance has said goodbye."""

    counters = Attribute(
        "Counters and locks that expire (imd.hub.counters): this process's, or every instance's through Redis."
    )

    def register(session: ISession) -> None:
        """Add C{session}; an older session with the same uid and resource is kicked."""

    def unregister(session: ISession) -> None:
        """Remove C{session} (idempotent)."""

    def sessions(uid: str) -> list:
        """The live sessions of C{uid} known to this process."""

    def is_online(uid: str) -> bool:
        """Whether C{uid} has any live session."""

    def uids() -> list:
        """The users with a live session known to this process."""

    def deliver(
        uids: Iterable[str], event: Event, exclude: ISession | None = None, resource: str | None = None
    ) -> None:
        """
        Give C{event} to every session of every user in C{uids} but
        C{exclude} (only to sessions named C{resource}, when given).
        """

    def claim_once(key: str, ttl: int) -> Any:
        """Deferred True if C{key} is claimed for the first time (within C{ttl} s) anywhere."""

    def set_show(session: ISession, show: str | None) -> None:
        """Record C{session}'s presence (None: invisible)."""

    def presence(uids: Iterable[str]) -> Any:
        """Deferred (uid, resource, show) of the visible sessions of C{uids}, everywhere."""

    def session_counts() -> dict:
        """Live sessions of this process per channel name."""
