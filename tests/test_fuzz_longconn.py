"""Fuzzing the long connection: no mutated frame gets an internal error or hurts another client."""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from imd.channels.longconn.framing import HEADER
from tests import fuzzing
from tests.support import LongConnTestMixin, SQLiteBackend

SEEDS = [
    (T.IM_MESSAGE, {"msgid": "m1", "to": "bob", "type": "0", "kind": "text", "body": "hi", "time": "2015-01-30 12:23:00"}),
    (T.IM_MESSAGE, {"msgid": "g1", "gid": "g1", "type": "1", "body": "hi"}),
    (T.IM_MESSAGE_ACK, {"type": "196609", "msgid": "m1", "from": "bob"}),
    (T.IM_MESSAGE_ACK, {"type": "196609", "msgid": "g1", "gid": "g1", "seq": 1}),
    (T.IM_MESSAGE_ACK, {"type": "200705", "msgid": "r1"}),
    (T.IM_PRESENCE, {"type": "online", "show": "online"}),
    (T.IM_PRESENCE, {"type": "ack", "to": "bob", "to_res": "pad", "show": "away"}),
    (T.IM_ROSTER_ADD_REQ, {"msgid": "r1", "to": "bob", "msg": "hi"}),
    (T.IM_ROSTER_ADD_RESP, {"msgid": "r1", "to": "bob", "accept": True, "msg": '{"req_gid": "1", "resp_name": "B"}'}),
    (T.IM_ROSTER_DEL_REQ, {"msgid": "d1", "to": "bob"}),
    (T.IM_CHATROOM, {"msgid": "c1", "type": "0", "gid": "g1", "to": "bob"}),
    (T.IM_CHATROOM, {"msgid": "c2", "type": "1", "gid": "g1", "accept": True, "fname": "me"}),
    (T.IM_CHATROOM, {"msgid": "c3", "type": "2", "rid": "g1"}),
    (T.IM_RECEIPT, {"msgid": "m1", "to": "bob", "kind": "read"}),
    (T.IM_RECALL, {"msgid": "m1", "to": "bob"}),
    (T.IM_PING, {}),
    (T.IM_AUTH, {"uid": "alice", "password": "secret1"}),
    (12345, {"msgid": "x"}),
]


class LongConnFuzzTests(LongConnTestMixin, SQLiteBackend, unittest.TestCase):
    def answered(self, client):
        # A frame whose ack no mutated frame can imitate (its msgid is new):
        # once it comes, every frame before it was handled.
        return client.request(T.IM_MESSAGE, {"to": "bob", "body": "sync"})

    @inlineCallbacks
    def test_mutated_frames(self):
        server = self.start_server()
        bob = yield self.user(server, "bob")
        alice = yield self.user(server, "alice")
        group = yield server.groups.create("alice", "team")
        SEEDS.append((T.IM_MESSAGE, {"msgid": "g2", "gid": group.gid, "type": "1", "body": "hi"}))
        for n, (msgtype, raw) in enumerate(fuzzing.cases("longconn", SEEDS)):
            alice.send_raw(HEADER.pack(4 + len(raw), msgtype) + raw)
            if n % 25 == 24:
                yield self.answered(alice)
        yield self.answered(alice)
        # Nobody else noticed.
        yield bob.ping()
        self.assertEqual(fuzzing.internal_errors(server), 0)

    @inlineCallbacks
    def test_garbage_streams_before_auth(self):
        server = self.start_server()
        bob = yield self.user(server, "bob")
        r = fuzzing.rng("longconn.stream")
        for _ in range(40):
            client = yield self.connect(server)
            client.send_raw(r.randbytes(r.randint(1, 200)))
            client.send_raw(HEADER.pack(4 + 2, T.IM_PING) + b"{}")
            yield client.closed.addTimeout(10, server.reactor)
        yield bob.ping()
        self.assertEqual(fuzzing.internal_errors(server), 0)
