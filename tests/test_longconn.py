"""The seed-001 long connection over real loopback TCP, on each backend."""

import struct

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial import unittest

from imd.channels.shared.framed import MAX_INFLIGHT
from imd.channels.longconn import msgtypes as T
from imd.channels.longconn.framing import decode_body, encode
from imd.channels.longconn.client import ServerError
from imd.channels.longconn.protocol import LongConnProtocol
from tests import fuzzing
from imd.core.accounts import LiveToken
from tests.support import LongConnTestMixin, PostgresBackend, SQLiteBackend


def settle(seconds=0.05):
    return deferLater(reactor, seconds, lambda: None)


class AuthTestsMixin(LongConnTestMixin):
    @inlineCallbacks
    def test_auth_by_password_returns_token(self):
        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        client = yield self.connect(server)
        ack = yield client.auth("alice", password="secret1", res="phone")
        self.assertEqual(ack["type"], str(T.IM_AUTH))
        self.assertEqual(ack["err"], "")
        self.assertEqual(ack["expires_in"], 86400)
        uid = yield server.accounts.authenticate(ack["token"])
        self.assertEqual(uid, "alice")
        self.assertEqual(server.hub.session_counts(), {"longconn": 1})

    @inlineCallbacks
    def test_auth_by_token(self):
        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        token = yield self.login(server, "alice", "secret1")
        client = yield self.connect(server)
        ack = yield client.auth("alice", token=token)
        self.assertEqual(ack["token"], token)

    @inlineCallbacks
    def test_bad_credentials_close(self):
        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        for kwargs in ({"password": "wrong!!"}, {"token": "nope"}):
            client = yield self.connect(server)
            err = yield self.assertFailure(client.auth("alice", **kwargs), ServerError)
            self.assertIn(err.code, ("bad_credentials", "invalid_token"))
            yield client.closed
        # Someone else's token does not log in as alice.
        yield server.accounts.register("bob", "secret1")
        token = yield self.login(server, "bob", "secret1")
        client = yield self.connect(server)
        yield self.assertFailure(client.auth("alice", token=token), ServerError)

    @inlineCallbacks
    def test_first_frame_must_be_auth(self):
        server = self.start_server()
        client = yield self.connect(server)
        err = yield self.assertFailure(client.send_message("bob", "hi"), ServerError)
        self.assertIn("IM_AUTH", err.ack["err"])
        yield client.closed

    @inlineCallbacks
    def test_ping(self):
        server = self.start_server()
        client = yield self.user(server, "alice")
        msgtype, body = yield client.ping()
        self.assertEqual((msgtype, body), (T.IM_PING, {}))

    @inlineCallbacks
    def test_duplicate_resource_is_kicked(self):
        server = self.start_server()
        first = yield self.user(server, "alice", res="phone")
        second = yield self.user(server, "alice", res="phone", register=False)
        msgtype, body = yield first.expect(T.IM_KICK)
        self.assertEqual(body["reason"], "logged in elsewhere")
        yield first.closed
        # The newer session is the one that stays.
        yield second.ping()
        self.assertEqual(len(server.hub.sessions("alice")), 1)
        other = yield self.user(server, "alice", res="desktop", register=False)
        self.assertEqual(len(server.hub.sessions("alice")), 2)
        yield other.ping()

    @inlineCallbacks
    def test_idle_connection_closed(self):
        server = self.start_server(longconn={"endpoint": "tcp:0:interface=127.0.0.1", "idle_timeout": 1})
        client = yield self.user(server, "alice")
        yield client.closed
        self.assertEqual(server.hub.sessions("alice"), [])


