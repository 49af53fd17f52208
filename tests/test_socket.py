"""Seed 004's binary socket over real loopback TCP, and interop with seed 001."""

import base64
import struct

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from imd.channels.methodapi.codec import Codec, FrameDecoder, FrameTooLarge
from imd.channels.methodapi.crypto import encrypt
from imd.errors import InvalidField
from imd.channels.methodapi.client import SocketError, connect_socket
from tests.support import LongConnTestMixin, PostgresBackend, SQLiteBackend

KEY = b"2108a4c486350f3a"


def settle(seconds=0.05):
    return deferLater(reactor, seconds, lambda: None)


class FramingTests(unittest.TestCase):
    def test_decoder(self):
        d = FrameDecoder(100)
        frame = struct.pack(">H", 5) + b"abc\0\0"
        self.assertEqual(d.feed(frame[:3]), [])
        self.assertEqual(d.feed(frame[3:] + frame), [b"abc", b"abc"])
        self.assertRaises(FrameTooLarge, FrameDecoder(10).feed, struct.pack(">H", 11))

    def test_codec(self):
        codec = Codec(KEY, True)
        frame = codec.encode({"action": "ping"})
        (n,) = struct.unpack(">H", frame[:2])
        self.assertEqual(codec.decode(frame[2 : 2 + n]), {"action": "ping"})
        for bad in (b"", b"!!", base64.b64encode(b"short"), encrypt(KEY, b"[1]"), encrypt(KEY, b"{nope")):
            self.assertRaises(InvalidField, codec.decode, bad)
        self.assertEqual(Codec(KEY, False).decode(b'{"a": 1}'), {"a": 1})


class SocketClientMixin(LongConnTestMixin):
    """Servers with the socket on too, and clients of it."""

    def start_server(self, **sections):
        sections.setdefault("socket", {"endpoint": "tcp:0:interface=127.0.0.1"})
        return LongConnTestMixin.start_server(self, **sections)

    @inlineCallbacks
    def socket(self, server, encrypted=True):
        host, port = server.address("socket")
        client = yield connect_socket(reactor, host, port, encrypted=encrypted)
        self.addCleanup(client.close)
        return client

    @inlineCallbacks
    def socket_user(self, server, uid, password="secret1", register=True):
        if register:
            yield server.accounts.register(uid, password)
        token = yield self.login(server, uid, password)
        client = yield self.socket(server)
        reply = yield client.bind(uid, token)
        self.assertEqual(reply["data"]["user_id"], uid)
        return client


