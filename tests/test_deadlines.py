"""
Connection deadlines and caps: a client that is slow on purpose (one byte
every few seconds, never authenticating, many connections from one
address) is closed in bounded time, and nobody else notices.
"""

from __future__ import annotations

import struct

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from imd.channels.longconn.framing import FrameDecoder, decode_body
from tests.support import SQLiteBackend
from tests.test_socket import SocketClientMixin

LIMITS = {"auth_timeout": 1, "unauthenticated_per_address": 3, "http_header_timeout": 1, "http_min_body_rate": 100}


class Raw(protocol.Protocol):
    """A TCP client that keeps what it got and can trickle bytes."""

    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred = Deferred()
        self.trickle: LoopingCall | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason) -> None:
        if self.trickle is not None and self.trickle.running:
            self.trickle.stop()
        self.done.callback(self.data)

    def drip(self, data: bytes, every: float) -> None:
        """Write C{data} a byte at a time, one every C{every} seconds."""
        remaining = iter(data)

        def one() -> None:
            byte = next(remaining, None)
            if byte is not None:
                self.transport.write(bytes([byte]))

        self.trickle = LoopingCall(one)
        self.trickle.start(every)


class DeadlineTests(SocketClientMixin, SQLiteBackend, unittest.TestCase):
    def start_server(self, **sections):
        sections.setdefault("limits", LIMITS)
        return super().start_server(**sections)

    @inlineCallbacks
    def connect_raw(self, server, listener: str) -> Raw:
        host, port = server.address(listener)
        client = yield connectProtocol(TCP4ClientEndpoint(reactor, host, port), Raw())
        self.addCleanup(lambda: client.transport.loseConnection() or client.done)
        return client

    def closed_within(self, client: Raw, seconds: float):
        return client.done.addTimeout(seconds, reactor)

    @inlineCallbacks
    def test_long_connection_must_authenticate_in_time(self):
        server = self.start_server()
        bob = yield self.user(server, "bob")
        silent = yield self.connect_raw(server, "longconn")
        # One byte at a time of a frame that never completes.
        trickler = yield self.connect_raw(server, "longconn")
        trickler.drip(struct.pack(">II", 1000, T.IM_AUTH) + b"{" * 100, 0.2)
        for client in (silent, trickler):
            data = yield self.closed_within(client, 5)
            (frame,) = FrameDecoder(65536).feed(data)
            self.assertEqual(frame[0], T.IM_MESSAGE_ACK)
            body = decode_body(frame[1])
            self.assertEqual((body["type"], body["code"]), (str(T.IM_AUTH), "auth_timeout"))
        # An authenticated session has no such deadline.
        yield deferLater(reactor, 1.2, lambda: None)
        yield bob.ping()

    @inlineCallbacks
    def test_socket_must_bind_in_time(self):
        server = self.start_server()
        client = yield self.socket(server)
        yield client.closed.addTimeout(5, reactor)
        refusal = [p for p in client.pushes if p.get("code") == "auth_timeout"]
        self.assertEqual(len(refusal), 1, client.pushes)
        # Bound in time, it stays.
        bound = yield self.socket_user(server, "alice")
        yield deferLater(reactor, 1.2, lambda: None)
        yield bound.ping()

    @inlineCallbacks
    def test_unauthenticated_connections_per_address(self):
        server = self.start_server(limits=dict(LIMITS, auth_timeout=30))
        yield server.accounts.register("alice", "secret1")
        yield server.accounts.register("bob", "secret1")
        waiting = []
        for _ in range(3):
            waiting.append((yield self.connect(server)))
        refused = yield self.connect_raw(server, "longconn")
        self.assertEqual((yield self.closed_within(refused, 5)), b"")
        # One of them authenticates: there is room for another, and the
        # others are still there.
        yield waiting[0].auth("alice", password="secret1")
        bob = yield self.connect(server)
        yield bob.auth("bob", password="secret1")
        for client in waiting[1:]:
            self.assertFalse(client.closed.called)
        # Each listener counts on its own.
        sockets = []
        for _ in range(3):
            sockets.append((yield self.socket(server)))
        yield sockets[0].ping()
        self.assertEqual(
            server.metrics.errors.labels("longconn", "too_many_connections")._value.get(), 1
        )

    @inlineCallbacks
    def test_http_headers_in_time(self):
        server = self.start_server()
        trickler = yield self.connect_raw(server, "http")
        trickler.drip(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"y" * 100, 0.2)
        data = yield self.closed_within(trickler, 5)
        self.assertTrue(data.startswith(b"HTTP/1.1 408"), data)
        code, body, _ = yield self.http(server, "GET", "/healthz")
        self.assertEqual(code, 200)

    @inlineCallbacks
    def test_http_body_at_a_minimum_rate(self):
        server = self.start_server()
        trickler = yield self.connect_raw(server, "http")
        trickler.transport.write(b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n")
        # 5 bytes a second, where 100 are due after the first second.
        trickler.drip(b"{" + b" " * 498 + b"}", 0.2)
        data = yield self.closed_within(trickler, 8)
        self.assertTrue(data.startswith(b"HTTP/1.1 408"), data)
        # A body sent at once is read as ever.
        code, body, _ = yield self.http(server, "POST", "/auth/login", {"uid": "nobody", "password": "x" * 6})
        self.assertEqual(code, 401, body)
