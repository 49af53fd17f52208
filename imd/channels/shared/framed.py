# -*- test-case-name: tests.test_longconn,tests.test_socket -*-
"""
What every connection-oriented channel does the same way, whatever its
wire format: frames handled and answered in the order they came (so a
client's messages keep their order), reading paused while too many frames
wait, idle connections closed, and a session the hub can deliver to or
kick.

This module holds no wire format and no rule; a channel subclasses
L{FramedProtocol} and L{ChannelSession}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from imd.hub.interfaces import Event, ISession
from imd.channels.shared.idle import IdleSweeper

log = Logger()
# Frames waiting to be handled before the connection stops reading: a
# client that floods is slowed down, not buffered without end.
MAX_QUEUED = 64
# Pipelined frames one connection may have in flight: enough to share
# commits, few enough that one client cannot fill the store's queue.
MAX_INFLIGHT = 16


@implementer(ISession)
class ChannelSession:
    channel = ""

    def __init__(self, protocol: "FramedProtocol", uid: str, resource: str, show: str | None = None) -> None:
        self.protocol = protocol
        self.uid = uid
        self.resource = resource
        self.show = show

    def deliver(self, event: Event) -> None:
        self.protocol.render(event)

    def kick(self, reason: str) -> None:
        self.protocol.kick(reason)


class FramedProtocol(Protocol):
    """
    A subclass implements C{frames(data)} (split bytes into frames, raise
    to close), C{handle(frame)} (a Deferred while it waits on a service,
    else None), C{render(event)} and C{kick(reason)}.

    A frame is handled once the one before it is answered, unless both
    are I{pipelined}: a frame the subclass says a service commits in the
    order of the calls (L{pipelined}).  Then the next one is handed to the
    service at once, so one connection's messages share a commit instead
    of waiting a commit each, and L{in_order} holds back each answer until
    the earlier ones are written.
    """

    session: ChannelSession | None = None

    def __init__(self, server: Any) -> None:
        self.server = server
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
            d.addErrback(self._unexpected)
            d.addBoth(self._done)
        if self._paused and len(self._queue) < MAX_QUEUED // 2 and not self._closing:
            self._paused = False
            self.transport.resumeProducing()

    def _done(self, _: Any) -> None:
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
        channel = type(self.session).channel if self.session else type(self).__name__
        log.failure("{channel}: handling a frame", failure, channel=channel)
        self.server.metrics.errors.labels(channel, "internal_error").inc()

    def timeoutConnection(self) -> None:
        log.info("connection idle for {s} s; closing", s=self.factory.idle.timeout)
        self.close()

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.idle.discard(self)
        self._closing = True
        self._queue.clear()
        if self.session is not None:
            self.server.hub.unregister(self.session)

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


class ChannelFactory(Factory):
    protocol_class: type[FramedProtocol]

    def __init__(self, server: Any, idle_timeout: float) -> None:
        self.server = server
        self.idle = IdleSweeper(server.reactor, idle_timeout)

    def buildProtocol(self, addr: Any) -> FramedProtocol:
        protocol = self.protocol_class(self.server)
        protocol.factory = self
        return protocol
