"""Seed 001's QID short connection over real HTTP and long connections."""

import json

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from imd.channels.longconn.wiretime import format_time, parse_time
from tests.support import LongConnTestMixin, PostgresBackend, SQLiteBackend


def rows(body):
    """A table result as a list of dicts."""
    assert body["type"] == "table", body
    return [{p["n"]: p["v"] for p in row} for row in body["result"]]


class QidTestsMixin(LongConnTestMixin):
    @inlineCallbacks
    def qid(self, server, token, name, body=None, expect=200):
        code, result, _ = yield self.http(server, "POST", f"/qid/{name}", body or {}, token=token)
        self.assertEqual(code, expect, result)
        return result

    @inlineCallbacks
    def setup_pair(self):
        """alice and bob, friends, both online; their tokens."""
        server = self.start_server()
        alice = yield self.user(server, "alice")
        bob = yield self.user(server, "bob")
        yield alice.add_friend("bob")
        _, request = yield bob.expect(T.IM_ROSTER_ADD_REQ)
        yield bob.answer_friend("alice", request["msgid"], True, req_name="Bobby", resp_name="Ali")
        yield alice.expect(T.IM_NOTIFY_ROSTER_ADD)
        return server, alice, bob

    @inlineCallbacks
    def test_unauthenticated_and_unknown(self):
        server = self.start_server()
        code, body, _ = yield self.http(server, "POST", "/qid/QID_IM_GET_ROSTER_ALL", {})
        self.assertEqual((code, body["code"]), (401, "unauthenticated"))
        code, body, _ = yield self.http(server, "POST", "/qid/QID_IM_GET_ROSTER_ALL", {}, token="nope")
        self.assertEqual((code, body["code"]), (401, "invalid_token"))
        yield server.accounts.register("alice", "secret1")
        token = yield self.login(server, "alice", "secret1")
        body = yield self.qid(server, token, "QID_NO_SUCH", expect=404)
        self.assertEqual(body, {"type": "error", "code": "not_found", "err": "unknown QID QID_NO_SUCH"})
        code, body, _ = yield self.http(server, "POST", "/qid/QID_IM_GET_ROSTER_ALL", raw=b"{bad", token=token)
        self.assertEqual((code, body["code"]), (400, "bad_request"))

    @inlineCallbacks
    def test_roster_all_and_settings(self):
        server, alice, bob = yield self.setup_pair()
        token = alice.token
        body = yield self.qid(server, token, "QID_IM_GET_ROSTER_ALL")
        self.assertEqual(body["type"], "text")
        friends = json.loads(body["result"])
        self.assertEqual([(f["fid"], f["gid"], f["fname"]) for f in friends], [("bob", "1", "Bobby")])
        self.assertEqual(json.loads(body["ext"]["grp"]), [{"gid": "1", "n": "我的好友", "w": 0, "def": True}])
        self.assertEqual((body["ext"]["sign"], body["ext"]["avatar"]), ("", ""))

        grp = [{"gid": "1", "n": "我的好友", "w": 0, "def": True}, {"gid": "2", "n": "同事", "w": 1, "def": False}]
        body = yield self.qid(server, token, "QID_IM_SET_ROSTER_GRP", {"grp": json.dumps(grp)})
        self.assertEqual(body, {"type": "text", "result": "1"})
        yield self.qid(server, token, "QID_IM_SET_ROSTER_SIGN", {"sign": "哎哟,不错哦"})
        # An avatar names an uploaded file.
        yield server.files.upload_chunk("alice", "1.jpg", 3, 0, b"jpg")
        yield self.qid(server, token, "QID_IM_SET_ROSTER_AVATAR", {"avatar": "/file/1.jpg"})
        yield self.qid(server, token, "QID_IM_SET_ROSTER_FRD_GID", {"fid": "bob", "gid": "2"})
        yield self.qid(server, token, "QID_IM_SET_ROSTER_FRD_NAME", {"fid": "bob", "name": "许三多"})
        body = yield self.qid(server, token, "QID_IM_GET_ROSTER_ALL")
        [friend] = json.loads(body["result"])
        self.assertEqual((friend["gid"], friend["fname"]), ("2", "许三多"))
        self.assertEqual(json.loads(body["ext"]["grp"]), grp)
        self.assertEqual((body["ext"]["sign"], body["ext"]["avatar"]), ("哎哟,不错哦", "/file/1.jpg"))
        # Dropping group 2 moves bob back to the default group.
        yield self.qid(server, token, "QID_IM_SET_ROSTER_GRP", {"grp": json.dumps(grp[:1])})
        body = yield self.qid(server, token, "QID_IM_GET_ROSTER_ALL")
        self.assertEqual(json.loads(body["result"])[0]["gid"], "1")

    @inlineCallbacks
    def test_roster_refusals(self):
        server, alice, bob = yield self.setup_pair()
        token = alice.token
        for grp in ("not json", "[]", json.dumps([{"gid": "1", "n": "a", "def": False}]),
                    json.dumps([{"gid": "1", "n": "a", "def": True}, {"gid": "1", "n": "b"}]),
                    json.dumps([{"gid": "1", "n": "a", "def": True, "w": "heavy"}])):
            body = yield self.qid(server, token, "QID_IM_SET_ROSTER_GRP", {"grp": grp}, expect=400)
            self.assertEqual(body["type"], "error")
        yield self.qid(server, token, "QID_IM_SET_ROSTER_FRD_GID", {"fid": "bob", "gid": "9"}, expect=404)
        yield self.qid(server, token, "QID_IM_SET_ROSTER_FRD_NAME", {"fid": "carol", "name": "x"}, expect=404)
        yield self.qid(server, token, "QID_IM_SET_ROSTER_SIGN", {"sign": "x" * 501}, expect=400)

    @inlineCallbacks
    def test_password(self):
        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        token = yield self.login(server, "alice", "secret1")
        yield self.qid(server, token, "QID_IM_SET_USER_PWD", {"old": "wrong!", "new": "secret2"}, expect=401)
        yield self.qid(server, token, "QID_IM_SET_USER_PWD", {"old": "secret1", "new": "secret2"})
        yield self.login(server, "alice", "secret2")

    @inlineCallbacks
    def test_offline_messages_and_cursor(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        yield server.accounts.register("bob", "secret1")
        token = yield self.login(server, "bob", "secret1")
        yield alice.send_message("bob", "one", msgid="m1", time="2015-01-30 12:23:00")
        yield alice.send_message("bob", "two", msgid="m2")
        body = yield self.qid(server, token, "QID_IM_GET_OFFLINE_MSG")
        found = rows(body)
        self.assertEqual([(r["msgid"], r["from"], r["to"], r["type"], r["body"]) for r in found],
                         [("m1", "alice", "bob", "0", "one"), ("m2", "alice", "bob", "0", "two")])
        self.assertEqual(found[0]["ctime"], "2015-01-30 12:23:00")
        self.assertEqual(found[0]["time"], format_time(found[0]["stime"]))
        # The seconds-only time acknowledges what was stored before that second began.
        yield self.qid(server, token, "QID_IM_RECIVE_OFFLINE_MSG", {"time": found[0]["time"]})
        left = rows((yield self.qid(server, token, "QID_IM_GET_OFFLINE_MSG")))
        self.assertTrue(all(r["stime"] >= parse_time("t", found[0]["time"]) for r in left))
        # The exact server time acknowledges up to that message.
        yield self.qid(server, token, "QID_IM_RECIVE_OFFLINE_MSG", {"stime": found[1]["stime"]})
        body = yield self.qid(server, token, "QID_IM_GET_OFFLINE_MSG")
        self.assertEqual(body["result"], [])
        yield self.qid(server, token, "QID_IM_RECIVE_OFFLINE_MSG", {"time": "yesterday"}, expect=400)

    @inlineCallbacks
    def test_offline_cursor_by_time_clears_what_was_shown_and_nothing_else(self):
        """
        The seed's flow, literally: fetch, then acknowledge with the newest
        row's ``time`` (whole seconds).  Two rows share that second; the
        fetch showed one.  The shown one goes, the other stays.
        """
        server = self.start_server()
        alice = yield self.user(server, "alice")
        yield server.accounts.register("bob", "secret1")
        token = yield self.login(server, "bob", "secret1")

        class Clock:
            now = 1795325510.9

            def seconds(self):
                return self.now

        clock = server.messages._clock = Clock()
        yield alice.send_message("bob", "zero", msgid="m0")          # the second before
        clock.now = 1795325511.1
        yield alice.send_message("bob", "one", msgid="m1")
        shown = rows((yield self.qid(server, token, "QID_IM_GET_OFFLINE_MSG")))
        self.assertEqual([r["msgid"] for r in shown], ["m0", "m1"])
        clock.now = 1795325511.7
        yield alice.send_message("bob", "two", msgid="m2")          # same second as m1, not shown
        self.assertEqual(shown[-1]["time"], format_time(1795325511700))
        yield self.qid(server, token, "QID_IM_RECIVE_OFFLINE_MSG", {"time": shown[-1]["time"]})
        left = rows((yield self.qid(server, token, "QID_IM_GET_OFFLINE_MSG")))
        self.assertEqual([r["msgid"] for r in left], ["m2"])
        # That fetch showed m2: the same time now clears it too.
        yield self.qid(server, token, "QID_IM_RECIVE_OFFLINE_MSG", {"time": left[-1]["time"]})
        self.assertEqual((yield self.qid(server, token, "QID_IM_GET_OFFLINE_MSG"))["result"], [])
        # A client that never fetched (it had them pushed) still clears what
        # was stored before the second it names, and nothing of that second.
        clock.now = 1795325520.2
        yield alice.send_message("bob", "three", msgid="m3")
        clock.now = 1795325521.5
        yield alice.send_message("bob", "four", msgid="m4")
        yield self.qid(server, token, "QID_IM_RECIVE_OFFLINE_MSG", {"time": format_time(1795325521500)})
        left = rows((yield self.qid(server, token, "QID_IM_GET_OFFLINE_MSG")))
        self.assertEqual([r["msgid"] for r in left], ["m4"])

    @inlineCallbacks
    def test_history(self):
        server, alice, bob = yield self.setup_pair()
        yield alice.send_message("bob", "hi bob", msgid="m1")
        yield bob.send_message("alice", "hi alice", msgid="m2")
        yield alice.recall("m1", to="bob")
        body = yield self.qid(server, alice.token, "QID_IM_GET_ROSTER_MSG_HISTORY", {"msgto": "bob"})
        history = rows(body)
        self.assertEqual([(r["msgid"], r["from"], r["body"], r["recalled"]) for r in history],
                         [("m1", "alice", "", "1"), ("m2", "bob", "hi alice", "0")])
        # Carol sees nothing of alice and bob's conversation, whatever she asks.
        yield server.accounts.register("carol", "secret1")
        carol = yield self.login(server, "carol", "secret1")
        body = yield self.qid(server, carol, "QID_IM_GET_ROSTER_MSG_HISTORY", {"msgto": "bob"})
        self.assertEqual(body["result"], [])
        body = yield self.qid(server, carol, "QID_IM_GET_OFFLINE_MSG", {"uid": "bob"})
        self.assertEqual(body["result"], [])

    @inlineCallbacks
    def test_history_window(self):
        server, alice, bob = yield self.setup_pair()
        yield alice.send_message("bob", "recent", msgid="m1")
        # A message older than history_days does not come back.
        from sqlalchemy import update

        from imd.store import schema

        with server.store.db.engine.begin() as conn:
            conn.execute(update(schema.messages).values(created_at=1000))
        body = yield self.qid(server, alice.token, "QID_IM_GET_ROSTER_MSG_HISTORY", {"msgto": "bob"})
        self.assertEqual(body["result"], [])

    @inlineCallbacks
    def test_groups(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        bob = yield self.user(server, "bob")
        body = yield self.qid(server, alice.token, "QID_IM_SET_GROUP", {"gname": "临时组", "fname": "alice"})
        gid = body["result"]
        self.assertEqual(body["type"], "text")
        yield alice.invite(gid, "bob")
        yield bob.expect(T.IM_CHATROOM)
        yield bob.answer_invite(gid, True, "Bobby")
        groups = rows((yield self.qid(server, bob.token, "QID_IM_GET_GROUP_LIST")))
        self.assertEqual([(g["gid"], g["gname"], g["creator"], g["type"], g["exit"]) for g in groups],
                         [(gid, "临时组", "alice", "1", "1")])
        peers = rows((yield self.qid(server, bob.token, "QID_IM_GET_GROUP_PEER_LIST", {"gid": gid})))
        self.assertEqual(sorted((p["uid"], p["fname"], p["right"]) for p in peers),
                         [("alice", "", "1"), ("bob", "Bobby", "0")])
        yield alice.send_message(None, "first", gid=gid, msgid="g1")
        yield alice.send_message(None, "second", gid=gid, msgid="g2")
        offline = rows((yield self.qid(server, bob.token, "QID_IM_GET_GROUP_OFFLINE_MSG")))
        self.assertEqual([(m["msgid"], m["gid"], m["type"], m["seq"]) for m in offline],
                         [("g1", gid, "1", 1), ("g2", gid, "1", 2)])
        same = rows((yield self.qid(server, bob.token, "QID_IM_GET_GROUP_OFFLINE_MSG", {"gid": gid})))
        self.assertEqual(same, offline)
        yield self.qid(server, bob.token, "QID_IM_RECIVE_GROUP_OFFLINE_MSG", {"gid": gid, "stime": offline[0]["stime"]})
        left = rows((yield self.qid(server, bob.token, "QID_IM_GET_GROUP_OFFLINE_MSG")))
        self.assertEqual([m["msgid"] for m in left], ["g2"])
        yield self.qid(server, bob.token, "QID_IM_RECIVE_GROUP_OFFLINE_MSG", {"gid": gid, "seq": 2})
        self.assertEqual((yield self.qid(server, bob.token, "QID_IM_GET_GROUP_OFFLINE_MSG"))["result"], [])
        history = rows((yield self.qid(server, bob.token, "QID_IM_GET_GROUP_MSG_HISTORY", {"gid": gid})))
        self.assertEqual([m["body"] for m in history], ["first", "second"])

    @inlineCallbacks
    def test_group_privacy(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        yield server.accounts.register("eve", "secret1")
        eve = yield self.login(server, "eve", "secret1")
        gid = (yield self.qid(server, alice.token, "QID_IM_SET_GROUP", {"gname": "secret"}))["result"]
        yield alice.send_message(None, "private words", gid=gid)
        for name, body in (
            ("QID_IM_GET_GROUP_PEER_LIST", {"gid": gid}),
            ("QID_IM_GET_GROUP_OFFLINE_MSG", {"gid": gid}),
            ("QID_IM_RECIVE_GROUP_OFFLINE_MSG", {"gid": gid, "seq": 5}),
            ("QID_IM_GET_GROUP_MSG_HISTORY", {"gid": gid}),
        ):
            result = yield self.qid(server, eve, name, body, expect=404)
            self.assertEqual(result["code"], "not_found")
        self.assertEqual((yield self.qid(server, eve, "QID_IM_GET_GROUP_LIST"))["result"], [])
        self.assertEqual((yield self.qid(server, eve, "QID_IM_GET_GROUP_OFFLINE_MSG"))["result"], [])
        # Nobody creates a group in someone else's name.
        yield self.qid(server, eve, "QID_IM_SET_GROUP", {"gname": "x", "fname": "alice"}, expect=403)
        yield self.qid(server, eve, "QID_IM_SET_GROUP", {}, expect=400)

    @inlineCallbacks
    def test_user_info(self):
        server = self.start_server()
        yield server.accounts.register("jack", "secret1", name="Jack")
        yield server.accounts.register("rose", "secret1")
        jack = yield self.login(server, "jack", "secret1")
        rose = yield self.login(server, "rose", "secret1")
        info = {
            "uname": "jack", "sex": "1", "age": "25", "birthday": "1990-10-01", "telephone": "12345678",
            "cellphone": "18612345678", "email": "jack@rooten.com.cn", "address": "创意产业园",
            "zipcode": "215123", "position": "软件工程师",
        }
        yield self.qid(server, jack, "QID_IM_SET_USER_INFO", info)
        body = yield self.qid(server, rose, "QID_IM_GET_USER_INFO", {"uname": "jack"})
        self.assertEqual(body["type"], "list")
        got = {p["n"]: p["v"] for p in body["result"]}
        for key, value in info.items():
            if key != "uname":
                self.assertEqual(got[key], value)
        self.assertEqual(got["name"], "Jack")
        # Rose cannot change Jack's profile; unknown users are 404.
        yield self.qid(server, rose, "QID_IM_SET_USER_INFO", {"uname": "jack", "email": "x"}, expect=403)
        yield self.qid(server, rose, "QID_IM_GET_USER_INFO", {"uname": "nobody"}, expect=404)
        yield self.qid(server, jack, "QID_IM_SET_USER_INFO", {"email": "x" * 300}, expect=400)
        # A partial update keeps the other fields.
        yield self.qid(server, jack, "QID_IM_SET_USER_INFO", {"position": "架构师"})
        got = {p["n"]: p["v"] for p in (yield self.qid(server, jack, "QID_IM_GET_USER_INFO", {"uname": "jack"}))["result"]}
        self.assertEqual((got["position"], got["email"]), ("架构师", "jack@rooten.com.cn"))

    @inlineCallbacks
    def test_hostile_parameters(self):
        server, alice, bob = yield self.setup_pair()
        hostile = [None, 1, True, ["x"], {"a": 1}, "", "x" * 5000, "../../etc/passwd", "\x00"]
        names = [
            ("QID_IM_SET_ROSTER_FRD_GID", "fid"), ("QID_IM_SET_ROSTER_FRD_NAME", "fid"),
            ("QID_IM_GET_ROSTER_MSG_HISTORY", "msgto"), ("QID_IM_GET_GROUP_PEER_LIST", "gid"),
            ("QID_IM_GET_GROUP_MSG_HISTORY", "gid"), ("QID_IM_GET_USER_INFO", "uname"),
            ("QID_IM_RECIVE_OFFLINE_MSG", "time"), ("QID_IM_SET_ROSTER_GRP", "grp"),
        ]
        for name, field in names:
            for value in hostile:
                code, body, _ = yield self.http(server, "POST", f"/qid/{name}", {field: value, "gid": value}, token=alice.token)
                self.assertIn(code, (200, 400, 403, 404), (name, value, body))
                if code != 200:
                    self.assertEqual(body["type"], "error")
        code, _, _ = yield self.http(server, "GET", "/healthz")
        self.assertEqual(code, 200)


class SQLiteQidTests(QidTestsMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresQidTests(QidTestsMixin, PostgresBackend, unittest.TestCase):
    pass
