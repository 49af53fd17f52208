# -*- test-case-name: tests.test_socket -*-
"""
A client of imd's seed-004 binary socket, for applications, tests and the
benchmark tool.

    client = yield connect_socket(reactor, "127.0.0.1", 8282)
    yield client.bind(user_id, token)
    yield client.sendmsg(to_user_id="88ADE6…", content="hi")
    push = yield client.expect("sendmsg")
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from imd.channels.methodapi.codec import Codec, FrameDecoder, FrameTooLarge

DEFAULT_KEY = b"2108a4c486350f3a"
DEFAULT_TIMEOUT = 10.0


class SocketError(Exception):
    """The server answered a request with status 0000."""

    def __init__(self, reply: dict) -> None:
        super().__init__(reply.get("info", ""))
        self.reply = reply
        self.code = reply.get("code", "")


class SocketClosed(Exception):
    pass


class SocketClient(Protocol):
    def __init__(self, reactor: Any = None, key: bytes = DEFAULT_KEY, encrypted: bool = True) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.codec = Codec(key, encrypted)
        self.decoder = FrameDecoder(65535)
        self.client_id: str | None = None
        self.greeted = Deferred()
        self.closed = Deferred()
        self.pushes: list[dict] = []
        # Replies come in request order (the server answers in that order, pipelined or not).
        self._replies: list[tuple[str, Deferred]] = []
        self._waiters: list[tuple[Callable[[dict], bool], Deferred]] = []
        self._lost = False

    def dataReceived(self, data: bytes) -> None:
        try:
            bodies = self.decoder.feed(data)
        except FrameTooLarge:
            self.transport.loseConnection()
            return
        for body in bodies:
            try:
                self._frame(self.codec.decode(body))
            except Exception:
                continue

    def _frame(self, obj: dict) -> None:
        action = obj.get("action")
        if action == "connect" and self.client_id is None:
            self.client_id = obj.get("client_id")
            self.greeted.callback(self)
            return
        if "status" in obj or action == "pong":
            for i, (expected, d) in enumerate(self._replies):
                if action in (expected, "", None) or (expected == "ping" and action == "pong"):
                    del self._replies[i]
                    if obj.get("status") == "0000":
                        d.errback(SocketError(obj))
                    else:
                        d.callback(obj)
                    return
        for i, (predicate, d) in enumerate(self._waiters):
            if predicate(obj):
                del self._waiters[i]
                d.callback(obj)
                return
        self.pushes.append(obj)

    def connectionLost(self, reason: Any = None) -> None:
        self._lost = True
        pending = [d for _, d in self._replies] + [d for _, d in self._waiters]
        self._replies.clear()
        self._waiters.clear()
        for d in pending:
            d.errback(SocketClosed(str(reason.value if reason else "")))
        if not self.greeted.called:
            self.greeted.errback(SocketClosed("closed before the greeting"))
        self.closed.callback(None)

    def send(self, obj: dict) -> None:
        self.transport.write(self.codec.encode(obj))

    def send_raw(self, data: bytes) -> None:
        self.transport.write(data)

    def request(self, obj: dict, timeout: float | None = DEFAULT_TIMEOUT) -> Deferred:
        """Send C{obj}; fire with its 1111 reply or fail with L{SocketError}."""
        if self._lost:
            return fail(SocketClosed("the connection is closed"))
        d = Deferred()
        self._replies.append((obj.get("action", ""), d))
        if timeout is not None:
            d.addTimeout(timeout, self.reactor)
        self.send(obj)
        return d

    def expect(self, action: str | None = None, match: Callable[[dict], bool] | None = None, timeout: float | None = DEFAULT_TIMEOUT) -> Deferred:
        def predicate(obj: dict) -> bool:
            return (action is None or obj.get("action") == action) and (match is None or match(obj))

        for i, obj in enumerate(self.pushes):
            if predicate(obj):
                del self.pushes[i]
                return succeed(obj)
        if self._lost:
            return fail(SocketClosed("the connection is closed"))
        d = Deferred()
        entry = (predicate, d)
        self._waiters.append(entry)
        if timeout is not None:
            d.addTimeout(timeout, self.reactor)
        return d

    def bind(self, user_id: str, token: str) -> Deferred:
        return self.request({"action": "bind", "bindto": "user", "user_id": user_id, "token": token})

    def accept_group(self, group_id: str, friend_id: str = "") -> Deferred:
        return self.request({"action": "bind", "bindto": "group", "group_id": group_id, "friend_id": friend_id})

    def sendmsg(self, content: str, to_user_id: str | None = None, to_group_id: str | None = None, **extra: Any) -> Deferred:
        obj = {"action": "sendmsg", "content": content, **extra}
        if to_group_id is not None:
            obj.update(sendto="group", to_group_id=to_group_id)
        else:
            obj.update(sendto="user", to_user_id=to_user_id)
        return self.request(obj)

    def ping(self) -> Deferred:
        return self.request({"action": "ping"})

    def close(self) -> Deferred:
        if not self._lost:
            self.transport.loseConnection()
        return self.closed


def connect_socket(reactor: Any, host: str, port: int, key: bytes = DEFAULT_KEY, encrypted: bool = True) -> "Deferred[SocketClient]":
    """Connect and wait for the server's greeting (its client_id)."""
    client = SocketClient(reactor, key, encrypted)
    d = connectProtocol(TCP4ClientEndpoint(reactor, host, port, timeout=10), client)
    d.addCallback(lambda _: client.greeted)
    return d
