"""
What a session missed, written by the shared session lifecycle at login
and after a resync (the hub lost touch with other instances), on both TCP
channels: a recalled message comes back in its place without its words.
"""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from imd.hub.interfaces import RESYNC, Event
from tests.support import SQLiteBackend
from tests.test_socket import SocketClientMixin


class MissedTests(SocketClientMixin, SQLiteBackend, unittest.TestCase):
    @inlineCallbacks
    def setup_messages(self, server):
        """To bob: m1 (recalled) and m2, 1:1; g1 (recalled) and g2 in a group."""
        yield server.accounts.register("alice", "secret1")
        yield server.accounts.register("bob", "secret1")
        group = yield server.groups.create("alice", "team")
        yield server.groups.invite("alice", group.gid, "bob", "i1")
        yield server.groups.answer("bob", group.gid, True)
        for msgid, body in (("m1", "secret words"), ("m2", "kept")):
            yield server.messages.send("alice", msgid, body, to="bob")
        for msgid, body in (("g1", "group secret"), ("g2", "group kept")):
            yield server.messages.send("alice", msgid, body, gid=group.gid)
        yield server.messages.recall("alice", "m1", to="bob")
        yield server.messages.recall("alice", "g1", gid=group.gid)
        return group.gid

    @inlineCallbacks
    def test_longconn_resync(self):
        server = self.start_server()
        gid = yield self.setup_messages(server)
        bob = yield self.user(server, "bob", register=False)
        server.hub.deliver(["bob"], Event(RESYNC, {}))
        got = {}
        for _ in range(4):
            _, body = yield bob.expect(T.IM_MESSAGE)
            got[body["msgid"]] = body
        self.assertEqual((got["m1"]["body"], got["m1"]["recalled"]), ("", "1"))
        self.assertEqual((got["g1"]["body"], got["g1"]["recalled"], got["g1"]["gid"]), ("", "1", gid))
        self.assertEqual((got["m2"]["body"], got["g2"]["body"]), ("kept", "group kept"))

    @inlineCallbacks
    def test_longconn_resync_pages_through_everything(self):
        # More than a page of each kind: every one comes, once, in order.
        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        yield server.accounts.register("bob", "secret1")
        group = yield server.groups.create("alice", "team")
        yield server.groups.invite("alice", group.gid, "bob", "i1")
        yield server.groups.answer("bob", group.gid, True)
        for i in range(1203):
            yield server.messages.send("alice", f"m{i}", str(i), to="bob")
        for i in range(505):
            yield server.messages.send("alice", f"g{i}", str(i), gid=group.gid)
        bob = yield self.user(server, "bob", register=False)
        server.hub.deliver(["bob"], Event(RESYNC, {}))
        got = []
        for _ in range(1203 + 505):
            _, body = yield bob.expect(T.IM_MESSAGE)
            got.append(body["msgid"])
        self.assertEqual([m for m in got if m.startswith("m")], [f"m{i}" for i in range(1203)])
        self.assertEqual([m for m in got if m.startswith("g")], [f"g{i}" for i in range(505)])
        yield bob.ping()
        self.assertEqual(bob.take(T.IM_MESSAGE), [])

    @inlineCallbacks
    def test_longconn_login_pushes_requests_and_invites_only(self):
        # Offline messages are fetched by QID on the long connection.
        server = self.start_server()
        yield self.setup_messages(server)
        yield server.accounts.register("carol", "secret1")
        yield server.roster.request("carol", "bob", "r1", "hi")
        bob = yield self.user(server, "bob", register=False)
        _, request = yield bob.expect(T.IM_ROSTER_ADD_REQ)
        self.assertEqual((request["msgid"], request["msg"]), ("r1", "hi"))
        yield bob.ping()
        self.assertEqual(bob.take(T.IM_MESSAGE), [])

    @inlineCallbacks
    def test_socket_bind_and_resync(self):
        server = self.start_server()
        gid = yield self.setup_messages(server)
        bob = yield self.socket_user(server, "bob", register=False)
        got = {}
        for _ in range(4):
            push = yield bob.expect("sendmsg")
            got[push["msgid"]] = push
        self.assertEqual((got["m1"]["content"], got["m1"]["recalled"]), ("", True))
        self.assertEqual((got["g1"]["content"], got["g1"]["to_group_id"]), ("", gid))
        self.assertEqual(got["m2"]["content"], "kept")
        # Written counts as received on the socket: a resync writes again
        # only what is new, and live messages wait behind it.
        server.hub.deliver(["bob"], Event(RESYNC, {}))
        yield server.messages.send("alice", "m3", "late", to="bob")
        push = yield bob.expect("sendmsg")
        self.assertEqual(push["msgid"], "m3")
        self.assertEqual([p for p in bob.pushes if p.get("action") == "sendmsg"], [])