class BadInputTestsMixin(LongConnTestMixin):
    @inlineCallbacks
    def assertOthersFine(self, server, bystander):
        msgtype, _ = yield bystander.ping()
        self.assertEqual(msgtype, T.IM_PING)

    @inlineCallbacks
    def test_oversized_length_closes_only_that_connection(self):
        server = self.start_server()
        bystander = yield self.user(server, "bob")
        client = yield self.user(server, "alice")
        client.send_raw(struct.pack(">II", 10_000_000, T.IM_MESSAGE))
        msgtype, ack = yield client.expect(T.IM_MESSAGE_ACK)
        self.assertIn("limit", ack["err"])
        yield client.closed
        yield self.assertOthersFine(server, bystander)

    @inlineCallbacks
    def test_short_length_closes(self):
        server = self.start_server()
        client = yield self.user(server, "alice")
        client.send_raw(struct.pack(">I", 2) + b"xx")
        yield client.closed

    @inlineCallbacks
    def test_random_bytes(self):
        server = self.start_server()
        bystander = yield self.user(server, "bob")
        client = yield self.connect(server)
        client.send_raw(bytes(range(256)) * 4)
        yield client.closed
        yield self.assertOthersFine(server, bystander)

    @inlineCallbacks
    def test_invalid_json_and_non_objects(self):
        server = self.start_server()
        client = yield self.user(server, "alice")
        for payload in (b"{nope", b"\xff\xfe", b"[1,2]", b'"x"', b"[" * 5000):
            client.send_raw(struct.pack(">II", 4 + len(payload), T.IM_MESSAGE) + payload)
            msgtype, ack = yield client.expect(T.IM_MESSAGE_ACK)
            self.assertTrue(ack["err"], payload)
            self.assertEqual(ack["type"], str(T.IM_MESSAGE))
        # Still connected and served.
        yield client.ping()

    @inlineCallbacks
    def test_missing_and_wrong_fields(self):
        server = self.start_server()
        client = yield self.user(server, "alice")
        bad = [
            {"msgid": "1", "type": "0", "body": "no to"},
            {"msgid": "2", "to": ["x"], "type": "0", "body": "x"},
            {"msgid": "3", "to": "nobody", "type": "0", "body": "x"},
            {"msgid": "", "to": "alice", "type": "0", "body": "x"},
            {"msgid": "5", "to": "alice", "type": "0", "body": {"a": 1}},
            {"msgid": "6", "to": "alice", "type": "0", "body": "x" * 20000},
            {"msgid": "7", "to": "alice", "type": "1", "body": "no such group"},
            {"msgid": "8", "to": "alice", "type": "0", "body": "x", "kind": "weird"},
        ]
        for frame in bad:
            err = yield self.assertFailure(client.request(T.IM_MESSAGE, frame), ServerError)
            self.assertTrue(err.ack["err"], frame)
        yield client.ping()

    @inlineCallbacks
    def test_nul_in_a_body_fails_that_message_alone(self):
        # Postgres keeps no NUL in text; pipelined beside it, the other
        # messages share its batch and must still commit.
        server = self.start_server()
        yield server.accounts.register("bob", "secret1")
        client = yield self.user(server, "alice")
        bodies = ["before", "a\x00b", "after"]
        client.send_raw(b"".join(
            encode(T.IM_MESSAGE, {"msgid": f"n{i}", "to": "bob", "type": "0", "body": body})
            for i, body in enumerate(bodies)
        ))
        acks = []
        for _ in bodies:
            msgtype, ack = yield client.expect(T.IM_MESSAGE_ACK)
            acks.append((ack["msgid"], ack.get("code", "")))
        self.assertEqual(acks, [("n0", ""), ("n1", "invalid_field"), ("n2", "")])
        offline = yield server.messages.offline("bob")
        self.assertEqual([m.body for m in offline], ["before", "after"])

    @inlineCallbacks
    def test_unknown_msgtype(self):
        server = self.start_server()
        client = yield self.user(server, "alice")
        err = yield self.assertFailure(client.request(424242, {}), ServerError)
        self.assertIn("424242", err.ack["err"])
        yield client.ping()

    @inlineCallbacks
    def test_a_bug_answering_one_frame_is_logged_and_the_next_is_handled(self):
        server = self.start_server()
        client = yield self.user(server, "alice")

        def broken(protocol, *args):
            raise RuntimeError("a bug in the channel")

        self.patch(LongConnProtocol, "_answered", broken)
        # An acknowledgement has no answer, so the client waits for none.
        client.ack_message("m1", "bob")
        yield settle()
        self.patch(LongConnProtocol, "_answered", lambda *args: None)
        msgtype, _ = yield client.ping()
        self.assertEqual(msgtype, T.IM_PING)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(fuzzing.internal_errors(server), 1)

    @inlineCallbacks
    def test_many_frames_in_one_write_and_split_frames(self):
        server = self.start_server()
        yield server.accounts.register("bob", "secret1")
        client = yield self.user(server, "alice")
        data = b"".join(
            encode(T.IM_MESSAGE, {"msgid": f"m{i}", "to": "bob", "type": "0", "body": str(i)}) for i in range(100)
        )
        # Byte by byte for the first frames, then everything else at once.
        for i in range(40):
            client.send_raw(data[i : i + 1])
        client.send_raw(data[40:])
        for i in range(100):
            msgtype, ack = yield client.expect(T.IM_MESSAGE_ACK)
            self.assertEqual((ack["msgid"], ack["err"]), (f"m{i}", ""))
        offline = yield server.messages.offline("bob")
        self.assertEqual([m.body for m in offline], [str(i) for i in range(100)])


