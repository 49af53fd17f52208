"""Fuzzing /ws: no mutated message gets an internal error or hurts another client."""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from tests import fuzzing
from tests.support import SQLiteBackend
from tests.test_fuzz_longconn import SEEDS
from tests.test_websocket import WebSocketTestsMixin


class WebSocketFuzzTests(WebSocketTestsMixin, SQLiteBackend, unittest.TestCase):
    @inlineCallbacks
    def test_mutated_messages(self):
        server = self.start_server()
        bob = yield self.user(server, "bob")
        yield server.accounts.register("alice", "secret1")
        alice = yield self.ws(server)
        yield alice.auth("alice", password="secret1")
        seeds = [(msgtype, {"msgtype": msgtype, "body": body}) for msgtype, body in SEEDS]
        for n, (_, raw) in enumerate(fuzzing.cases("websocket", seeds)):
            alice.send_text(raw.decode("utf-8", "replace"))
            if n % 25 == 24:
                yield alice.request(T.IM_MESSAGE, {"to": "bob", "body": "sync"})
        yield alice.request(T.IM_MESSAGE, {"to": "bob", "body": "sync"})
        yield bob.ping()
        self.assertEqual(fuzzing.internal_errors(server), 0, fuzzing.where("websocket"))

    @inlineCallbacks
    def test_garbage_before_auth(self):
        server = self.start_server()
        bob = yield self.user(server, "bob")
        r = fuzzing.rng("websocket.stream")
        for _ in range(20):
            client = yield self.ws(server)
            client.send_text(r.randbytes(r.randint(1, 200)).decode("utf-8", "replace"))
            yield client.closed.addTimeout(10, server.reactor)
        yield bob.ping()
        self.assertEqual(fuzzing.internal_errors(server), 0)
