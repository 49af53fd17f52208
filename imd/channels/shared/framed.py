# -*- test-case-name: tests.test_longconn,tests.test_socket -*-
"""
What every connection-oriented channel does the same way, whatever its
wire format: frames handled and answered in the order they came (so a
client's messages keep their order), reading paused while too many frames
wait, idle connections closed, and the life of a session: started once
the client authenticates, its token checked while it lasts, what it
missed written before live events (at login and after the hub lost touch
with other instances), kicked when replaced.

This module holds no wire format and no rule; a channel subclasses
L{FramedProtocol} and L{ChannelSession} and only parses and renders.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from imd.channels.shared.idle import IdleSweeper
from imd.core import events
from imd.core.accounts import LiveToken
from imd.core.messages import Cursor
from imd.hub.interfaces import RESYNC, Event, ISession

if TYPE_CHECKING:
    from imd.server import Server

log = Logger()
# Frames waiting to be handled before the connection stops reading: a
# client that floods is slowed down, not buffered without end.
MAX_QUEUED = 64
# Pipelined frames one connection may have in flight: enough to share
# commits, few enough that one client cannot fill the store's queue.
MAX_INFLIGHT = 16
# What a session missed is fetched in pages of this many messages of each
# kind (1:1, group), page after page until a short one.
MISSED_PAGE = 500
MAX_MISSED_PAGES = 100


@implementer(ISession)
class ChannelSession:
    channel = ""

    def __init__(self, protocol: "FramedProtocol", uid: str, resource: str, show: str | None = None) -> None:
        self.protocol = protocol
        self.uid = uid
        self.resource = resource
        self.show = show

    def deliver(self, event: Event) -> None:
        self.protocol.receive(event)

    def kick(self, reason: str) -> None:
        self.protocol.kick(reason)


class FramedProtocol(Protocol):
    """
    A subclass implements C{frames(data)} (split bytes into frames, raise
    to close), C{handle(frame)} (a Deferred while it waits on a service,
    else None), C{render(event)} (write a hub event; a Deferred while a
    design without client acknowledgements records the written message
    as received, which L{push_missed} waits for) and
    C{kick(reason)}, and calls L{start_session} once the client
    authenticated.

    A frame is handled once the one before it is answered, unless both
    are I{pipelined}: a frame the subclass says a service commits in the
    order of the calls (L{pipelined}).  Then the next one is handed to the
    service at once, so one connection's messages share a commit instead
    of waiting a commit each, and L{in_order} holds back each answer until
    the earlier ones are written.
    """

    session: ChannelSession | None = None
    _reported: ChannelSession | None = None
    session_class: type[ChannelSession] = ChannelSession
    # Until the client authenticates: when it must have, and the address
    # it counts against (see ChannelFactory.buildProtocol).
    _auth_deadline: Any = None
    unauthenticated_from: str | None = None
    token: LiveToken | None = None

    def __init__(self, server: "Server") -> None:
        self.server = server
        # Live events that arrive while what the session missed is being
        # written wait here, so they reach the client after it.
        self._held: list[Event] | None = None
        self._resync_after = False
        # A list, not a deque: at most 64 frames, and an idle connection
        # keeps 56 bytes instead of 600.
        self._queue: list[Any] = []
        # Frames handed to a service and not yet answered; when any are,
        # whether they (and so the next frame) may overlap.
        self._inflight = 0
        self._pipelining = False
        self._last: Deferred | None = None
        self._before: Deferred | None = None
        self._looping = False
        self._paused = False
        self._closing = False

    def connectionMade(self) -> None:
        try:
            # Frames are small and answers awaited: Nagle's delay (up to
            # 40 ms) would be all of the latency.
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass  # not TCP
        self.factory.idle.add(self)
        self.server.metrics.connections_opened.labels(self.session_class.channel).inc()
        timeout = self.server.config.limits.auth_timeout
        self._auth_deadline = self.server.reactor.callLater(timeout, self._auth_expired, timeout)

    def _auth_expired(self, timeout: int) -> None:
        self._auth_deadline = None
        if self.session is None and not self._closing:
            log.info("{channel}: no authentication within {s} s; closing", channel=self.session_class.channel, s=timeout)
            self.count_error("auth_timeout")
            self.refuse_connection("auth_timeout", f"authenticate within {timeout} s of connecting")

    def _no_longer_waiting(self) -> None:
        """Neither the deadline nor the per-address count concern this connection any more."""
        if self._auth_deadline is not None:
            if self._auth_deadline.active():
                self._auth_deadline.cancel()
            self._auth_deadline = None
        self.factory.forget(self)

    def refuse_connection(self, code: str, message: str) -> None:
        """Tell the client why it is being closed, in the channel's form; then close."""
        self.close()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.last_seen = self.server.reactor.seconds()
        frames = self.frames(data)
        if frames is None:
            return
        self._queue.extend(frames)
        if len(self._queue) >= MAX_QUEUED and not self._paused:
            self._paused = True
            self.transport.pauseProducing()
        self._next()

    def _next(self) -> None:
        if self._looping:
            # A frame answered at once inside the loop below: it goes on.
            return
        self._looping = True
        try:
            self._loop()
        finally:
            self._looping = False

    def _loop(self) -> None:
        while self._queue and not self._closing:
            pipelined = self.pipelined(self._queue[0])
            if self._inflight and not (pipelined and self._pipelining and self._inflight < MAX_INFLIGHT):
                # _done resumes the loop.
                break
            frame = self._queue.pop(0)
            # What this frame's answer waits for, if it answers while
            # handle() runs (see in_order).
            self._before = self._last if self._inflight else None
            try:
                d = self.handle(frame)
            except Exception:
                self._unexpected(Failure())
                continue
            finally:
                self._before = None
            if d is None:
                # Answered at once: nothing to wait for.
                continue
            self._inflight += 1
            self._pipelining = pipelined
            self._last = d
            d.addBoth(self._done)
        if self._paused and len(self._queue) < MAX_QUEUED // 2 and not self._closing:
            self._paused = False
            self.transport.resumeProducing()

    def _done(self, result: Any) -> None:
        # One callback for either outcome, not an errback and a callback:
        # it runs for every frame.
        if isinstance(result, Failure):
            self._unexpected(result)
        self._inflight -= 1
        if not self._inflight:
            # Nothing will wait for it: an idle connection keeps no Deferred.
            self._last = None
        self._next()

    def pipelined(self, frame: Any) -> bool:
        """
        Whether C{frame} may be handled while earlier pipelined frames
        wait: only when its service commits calls in the order they are
        made, whatever their timing, and answers those still waiting in
        that order too.  Never, by default.
        """
        return False

    def in_order(self, d: Deferred | None) -> Deferred | None:
        """
        C{d} (a handler's Deferred, or None when it answered at once), held
        back until the frames handled before it are answered: a channel
        answers through this, from inside L{handle}, so its answers keep
        the order of the frames.
        """
        before = self._before
        if before is None:
            # Nothing was in flight when this frame was taken: a frame that
            # is not pipelined waits for everything before it, and may
            # call this later (after a token check), when its own
            # Deferred is the last one.
            return d
        if d is not None and not d.called:
            # Still waiting, like every frame in flight before it: they all
            # wait in one queue that answers in order (see pipelined), so
            # only an answer ready at once could overtake them.
            return d
        if d is None:
            d = succeed(None)
        held: Deferred = Deferred()

        def release(passthrough: Any) -> Any:
            d.chainDeferred(held)
            return passthrough

        before.addBoth(release)
        return held

    def _unexpected(self, failure: Failure) -> None:
        log.failure("{channel}: handling a frame", failure, channel=self.session_class.channel)
        self.count_error("internal_error")

    def count_error(self, code: str) -> None:
        """An error answered on this channel, for the metrics."""
        self.server.metrics.errors.labels(self.session_class.channel, code).inc()

    # -- the session ---------------------------------------------------------

    def start_session(self, uid: str, resource: str, token: str, show: str | None = None) -> ChannelSession:
        """The client authenticated as C{uid} with C{token}: it is live from now on."""
        self._no_longer_waiting()
        self.token = LiveToken(self.server.accounts, token, self.server.reactor)
        self.session = self.session_class(self, uid, resource, show)
        self.server.hub.register(self.session)
        # Kept apart from self.session, which a kick clears: its end is reported too.
        self._reported = self.session
        self.server.session_reports.started(self.session, self.peer_address() or "")
        log.info("{uid}/{res} connected on {channel}", uid=uid, res=resource, channel=self.session_class.channel)
        return self.session

    def peer_address(self) -> str | None:
        """The client's IP address, for limits per address and reports (None: not IP)."""
        peer = getattr(self.transport, "getPeer", lambda: None)()
        return getattr(peer, "host", None)

    def token_due(self) -> bool:
        """Whether the session's token should be checked before the next request."""
        return self.token is not None and self.token.due()

    @inlineCallbacks
    def check_token(self):
        """Fires True while the token is good; else the session is kicked and it fires False."""
        if (yield self.token.valid()):
            return True
        self.server.hub.unregister(self.session)
        self.kick("token revoked or expired")
        return False

    def receive(self, event: Event) -> None:
        """A hub event for this session."""
        if self.session is None:
            return
        if event.kind == events.SESSION_END:
            self.server.hub.unregister(self.session)
            self.kick(event.data["reason"])
            return
        if event.kind == RESYNC:
            # Events from other instances were missed: they are in the store.
            if self._held is None:
                self._resync()
            else:
                # What is being written now may have been read before them.
                self._resync_after = True
            return
        if self._held is not None:
            self._held.append(event)
            return
        self.render(event)

    def _resync(self) -> None:
        self.push_missed().addErrback(lambda f: log.failure("{channel}: resync", f, channel=self.session_class.channel))

    @inlineCallbacks
    def push_missed(self, messages: bool = True):
        """
        Write what the session missed (L{imd.core.messages.MessageService.pending};
        without C{messages}, only requests and invites), then the live
        events that arrived meanwhile.  A client keeps the sender and msgid
        of what it has, so a message it had already is dropped there.
        """
        uid = self.session.uid
        seen: set[tuple[str, str]] = set()
        cursor = Cursor()
        self._held = []
        try:
            others = True
            for _ in range(MAX_MISSED_PAGES):
                page = yield self.server.messages.pending(uid, messages, others, MISSED_PAGE, cursor)
                others = False
                for event in page:
                    key = _once(event)
                    if key is not None:
                        if key in seen and event.kind == events.MESSAGE:
                            continue
                        seen.add(key)
                    if self.session is None:
                        return
                    d = self.render(event)
                    if d is not None:
                        yield d
                if not messages or cursor.done:
                    break
        finally:
            held, self._held = self._held, None
            for event in held:
                if _once(event) not in seen:
                    self.receive(event)
            if self._resync_after and self.session is not None:
                self._resync_after = False
                self._resync()

    def timeoutConnection(self) -> None:
        log.info("connection idle for {s} s; closing", s=self.factory.idle.timeout)
        self.close()

    def connectionLost(self, reason: Any = None) -> None:
        self._no_longer_waiting()
        self.factory.idle.discard(self)
        self.server.metrics.connections_closed.labels(self.session_class.channel).inc()
        self._closing = True
        self._queue.clear()
        if self.session is not None:
            self.server.hub.unregister(self.session)
        if self._reported is not None:
            self.server.session_reports.ended(self._reported, self.peer_address() or "")
            self._reported = None

    def close(self) -> None:
        self._closing = True
        self._queue.clear()
        self.transport.loseConnection()

    def write(self, data: bytes) -> None:
        if not self._closing:
            self.transport.write(data)

    def frames(self, data: bytes) -> list | None:
        raise NotImplementedError

    def handle(self, frame: Any) -> Deferred | None:
        raise NotImplementedError

    def render(self, event: Event) -> Deferred | None:
        raise NotImplementedError

    def kick(self, reason: str) -> None:
        raise NotImplementedError