class MessageTestsMixin(LongConnTestMixin):
    @inlineCallbacks
    def test_message_delivered_to_every_session_and_copied(self):
        server = self.start_server()
        alice = yield self.user(server, "alice", res="phone")
        alice2 = yield self.user(server, "alice", res="desktop", register=False)
        bob = yield self.user(server, "bob", res="phone")
        bob2 = yield self.user(server, "bob", res="desktop", register=False)
        ack = yield alice.send_message("bob", "hello", msgid="m1", time="2015-01-30 12:23:00")
        self.assertEqual((ack["type"], ack["msgid"], ack["err"]), ("196609", "m1", ""))
        for client, res in ((bob, "phone"), (bob2, "desktop")):
            msgtype, body = yield client.expect(T.IM_MESSAGE)
            self.assertEqual(body["msgid"], "m1")
            self.assertEqual(body["from"], "alice")
            self.assertEqual(body["from_res"], "phone")
            self.assertEqual(body["to"], "bob")
            self.assertEqual(body["to_res"], res)
            self.assertEqual(body["time"], "2015-01-30 12:23:00")
            self.assertEqual(body["type"], "0")
            self.assertEqual(body["body"], "hello")
        msgtype, copy = yield alice2.expect(T.IM_NOTIFY_MESSAGE)
        self.assertEqual((copy["msgid"], copy["body"]), ("m1", "hello"))
        yield settle()
        self.assertEqual(alice.take(T.IM_NOTIFY_MESSAGE), [])

    @inlineCallbacks
    def test_unacknowledged_message_stays_offline(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        bob = yield self.user(server, "bob")
        yield alice.send_message("bob", "one", msgid="m1")
        yield alice.send_message("bob", "two", msgid="m2")
        yield bob.expect(T.IM_MESSAGE)
        yield bob.expect(T.IM_MESSAGE)
        bob.ack_message("m1")
        yield bob.ping()
        offline = yield server.messages.offline("bob")
        self.assertEqual([m.msgid for m in offline], ["m2"])
        self.assertEqual(server.metrics.registry.get_sample_value("imd_messages_total", {"kind": "text"}), 2.0)

    @inlineCallbacks
    def test_offline_recipient(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        yield server.accounts.register("bob", "secret1")
        yield alice.send_message("bob", "while you were out", msgid="m1")
        offline = yield server.messages.offline("bob")
        self.assertEqual([(m.msgid, m.sender, m.body) for m in offline], [("m1", "alice", "while you were out")])

    @inlineCallbacks
    def test_resend_is_acknowledged_stored_and_delivered_once(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        bob = yield self.user(server, "bob")
        yield alice.send_message("bob", "hello", msgid="same")
        ack = yield alice.send_message("bob", "hello", msgid="same")
        self.assertEqual(ack["err"], "")
        yield bob.expect(T.IM_MESSAGE)
        yield settle()
        self.assertEqual(bob.take(T.IM_MESSAGE), [])
        offline = yield server.messages.offline("bob")
        self.assertEqual(len(offline), 1)

    @inlineCallbacks
    def test_order_is_commit_order(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        bob = yield self.user(server, "bob")
        acks = [alice.send_message("bob", str(i), msgid=f"m{i}") for i in range(30)]
        yield gatherResults(acks)
        got = []
        for i in range(30):
            _, body = yield bob.expect(T.IM_MESSAGE)
            got.append(body["body"])
        self.assertEqual(got, [str(i) for i in range(30)])

    def batch_sizes(self, server):
        """The sizes of the 1:1 batches C{server} commits from now on."""
        batcher = server.store.messages._direct
        sizes = []
        run = batcher._run

        def recording(name, fn, items):
            sizes.append(len(items))
            return run(name, fn, items)

        self.patch(batcher, "_run", recording)
        return sizes

    @inlineCallbacks
    def test_pipelined_frames_share_commits_and_are_answered_in_order(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        bob = yield self.user(server, "bob")
        sizes = self.batch_sizes(server)

        frames = [
            (T.IM_MESSAGE, {"msgid": "m0", "to": "bob", "body": "0"}),
            (T.IM_MESSAGE, {"msgid": "bad id!", "to": "bob", "body": "x"}),
            (T.IM_MESSAGE_ACK, {"type": str(T.IM_MESSAGE), "msgid": "none", "from": "bob"}),
            (T.IM_MESSAGE, {"msgid": "m1", "to": "nobody", "body": "x"}),
            # Not pipelined: handled once everything before it is answered.
            (T.IM_MESSAGE, {"msgid": "g1", "gid": "nogroup", "body": "x"}),
        ] + [(T.IM_MESSAGE, {"msgid": f"m{i}", "to": "bob", "body": str(i)}) for i in range(2, 12)]
        frames.append((T.IM_PING, {}))
        alice.send_raw(b"".join(encode(msgtype, body) for msgtype, body in frames))
        yield alice.expect(T.IM_PING)
        answers = [(body["msgid"], body.get("code", "")) for _, body in alice.take(T.IM_MESSAGE_ACK)]
        self.assertEqual(
            answers,
            [("m0", ""), ("bad id!", "invalid_field"), ("m1", "not_found"), ("g1", "not_found")]
            + [(f"m{i}", "") for i in range(2, 12)],
        )
        offline = yield server.messages.offline("bob")
        self.assertEqual([m.body for m in offline], [str(i) for i in range(12) if i != 1])
        # The ten messages after the group message did not wait a commit each.
        self.assertLess(len(sizes), 10)
        self.assertGreater(max(sizes), 1)
        got = []
        for _ in range(11):
            _, body = yield bob.expect(T.IM_MESSAGE)
            got.append(body["body"])
        self.assertEqual(got, [str(i) for i in range(12) if i != 1])

    @inlineCallbacks
    def test_a_flood_is_pipelined_only_so_far(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        yield server.accounts.register("bob", "secret1")
        sizes = self.batch_sizes(server)
        alice.send_raw(
            b"".join(encode(T.IM_MESSAGE, {"msgid": f"m{i}", "to": "bob", "body": str(i)}) for i in range(300))
        )
        for i in range(300):
            _, ack = yield alice.expect(T.IM_MESSAGE_ACK)
            self.assertEqual((ack["msgid"], ack["err"]), (f"m{i}", ""))
        self.assertEqual(sum(sizes), 300)
        self.assertLessEqual(max(sizes), MAX_INFLIGHT)

    @inlineCallbacks
    def test_pipelined_frames_around_a_token_check(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        yield server.accounts.register("bob", "secret1")
        # Every frame finds the token due for its re-check, which is not
        # pipelined: each waits for the one before, and none for itself.
        self.patch(LiveToken, "due", lambda token: True)
        alice.send_raw(
            b"".join(encode(T.IM_MESSAGE, {"msgid": f"m{i}", "to": "bob", "body": str(i)}) for i in range(5))
        )
        for i in range(5):
            _, ack = yield alice.expect(T.IM_MESSAGE_ACK)
            self.assertEqual((ack["msgid"], ack["err"]), (f"m{i}", ""))

    @inlineCallbacks
    def test_friends_only(self):
        server = self.start_server(messages={"friends_only": True})
        alice = yield self.user(server, "alice")
        yield server.accounts.register("bob", "secret1")
        err = yield self.assertFailure(alice.send_message("bob", "hi"), ServerError)
        self.assertEqual(err.code, "forbidden")


class RosterTestsMixin(LongConnTestMixin):
    @inlineCallbacks
    def befriend(self, server, a, b):
        yield a.add_friend(b.uid, "hi")
        _, request = yield b.expect(T.IM_ROSTER_ADD_REQ)
        b.ack_push(T.IM_ROSTER_ADD_REQ, request["msgid"])
        yield b.answer_friend(a.uid, request["msgid"], True, req_gid="1", req_name="B", resp_gid="1", resp_name="A")
        yield a.expect(T.IM_NOTIFY_ROSTER_ADD)
        yield b.expect(T.IM_NOTIFY_ROSTER_ADD)

    @inlineCallbacks
    def test_request_and_accept(self):
        server = self.start_server()
        alice = yield self.user(server, "alice", res="phone")
        bob = yield self.user(server, "bob", res="pad")
        ack = yield alice.request(T.IM_ROSTER_ADD_REQ, {"msgid": "r1", "to": "bob", "time": "x", "msg": "可以交个朋友吗"})
        self.assertEqual((ack["type"], ack["err"]), ("200705", ""))
        _, request = yield bob.expect(T.IM_ROSTER_ADD_REQ)
        self.assertEqual(
            {k: request[k] for k in ("msgid", "from", "to", "to_res", "msg")},
            {"msgid": "r1", "from": "alice", "to": "bob", "to_res": "pad", "msg": "可以交个朋友吗"},
        )
        yield bob.answer_friend("alice", "r1", True, req_gid="1", req_name="Bobby", resp_gid="1", resp_name="Ali")
        _, answer = yield alice.expect(T.IM_ROSTER_ADD_RESP)
        self.assertEqual((answer["from"], answer["accept"]), ("bob", True))
        _, added = yield alice.expect(T.IM_NOTIFY_ROSTER_ADD)
        self.assertEqual(added, {"frd": "bob"})
        _, added = yield bob.expect(T.IM_NOTIFY_ROSTER_ADD)
        self.assertEqual(added, {"frd": "alice"})
        friends = yield server.roster.friends("alice")
        self.assertEqual([(f.fid, f.remark) for f in friends], [("bob", "Bobby")])
        friends = yield server.roster.friends("bob")
        self.assertEqual([(f.fid, f.remark) for f in friends], [("alice", "Ali")])
        # Answering twice finds nothing pending.
        yield self.assertFailure(bob.answer_friend("alice", "r1", True), ServerError)

    @inlineCallbacks
    def test_reject(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        bob = yield self.user(server, "bob")
        yield alice.request(T.IM_ROSTER_ADD_REQ, {"msgid": "r1", "to": "bob"})
        yield bob.expect(T.IM_ROSTER_ADD_REQ)
        yield bob.answer_friend("alice", "r1", False)
        _, answer = yield alice.expect(T.IM_ROSTER_ADD_RESP)
        self.assertFalse(answer["accept"])
        friends = yield server.roster.friend_ids("alice")
        self.assertEqual(friends, [])

    @inlineCallbacks
    def test_pending_request_pushed_at_login_until_received(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        yield server.accounts.register("bob", "secret1")
        yield alice.request(T.IM_ROSTER_ADD_REQ, {"msgid": "r1", "to": "bob"})
        bob = yield self.user(server, "bob", register=False)
        _, request = yield bob.expect(T.IM_ROSTER_ADD_REQ)
        self.assertEqual(request["msgid"], "r1")
        bob.ack_push(T.IM_ROSTER_ADD_REQ, "r1")
        yield bob.ping()
        yield bob.close()
        bob = yield self.user(server, "bob", register=False)
        yield bob.ping()
        self.assertEqual(bob.take(T.IM_ROSTER_ADD_REQ), [])

    @inlineCallbacks
    def test_delete(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        bob = yield self.user(server, "bob")
        yield self.befriend(server, alice, bob)
        ack = yield alice.delete_friend("bob")
        self.assertEqual(ack["type"], "200707")
        _, deleted = yield bob.expect(T.IM_NOTIFY_ROSTER_DEL)
        self.assertEqual(deleted, {"frd": "alice"})
        _, deleted = yield alice.expect(T.IM_NOTIFY_ROSTER_DEL)
        self.assertEqual(deleted, {"frd": "bob"})
        yield self.assertFailure(alice.delete_friend("bob"), ServerError)

    @inlineCallbacks
    def test_refusals(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        bob = yield self.user(server, "bob")
        yield self.assertFailure(alice.add_friend("alice"), ServerError)
        yield self.assertFailure(alice.add_friend("nobody"), ServerError)
        yield self.befriend(server, alice, bob)
        err = yield self.assertFailure(alice.add_friend("bob"), ServerError)
        self.assertEqual(err.code, "conflict")
        # Bob cannot answer a request addressed to someone else.
        yield self.user(server, "carol")
        yield alice.request(T.IM_ROSTER_ADD_REQ, {"msgid": "r9", "to": "carol"})
        yield self.assertFailure(bob.answer_friend("alice", "r9", True), ServerError)


class PresenceTestsMixin(RosterTestsMixin):
    @inlineCallbacks
    def test_online_fans_out_and_acks_come_back(self):
        server = self.start_server()
        alice = yield self.user(server, "alice", res="phone")
        bob = yield self.user(server, "bob", res="pad")
        carol = yield self.user(server, "carol")
        yield self.befriend(server, alice, bob)
        yield bob.presence("online", "dnd")
        ack = yield alice.request(T.IM_PRESENCE, {"msgid": "p1", "type": "online", "show": "online"})
        self.assertEqual((ack["type"], ack["err"]), ("196610", ""))
        _, seen = yield bob.expect(T.IM_PRESENCE, lambda b: b["from"] == "alice")
        self.assertEqual((seen["type"], seen["show"], seen["from_res"], seen["to_res"]), ("online", "online", "phone", "pad"))
        _, back = yield alice.expect(T.IM_PRESENCE, lambda b: b["type"] == "ack")
        self.assertEqual((back["from"], back["from_res"], back["show"]), ("bob", "pad", "dnd"))
        yield settle()
        self.assertEqual(carol.take(T.IM_PRESENCE), [])
        yield alice.presence("update", "away")
        _, seen = yield bob.expect(T.IM_PRESENCE, lambda b: b["from"] == "alice")
        self.assertEqual((seen["type"], seen["show"]), ("update", "away"))
        yield bob.request(T.IM_PRESENCE, {"type": "ack", "to": "alice", "to_res": "phone", "show": "chat"})
        _, answered = yield alice.expect(T.IM_PRESENCE, lambda b: b["type"] == "ack")
        self.assertEqual((answered["from"], answered["show"]), ("bob", "chat"))
        yield alice.close()
        _, gone = yield bob.expect(T.IM_PRESENCE, lambda b: b["from"] == "alice")
        self.assertEqual((gone["type"], gone["show"]), ("leave", "offline"))

    @inlineCallbacks
    def test_bad_presence(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        yield self.assertFailure(alice.presence("online", "sleeping"), ServerError)
        yield self.assertFailure(alice.presence("dance", "online"), ServerError)


class GroupTestsMixin(LongConnTestMixin):
    @inlineCallbacks
    def make_group(self, server, owner, *members):
        group = yield server.groups.create(owner.uid, "新建群组")
        for member in members:
            yield owner.invite(group.gid, member.uid)
            _, invite = yield member.expect(T.IM_CHATROOM)
            yield member.answer_invite(group.gid, True, member.uid.title())
            yield member.expect(T.IM_NOTIFY_GROUP_DATA)
        return group.gid

    @inlineCallbacks
    def test_invite_accept_and_notifies(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        bob = yield self.user(server, "bob", res="iphone")
        group = yield server.groups.create("alice", "新建群组")
        ack = yield alice.request(T.IM_CHATROOM, {"msgid": "g1", "type": "0", "gid": group.gid, "to": "bob"})
        self.assertEqual((ack["type"], ack["err"]), ("200708", ""))
        _, invite = yield bob.expect(T.IM_CHATROOM)
        self.assertEqual(
            {k: invite[k] for k in ("msgid", "type", "from", "to", "to_res", "gid", "gname")},
            {"msgid": "g1", "type": "0", "from": "alice", "to": "bob", "to_res": "iphone", "gid": group.gid, "gname": "新建群组"},
        )
        bob.ack_push(T.IM_CHATROOM_INVENT, "g1")
        yield bob.answer_invite(group.gid, True, "Bobby")
        _, data = yield bob.expect(T.IM_NOTIFY_GROUP_DATA)
        self.assertEqual(data["gid"], group.gid)
        self.assertEqual(data["gname"], "新建群组")
        self.assertEqual(data["type"], "1")
        self.assertEqual(data["exit"], "1")
        self.assertEqual(sorted((p["uid"], p["right"]) for p in data["peers"]), [("alice", "1"), ("bob", "0")])
        _, peer = yield alice.expect(T.IM_NOTIFY_GROUP_PEER_ADD)
        self.assertEqual((peer["gid"], peer["uid"], peer["fname"], peer["right"]), (group.gid, "bob", "Bobby", "0"))
        self.assertIn("join_time", peer)

    @inlineCallbacks
    def test_group_message_and_leave(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        bob = yield self.user(server, "bob")
        carol = yield self.user(server, "carol")
        gid = yield self.make_group(server, alice, bob, carol)
        ack = yield bob.send_message(None, "大家好", gid=gid, msgid="gm1")
        self.assertEqual(ack["err"], "")
        for client in (alice, carol):
            _, body = yield client.expect(T.IM_MESSAGE)
            self.assertEqual((body["type"], body["gid"], body["to"], body["from"], body["body"]), ("1", gid, gid, "bob", "大家好"))
        yield settle()
        self.assertEqual(bob.take(T.IM_MESSAGE), [])
        # Carol acknowledges it; alice does not, so alice has it offline.
        carol.ack_message("gm1", gid=gid, seq=1)
        yield carol.ping()
        offline = yield server.messages.group_offline("carol")
        self.assertEqual(offline, [])
        offline = yield server.messages.group_offline("alice")
        self.assertEqual([m.msgid for m in offline], ["gm1"])
        ack = yield carol.leave_group(gid)
        self.assertEqual(ack["err"], "")
        for client in (alice, bob):
            _, left = yield client.expect(T.IM_CHATROOM, lambda b: b["type"] == "2")
            self.assertEqual((left["from"], left["rid"]), ("carol", gid))
        err = yield self.assertFailure(carol.send_message(None, "still here?", gid=gid), ServerError)
        self.assertEqual(err.code, "forbidden")

    @inlineCallbacks
    def test_group_changed_and_deleted_by_another_design(self):
        # An XMPP client's sessions API changes and deletes groups through these.
        server = self.start_server()
        alice = yield self.user(server, "alice")
        bob = yield self.user(server, "bob")
        carol = yield self.user(server, "carol")
        yield server.accounts.register("xo", "secret1")
        group, _ = yield server.groups.create_with_members("xo", ["alice", "bob"], "team")
        for client in (alice, bob):
            yield client.expect(T.IM_NOTIFY_GROUP_DATA, lambda b: b["gid"] == group.gid)
        yield server.groups.change("xo", group.gid, name="renamed", add=["carol"], remove=["bob"])
        for client in (alice, carol):
            _, data = yield client.expect(T.IM_NOTIFY_GROUP_DATA, lambda b: b["gname"] == "renamed")
            self.assertEqual(sorted(p["uid"] for p in data["peers"]), ["alice", "carol", "xo"])
        _, left = yield bob.expect(T.IM_CHATROOM, lambda b: b["type"] == "2")
        self.assertEqual((left["from"], left["rid"], left["to"]), ("bob", group.gid, "bob"))
        yield server.groups.delete("xo", group.gid)
        for client in (alice, carol):
            _, left = yield client.expect(T.IM_CHATROOM, lambda b: b["type"] == "2")
            self.assertEqual((left["from"], left["rid"]), (client.uid, group.gid))
        yield settle()
        self.assertEqual(bob.take(T.IM_CHATROOM), [])

    @inlineCallbacks
    def test_group_refusals(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        bob = yield self.user(server, "bob")
        eve = yield self.user(server, "eve")
        gid = yield self.make_group(server, alice, bob)
        # A non-member can neither invite, nor post, nor leave, nor accept uninvited.
        yield self.assertFailure(eve.invite(gid, "eve"), ServerError)
        yield self.assertFailure(eve.send_message(None, "x", gid=gid), ServerError)
        yield self.assertFailure(eve.leave_group(gid), ServerError)
        yield self.assertFailure(eve.answer_invite(gid, True), ServerError)
        yield self.assertFailure(alice.invite(gid, "bob"), ServerError)
        yield self.assertFailure(alice.invite(gid, "nobody"), ServerError)
        yield self.assertFailure(alice.request(T.IM_CHATROOM, {"type": "9", "gid": gid}), ServerError)


class ReceiptRecallTestsMixin(GroupTestsMixin):
    @inlineCallbacks
    def test_read_receipt(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        bob = yield self.user(server, "bob")
        yield alice.send_message("bob", "read me", msgid="m1")
        yield bob.expect(T.IM_MESSAGE)
        ack = yield bob.receipt("m1", to="alice")
        self.assertEqual(ack["type"], "196611")
        _, receipt = yield alice.expect(T.IM_NOTIFY_RECEIPT)
        self.assertEqual(receipt, {"msgid": "m1", "from": "bob", "kind": "read"})
        # Once only; and nobody else can claim to have read it.
        yield bob.receipt("m1", to="alice")
        carol = yield self.user(server, "carol")
        yield self.assertFailure(carol.receipt("m1", to="alice"), ServerError)
        yield self.assertFailure(alice.receipt("m1", to="alice"), ServerError)
        yield settle()
        self.assertEqual(alice.take(T.IM_NOTIFY_RECEIPT), [])

    @inlineCallbacks
    def test_group_receipt(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        bob = yield self.user(server, "bob")
        gid = yield self.make_group(server, alice, bob)
        yield alice.send_message(None, "hi all", gid=gid, msgid="gm1")
        yield bob.receipt("gm1", gid=gid)
        _, receipt = yield alice.expect(T.IM_NOTIFY_RECEIPT)
        self.assertEqual(receipt, {"msgid": "gm1", "from": "bob", "kind": "read", "gid": gid})

    @inlineCallbacks
    def test_recall(self):
        server = self.start_server()
        alice = yield self.user(server, "alice", res="phone")
        alice2 = yield self.user(server, "alice", res="desktop", register=False)
        bob = yield self.user(server, "bob")
        yield alice.send_message("bob", "oops", msgid="m1")
        ack = yield alice.recall("m1", to="bob")
        self.assertEqual(ack["type"], "196612")
        _, recall = yield bob.expect(T.IM_NOTIFY_RECALL)
        self.assertEqual(recall, {"msgid": "m1", "from": "alice", "to": "bob"})
        _, recall = yield alice2.expect(T.IM_NOTIFY_RECALL)
        self.assertEqual(recall["msgid"], "m1")
        # Only the sender can recall.
        yield self.assertFailure(bob.recall("m1", to="alice"), ServerError)

    @inlineCallbacks
    def test_recall_window(self):
        server = self.start_server(messages={"recall_window": 0})
        alice = yield self.user(server, "alice")
        yield server.accounts.register("bob", "secret1")
        yield alice.send_message("bob", "oops", msgid="m1")
        yield settle(0.01)
        err = yield self.assertFailure(alice.recall("m1", to="bob"), ServerError)
        self.assertEqual(err.code, "forbidden")


class _All(AuthTestsMixin, BadInputTestsMixin, MessageTestsMixin, PresenceTestsMixin, ReceiptRecallTestsMixin):
    pass


class SQLiteLongConnTests(_All, SQLiteBackend, unittest.TestCase):
    pass


class PostgresLongConnTests(_All, PostgresBackend, unittest.TestCase):
    pass


class EdgeCaseTests(LongConnTestMixin, SQLiteBackend, unittest.TestCase):
    @inlineCallbacks
    def test_reused_msgid_for_another_message_is_a_conflict(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        yield server.accounts.register("bob", "secret1")
        yield alice.send_message("bob", "one", msgid="m1")
        err = yield self.assertFailure(alice.send_message("bob", "two", msgid="m1"), ServerError)
        self.assertEqual(err.code, "conflict")

    @inlineCallbacks
    def test_trailing_newline_in_ids(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        yield server.accounts.register("bob", "secret1")
        yield self.assertFailure(alice.send_message("bob\n", "x"), ServerError)
        yield self.assertFailure(alice.send_message("bob", "x", msgid="m1\n"), ServerError)

    @inlineCallbacks
    def test_second_auth_and_foreign_token(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        err = yield self.assertFailure(alice.auth("alice", password="secret1"), ServerError)
        self.assertIn("already authenticated", err.ack["err"])
        yield server.accounts.register("bob", "secret1")
        bob_token = yield self.login(server, "bob", "secret1")
        client = yield self.connect(server)
        err = yield self.assertFailure(client.auth("alice", token=bob_token), ServerError)
        self.assertEqual(err.code, "invalid_token")

    @inlineCallbacks
    def test_internal_error_still_acknowledged(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")

        def broken(*args, **kwargs):
            raise RuntimeError("the database fell over")

        self.patch(server.messages, "send", broken)
        err = yield self.assertFailure(alice.send_message("bob", "x", msgid="m1"), ServerError)
        self.assertEqual(err.code, "internal_error")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        yield alice.ping()

    @inlineCallbacks
    def test_group_ack_needs_seq(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        group = yield server.groups.create("alice", "g")
        alice.send_frame(T.IM_MESSAGE_ACK, {"type": T.IM_MESSAGE, "msgid": "x", "gid": group.gid})
        _, ack = yield alice.expect(T.IM_MESSAGE_ACK)
        self.assertIn("seq", ack["err"])

    @inlineCallbacks
    def test_online_cannot_claim_offline(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        yield self.assertFailure(alice.presence("online", "offline"), ServerError)
        yield alice.presence("leave")

    @inlineCallbacks
    def test_revoked_token_is_kicked(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        yield server.accounts.set_password("alice", "secret2")
        # Re-checked once a minute at most: pretend the minute has passed.
        server.hub.sessions("alice")[0].protocol.token._checked -= 61
        alice.send_frame(T.IM_PRESENCE, {"type": "online", "show": "online"})
        _, kick = yield alice.expect(T.IM_KICK)
        self.assertEqual(kick["reason"], "token revoked or expired")
        yield alice.closed
        self.assertEqual(server.hub.sessions("alice"), [])


class DecodeBodyTests(unittest.TestCase):
    def test_each_bad_body_says_what_is_wrong(self):
        for payload, says in (
            (b"\xff\xfe", "not UTF-8"),
            (b"{nope", "not JSON"),
            (b"[" * 5000, "not JSON"),
            (b"[1,2]", "must be a JSON object"),
            (b'"x"', "must be a JSON object"),
        ):
            with self.assertRaises(ValueError) as caught:
                decode_body(payload)
            self.assertIn(says, str(caught.exception), payload[:10])

    def test_empty_body_is_an_empty_object(self):
        self.assertEqual(decode_body(b""), {})
        self.assertEqual(decode_body(b"  "), {})
        self.assertEqual(decode_body('{"a":"é"}'.encode()), {"a": "é"})