class SocketTestsMixin(SocketClientMixin):
    @inlineCallbacks
    def test_connect_bind_ping(self):
        server = self.start_server()
        client = yield self.socket(server)
        self.assertRegex(client.client_id, "^[0-9a-f]{32}$")
        pong = yield client.ping()
        self.assertEqual(pong, {"action": "pong"})
        err = yield self.assertFailure(client.sendmsg("hi", to_user_id="bob"), SocketError)
        self.assertEqual(err.code, "unauthenticated")
        err = yield self.assertFailure(client.bind("alice", "bad-token"), SocketError)
        self.assertEqual(err.code, "invalid_token")
        yield server.accounts.register("alice", "secret1")
        token = yield self.login(server, "alice", "secret1")
        err = yield self.assertFailure(client.bind("mallory", token), SocketError)
        self.assertEqual(err.code, "forbidden")
        reply = yield client.bind("alice", token)
        self.assertEqual(reply, {"action": "bind", "status": "1111", "data": {"client_id": client.client_id, "user_id": "alice"}})
        self.assertEqual(server.hub.session_counts(), {"socket": 1})

    @inlineCallbacks
    def test_message_between_socket_users_and_pending_on_bind(self):
        server = self.start_server()
        alice = yield self.socket_user(server, "alice")
        yield server.accounts.register("bob", "secret1")
        reply = yield alice.sendmsg("while you were out", to_user_id="bob")
        self.assertEqual(reply["status"], "1111")
        bob = yield self.socket_user(server, "bob", register=False)
        push = yield bob.expect("sendmsg")
        self.assertEqual((push["from_user_id"], push["sendto"], push["to_user_id"], push["content"]), ("alice", "user", "bob", "while you were out"))
        # Written to a bound connection counts as received: no second time.
        for _ in range(100):
            offline = yield server.messages.offline("bob")
            if not offline:
                break
            yield settle(0.02)
        self.assertEqual(offline, [])
        yield alice.sendmsg("live", to_user_id="bob")
        push = yield bob.expect("sendmsg")
        self.assertEqual(push["content"], "live")
        err = yield self.assertFailure(alice.sendmsg("x", to_user_id="nobody"), SocketError)
        self.assertEqual(err.code, "not_found")
        err = yield self.assertFailure(alice.sendmsg("x", to_user_id="bob", user_id="bob"), SocketError)
        self.assertEqual(err.code, "forbidden")
        err = yield self.assertFailure(alice.request({"action": "sendmsg", "sendto": "moon", "content": "x"}), SocketError)
        self.assertEqual(err.code, "invalid_field")

    @inlineCallbacks
    def test_group_invite_bind_group_and_message(self):
        server = self.start_server()
        alice = yield self.socket_user(server, "alice")
        bob = yield self.socket_user(server, "bob")
        group = yield server.groups.create("alice", "team")
        yield server.groups.invite("alice", group.gid, "bob", "inv1")
        push = yield bob.expect("addGroup")
        self.assertEqual((push["from_user_id"], push["group_id"]), ("alice", group.gid))
        reply = yield bob.accept_group(group.gid, "alice")
        self.assertEqual(reply["status"], "1111")
        yield alice.sendmsg("hello team", to_group_id=group.gid)
        push = yield bob.expect("sendmsg")
        self.assertEqual((push["sendto"], push["to_group_id"], push["content"]), ("group", group.gid, "hello team"))
        # Marked received right after it was written (a commit later).
        for _ in range(100):
            offline = yield server.messages.group_offline("bob")
            if not offline:
                break
            yield settle(0.02)
        self.assertEqual(offline, [])

    @inlineCallbacks
    def test_friend_request_pushed_until_browsed(self):
        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        yield server.accounts.register("bob", "secret1")
        yield server.roster.request("alice", "bob", "r1", "hi")
        bob = yield self.socket_user(server, "bob", register=False)
        push = yield bob.expect("addfriend")
        self.assertEqual((push["opt"], push["sender"], push["msg"]), ("addMsg", "alice", "hi"))
        yield server.roster.browse("bob", "alice")
        yield bob.close()
        bob = yield self.socket_user(server, "bob", register=False)
        yield bob.ping()
        self.assertEqual(bob.pushes, [])

    @inlineCallbacks
    def test_bad_frames_only_hurt_their_connection(self):
        server = self.start_server(socket={"endpoint": "tcp:0:interface=127.0.0.1", "max_frame": 1024})
        bystander = yield self.socket_user(server, "bob")
        client = yield self.socket(server)
        for body in (b"!!!notbase64!!!", base64.b64encode(b"short"), encrypt(b"0" * 16, b'{"action":"ping"}'),
                     encrypt(KEY, b"not json"), encrypt(KEY, b"[1,2]"), encrypt(KEY, b'{"action": 5}'),
                     encrypt(KEY, b'{"action": "dance"}'), b"\0\0\0"):
            client.send_raw(struct.pack(">H", len(body)) + body)
            reply = yield client.expect(match=lambda o: o.get("status") == "0000")
            self.assertTrue(reply["info"], body)
        yield client.ping()
        # Oversized: a 0000 reply, then the connection closes.
        client.send_raw(struct.pack(">H", 2000) + b"x" * 2000)
        reply = yield client.expect(match=lambda o: o.get("status") == "0000")
        self.assertEqual(reply["code"], "too_large")
        yield client.closed
        pong = yield bystander.ping()
        self.assertEqual(pong["action"], "pong")

    @inlineCallbacks
    def test_pipelined_sendmsg_shares_commits_and_replies_in_order(self):
        server = self.start_server()
        alice = yield self.socket_user(server, "alice")
        bob = yield self.socket_user(server, "bob")
        batcher = server.store.messages._direct
        sizes, run = [], batcher._fn

        def recording(raw, items):
            sizes.append(len(items))
            return run(raw, items)

        self.patch(batcher, "_fn", recording)
        codec = Codec(KEY, True)
        requests = [{"action": "sendmsg", "to_user_id": "bob", "content": "0", "msgid": "m0"},
                    {"action": "sendmsg", "to_user_id": "nobody", "content": "x", "msgid": "m1"},
                    {"action": "sendmsg", "to_user_id": "bob", "content": "x", "msgid": "m2", "user_id": "mallory"},
                    # Not pipelined: handled once everything before it is answered.
                    {"action": "sendmsg", "sendto": "group", "to_group_id": "nogroup", "content": "x", "msgid": "g1"}]
        requests += [{"action": "sendmsg", "to_user_id": "bob", "content": str(i), "msgid": f"m{i}"} for i in range(3, 13)]
        alice.send_raw(b"".join(codec.encode(r) for r in requests) + codec.encode({"action": "ping"}))
        yield alice.expect("pong")
        replies = [(o["action"], o["status"], o.get("code") or o["data"]["msgid"]) for o in alice.pushes if "status" in o]
        self.assertEqual(
            replies,
            [("sendmsg", "1111", "m0"), ("sendmsg", "0000", "not_found"), ("sendmsg", "0000", "forbidden"),
             ("sendmsg", "0000", "not_found")] + [("sendmsg", "1111", f"m{i}") for i in range(3, 13)],
        )
        got = []
        for _ in range(11):
            push = yield bob.expect("sendmsg")
            got.append(push["content"])
        self.assertEqual(got, ["0"] + [str(i) for i in range(3, 13)])
        # The ten messages after the group message did not wait a commit each.
        self.assertGreater(max(sizes), 1)

    @inlineCallbacks
    def test_plain_json_mode(self):
        server = self.start_server(socket={"endpoint": "tcp:0:interface=127.0.0.1", "encrypt": False})
        client = yield self.socket(server, encrypted=False)
        pong = yield client.ping()
        self.assertEqual(pong, {"action": "pong"})


