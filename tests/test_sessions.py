"""
Seed 002's sessions API (``/plugin/tlim/…``) over real HTTP, with the
HTS pushes reaching subscribers on XMPP (slixmpp, tlim sessions) and on
the seed-001 long connection.
"""

import json
from urllib.parse import urlencode

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from tests.support import PostgresBackend, SQLiteBackend
from tests.test_xmpp import XmppTestMixin
from tests.xmppclient import envelope

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def hts(msg_type):
    return lambda m: m["body"].startswith("{") and envelope(m)["msg_type"] == msg_type


class SessionsTestsMixin(XmppTestMixin):
    @inlineCallbacks
    def form(self, server, path, fields):
        code, body, _ = yield self.http(server, "POST", path, raw=urlencode(fields).encode(), headers=FORM)
        return code, body

    @inlineCallbacks
    def setup(self):
        server = self.start_server()
        rose = yield self.slix(server, "rose", tlim=True)
        lily = yield self.slix(server, "lily", tlim=True)
        jack = yield self.user(server, "jack")
        token = yield self.login(server, "rose", "secret1")
        return server, rose, lily, jack, token

    @inlineCallbacks
    def test_add_modify_delete_with_pushes(self):
        server, rose, lily, jack, token = yield self.setup()
        subscribers = json.dumps([{"user_id": "rose"}, {"user_id": "jack"}])
        code, body = yield self.form(server, "/plugin/tlim/addSession", {"token": token, "session_type": "1", "subscribers": subscribers})
        self.assertEqual(code, 200, body)
        gid = body["session_id"]
        self.assertEqual((body["result"], body["result_detail"], body["session_type"], body["session_user"]), ("ok", "", "1", "rose"))
        self.assertEqual(body["session_name"], "rose,jack")
        self.assertEqual(sorted(s["user_id"] for s in body["subscribers"]), ["jack", "rose"])
        self.assertTrue(body["session_create_time"].isdigit())
        # HTS-000 to the tlim subscriber, the group to the seed-001 one.
        msg = yield rose.next_message(hts("HTS-000"))
        item = envelope(msg)["body"][0]
        self.assertEqual((item["session_id"], item["session_user"]), (gid, "rose"))
        self.assertEqual(sorted(s["user_id"] for s in item["subscribers"]), ["jack", "rose"])
        _, data = yield jack.expect(T.IM_NOTIFY_GROUP_DATA)
        self.assertEqual(data["gid"], gid)
        # The session carries MTS messages at once.
        yield jack.send_message(None, "in the session", gid=gid)
        msg = yield rose.next_message(hts("MTS-000"))
        self.assertEqual(envelope(msg)["body"], [{"session_id": gid, "text": "in the session"}])

        # modify: JSON body, Bearer token, under a project prefix.
        changes = [{"user_id": "lily", "type": "add"}, {"user_id": "jack", "type": "del"}]
        code, body, _ = yield self.http(
            server, "POST", "/imweb/plugin/tlim/modifySession", {"session_id": gid, "session_name": "hello,world", "subscribers": changes}, token=token
        )
        self.assertEqual((code, body["result"], body["session_id"]), (200, "ok", gid), body)
        self.assertTrue(body["session_modify_time"].isdigit())
        msg = yield rose.next_message(hts("HTS-001"))
        item = envelope(msg)["body"][0]
        self.assertEqual((item["session_name"], item["subscribers"]), ("hello,world", changes))
        msg = yield lily.next_message(hts("HTS-000"))
        self.assertEqual(envelope(msg)["body"][0]["session_name"], "hello,world")
        members = yield server.store.groups.member_ids(gid)
        self.assertEqual(sorted(members), ["lily", "rose"])

        code, body = yield self.form(server, "/plugin/tlim/deleteSession", {"token": token, "session_id": gid})
        self.assertEqual((code, body["result"], body["session_id"]), (200, "ok", gid), body)
        for client in (rose, lily):
            msg = yield client.next_message(hts("HTS-002"))
            self.assertEqual(envelope(msg)["body"][0]["session_id"], gid)
        self.assertIsNone((yield server.store.groups.get(gid)))

    @inlineCallbacks
    def test_joins_leaves_and_dissolving_from_other_designs(self):
        # Seed 001 invites and leaves, the server API dissolves: a tlim
        # subscriber hears each as a session push.
        server, rose, lily, jack, token = yield self.setup()
        bob = yield self.user(server, "bob")
        group = yield server.groups.create("jack", "team")
        yield server.store.groups.add_member(group.gid, "rose", 0, "", 0)
        yield jack.invite(group.gid, "bob")
        yield bob.expect(T.IM_CHATROOM)
        yield bob.answer_invite(group.gid, True, "Bob")
        msg = yield rose.next_message(hts("HTS-001"))
        got = envelope(msg)
        item = got["body"][0]
        self.assertEqual((got["from"], item["session_id"], item["session_name"], item["subscribers"]),
                         ("bob", group.gid, "team", [{"user_id": "bob", "type": "add"}]))
        yield bob.leave_group(group.gid)
        msg = yield rose.next_message(hts("HTS-001"))
        self.assertEqual(envelope(msg)["body"][0]["subscribers"], [{"user_id": "bob", "type": "del"}])
        yield server.groups.delete("jack", group.gid)
        msg = yield rose.next_message(hts("HTS-002"))
        self.assertEqual((envelope(msg)["from"], envelope(msg)["body"][0]["session_id"]), ("jack", group.gid))
        # The long-connection owner hears that its group ended as before: a leave of its own.
        _, left = yield jack.expect(T.IM_CHATROOM, lambda b: b["type"] == "2" and b["from"] == "jack")
        self.assertEqual(left["rid"], group.gid)

    @inlineCallbacks
    def test_owner_and_token_checks(self):
        server, rose, lily, jack, token = yield self.setup()
        code, body, _ = yield self.http(server, "POST", "/plugin/tlim/addSession", {"session_type": "1", "subscribers": [{"user_id": "jack"}]}, token=token)
        gid = body["session_id"]
        lily_token = yield self.login(server, "lily", "secret1")
        for path in ("/plugin/tlim/modifySession", "/plugin/tlim/deleteSession"):
            code, body, _ = yield self.http(server, "POST", path, {"session_id": gid, "session_name": "mine now"}, token=lily_token)
            self.assertEqual((code, body["result"], body["result_detail"]), (403, "fail", "forbidden"), body)
            code, body, _ = yield self.http(server, "POST", path, {"session_id": gid})
            self.assertEqual((code, body["result_detail"]), (401, "unauthenticated"), body)
            code, body, _ = yield self.http(server, "POST", path, {"session_id": gid, "token": "forged"})
            self.assertEqual((code, body["result_detail"]), (401, "invalid_token"), body)
        code, body, _ = yield self.http(server, "POST", "/plugin/tlim/deleteSession", {"session_id": "nosuch"}, token=token)
        self.assertEqual((code, body["result_detail"]), (404, "not_found"))
        self.assertIsNotNone((yield server.store.groups.get(gid)))

    @inlineCallbacks
    def test_every_error_code(self):
        server, rose, lily, jack, token = yield self.setup()
        code, body, _ = yield self.http(server, "POST", "/plugin/tlim/addSession", {"session_type": "1", "subscribers": []}, token=token)
        gid = body["session_id"]
        add, modify, delete = ("/plugin/tlim/" + n for n in ("addSession", "modifySession", "deleteSession"))
        cases = [
            (add, {"subscribers": []}, "error-002", 400),
            (add, {"session_type": "9"}, "error-002", 400),
            (add, {"session_type": "1", "session_name": " "}, "error-003", 400),
            (modify, {"session_id": gid, "session_name": ""}, "error-003", 400),
            (add, {"session_type": "1", "subscribers": [{"user_id": "ghost"}]}, "error-004", 404),
            (add, {"session_type": "1", "session_user": "jack"}, "error-004", 400),
            (modify, {"session_id": gid, "subscribers": [{"nouser": 1}]}, "error-004", 400),
            (add, {"session_type": "1", "subscribers": "[{not json"}, "error-005", 400),
            (add, {"session_type": "1", "subscribers": "\ud800"}, "error-005", 400),
            (add, {"session_type": "1", "subscribers": {"user_id": "jack"}}, "error-006", 400),
            (modify, {"subscribers": []}, "error-007", 400),
            (delete, {}, "error-007", 400),
            (modify, {"session_id": gid, "subscribers": [{"user_id": "jack", "type": "swap"}]}, "error-000", 400),
        ]
        for path, params, detail, status in cases:
            code, body, _ = yield self.http(server, "POST", path, params, token=token)
            self.assertEqual((code, body["result"], body["result_detail"]), (status, "fail", detail), (path, params, body))
        code, body, _ = yield self.http(server, "POST", add, raw=b"{not json", token=token)
        self.assertEqual((code, body["result_detail"]), (400, "error-005"))
        code, body, _ = yield self.http(server, "POST", add, raw=b"x" * (2 * 1024 * 1024), token=token)
        self.assertEqual((code, body["result"]), (413, "fail"))
        # Nothing of that reached anyone: the only session is the first one.
        groups = yield server.store.groups.groups_of("rose")
        self.assertEqual([g.gid for g in groups], [gid])


class SQLiteSessionsTests(SQLiteBackend, SessionsTestsMixin, unittest.TestCase):
    pass


class PostgresSessionsTests(PostgresBackend, SessionsTestsMixin, unittest.TestCase):
    pass