def _once(event: Event) -> tuple[str, str] | None:
    """
    What names C{event} among those a session must get once: a message (a
    client drops a sender's msgid it has) or a kept notification; None for
    any other event.
    """
    if event.kind == events.MESSAGE:
        return (event.data["from"], event.data["msgid"])
    if event.kind == events.NOTICE:
        return ("notice", str(event.data["id"]))
    return None


class ChannelFactory(Factory):
    protocol_class: type[FramedProtocol]

    def __init__(self, server: "Server", idle_timeout: float) -> None:
        self.server = server
        self.idle = IdleSweeper(server.reactor, idle_timeout)
        # Connections not yet authenticated, by address.
        self._unauthenticated: Counter[str] = Counter()

    def buildProtocol(self, addr: Any) -> FramedProtocol | None:
        host = getattr(addr, "host", None)
        channel = self.protocol_class.session_class.channel
        if host is not None:
            cap = self.server.config.limits.unauthenticated_per_address
            if self._unauthenticated[host] >= cap:
                # None: Twisted closes the connection at once.
                log.info("{channel}: {host} holds {cap} connections not yet authenticated; refusing another",
                         channel=channel, host=host, cap=cap)
                self.server.metrics.errors.labels(channel, "too_many_connections").inc()
                return None
            self._unauthenticated[host] += 1
        protocol = self.protocol_class(self.server)
        protocol.factory = self
        protocol.unauthenticated_from = host
        return protocol

    def forget(self, protocol: FramedProtocol) -> None:
        """C{protocol} authenticated or went: it no longer counts against its address."""
        host, protocol.unauthenticated_from = protocol.unauthenticated_from, None
        if host is not None:
            self._unauthenticated[host] -= 1
            if not self._unauthenticated[host]:
                del self._unauthenticated[host]