class InteropTestsMixin(SocketTestsMixin):
    @inlineCallbacks
    def test_messages_both_ways_1to1(self):
        server = self.start_server()
        jack = yield self.user(server, "jack")
        rose = yield self.socket_user(server, "rose")
        ack = yield jack.send_message("rose", "hi from the long connection", msgid="j1")
        self.assertEqual(ack["err"], "")
        push = yield rose.expect("sendmsg")
        self.assertEqual((push["from_user_id"], push["content"], push["msgid"]), ("jack", "hi from the long connection", "j1"))
        yield rose.sendmsg("hi from the socket", to_user_id="jack")
        _, msg = yield jack.expect(T.IM_MESSAGE)
        self.assertEqual((msg["from"], msg["body"], msg["to"]), ("rose", "hi from the socket", "jack"))

    @inlineCallbacks
    def test_group_both_ways(self):
        server = self.start_server()
        jack = yield self.user(server, "jack")
        rose = yield self.socket_user(server, "rose")
        group = yield server.groups.create("jack", "mixed")
        yield jack.invite(group.gid, "rose")
        push = yield rose.expect("addGroup")
        yield rose.accept_group(push["group_id"], "jack")
        yield jack.expect(T.IM_NOTIFY_GROUP_PEER_ADD)
        yield jack.send_message(None, "from 001", gid=group.gid)
        push = yield rose.expect("sendmsg")
        self.assertEqual((push["to_group_id"], push["content"]), (group.gid, "from 001"))
        yield rose.sendmsg("from 004", to_group_id=group.gid)
        _, msg = yield jack.expect(T.IM_MESSAGE)
        self.assertEqual((msg["gid"], msg["from"], msg["body"]), (group.gid, "rose", "from 004"))

    @inlineCallbacks
    def test_friend_requests_both_ways(self):
        server = self.start_server()
        jack = yield self.user(server, "jack")
        rose = yield self.socket_user(server, "rose")
        yield jack.add_friend("rose", "hello rose")
        push = yield rose.expect("addfriend")
        self.assertEqual((push["sender"], push["msg"]), ("jack", "hello rose"))
        yield server.roster.answer_from("rose", "jack", True)
        _, answer = yield jack.expect(T.IM_ROSTER_ADD_RESP)
        self.assertTrue(answer["accept"])
        yield server.accounts.register("tom", "secret1")
        tom = yield self.socket_user(server, "tom", register=False)
        yield server.roster.request("tom", "jack", "t1", "from tom")
        _, request = yield jack.expect(T.IM_ROSTER_ADD_REQ)
        self.assertEqual(request["from"], "tom")
        yield jack.answer_friend("tom", request["msgid"], False)
        push = yield tom.expect("addfriend")
        self.assertEqual((push["opt"], push["sender"]), ("repulseMsg", "jack"))


class SQLiteSocketTests(InteropTestsMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresSocketTests(InteropTestsMixin, PostgresBackend, unittest.TestCase):
    pass


class SocketEdgeTests(SocketTestsMixin, SQLiteBackend, unittest.TestCase):
    @inlineCallbacks
    def test_backlog_pages_and_recalled(self):
        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        yield server.accounts.register("bob", "secret1")
        for i in range(1203):
            yield server.messages.send("alice", f"m{i}", str(i), to="bob")
        yield server.messages.recall("alice", "m0", to="bob")
        bob = yield self.socket_user(server, "bob", register=False)
        got = []
        for i in range(1203):
            push = yield bob.expect("sendmsg")
            got.append(push)
        self.assertEqual([p["msgid"] for p in got], [f"m{i}" for i in range(1203)])
        self.assertEqual((got[0]["content"], got[0]["recalled"]), ("", True))
        self.assertEqual(got[1]["content"], "1")
        self.assertEqual((yield server.messages.offline("bob")), [])

    @inlineCallbacks
    def test_message_too_large_for_a_socket_frame(self):
        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        yield server.accounts.register("bob", "secret1")
        yield server.messages.send("alice", "big", "中" * 16384, to="bob")
        yield server.messages.send("alice", "small", "after", to="bob")
        bob = yield self.socket_user(server, "bob", register=False)
        push = yield bob.expect("sendmsg")
        self.assertEqual((push["msgid"], push["content"], push["truncated"]), ("big", "", True))
        push = yield bob.expect("sendmsg")
        self.assertEqual(push["content"], "after")

    @inlineCallbacks
    def test_revoked_token_is_kicked(self):
        server = self.start_server()
        bob = yield self.socket_user(server, "bob")
        yield server.accounts.set_password("bob", "secret2")
        # The token is re-checked once a minute at most: pretend a minute passed.
        self.patch(bob, "pushes", [])
        proto = server.hub.sessions("bob")[0].protocol
        proto.token._checked -= 61
        yield bob.request({"action": "ping"})
        yield self.assertFailure(bob.sendmsg("x", to_user_id="bob"), Exception)
        yield bob.closed
        self.assertEqual(server.hub.sessions("bob"), [])
