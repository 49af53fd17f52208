"""Fuzzing the binary socket: no mutated frame gets an internal error or hurts another client."""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.channels.methodapi.codec import HEADER
from imd.channels.methodapi.crypto import encrypt
from tests import fuzzing
from tests.support import SQLiteBackend
from tests.test_socket import SocketClientMixin

KEY = b"2108a4c486350f3a"
SEEDS = [
    ("sendmsg", {"action": "sendmsg", "sendto": "user", "to_user_id": "bob", "content": "hi", "msgid": "m1"}),
    ("sendmsg", {"action": "sendmsg", "sendto": "group", "to_group_id": "g1", "content": "hi", "user_id": "alice"}),
    ("bind", {"action": "bind", "bindto": "group", "group_id": "g1"}),
    ("bind", {"action": "bind", "bindto": "user", "token": "t", "user_id": "alice"}),
    ("ping", {"action": "ping"}),
    ("other", {"action": "nope"}),
]


class SocketFuzzTests(SocketClientMixin, SQLiteBackend, unittest.TestCase):
    def write(self, client, body: bytes) -> None:
        # Past the client library, which pairs replies with its own requests.
        client.transport.write(HEADER.pack(len(body)) + body)

    def answered(self, client, n):
        # Replies come in frame order: once this one's comes, every frame
        # before it was handled.
        msgid = f"sync-{n}"
        self.write(client, encrypt(KEY, f'{{"action": "sendmsg", "to_user_id": "bob", "content": "s", "msgid": "{msgid}"}}'.encode()))
        return client.expect(match=lambda r: r.get("status") == "1111" and r["data"].get("msgid") == msgid)

    @inlineCallbacks
    def test_mutated_frames(self):
        server = self.start_server()
        bob = yield self.socket_user(server, "bob")
        alice = yield self.socket_user(server, "alice")
        for n, (action, raw) in enumerate(fuzzing.cases("socket", SEEDS)):
            self.write(alice, encrypt(KEY, raw) if n % 4 else raw)
            if n % 25 == 24:
                yield self.answered(alice, n)
        yield self.answered(alice, "end")
        yield bob.ping()
        self.assertEqual(fuzzing.internal_errors(server), 0)
        self.assertEqual([r for r in alice.pushes if r.get("code") == "internal_error"], [])

    @inlineCallbacks
    def test_garbage_streams(self):
        server = self.start_server()
        bob = yield self.socket_user(server, "bob")
        r = fuzzing.rng("socket.stream")
        for _ in range(30):
            client = yield self.socket(server)
            client.transport.write(r.randbytes(r.randint(1, 300)))
            client.transport.loseConnection()
            yield client.closed
        yield bob.ping()
        self.assertEqual(fuzzing.internal_errors(server), 0)
