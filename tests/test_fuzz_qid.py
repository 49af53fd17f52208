"""Fuzzing the QID short connection: no mutated body gets an internal error."""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests import fuzzing
from tests.support import LongConnTestMixin, SQLiteBackend

SEEDS = [
    ("QID_IM_GET_ROSTER_ALL", {}),
    ("QID_IM_SET_ROSTER_GRP", {"grp": '[{"gid":"1","n":"我的好友","w":0,"def":true}]'}),
    ("QID_IM_SET_ROSTER_SIGN", {"sign": "hello"}),
    ("QID_IM_SET_ROSTER_AVATAR", {"avatar": "a.jpg"}),
    ("QID_IM_SET_USER_PWD", {"old": "secret1", "new": "secret2"}),
    ("QID_IM_SET_ROSTER_FRD_GID", {"fid": "bob", "gid": "1"}),
    ("QID_IM_SET_ROSTER_FRD_NAME", {"fid": "bob", "name": "Bobby"}),
    ("QID_IM_GET_OFFLINE_MSG", {}),
    ("QID_IM_RECIVE_OFFLINE_MSG", {"time": "2015-01-30 12:23:00", "stime": 1422591780123}),
    ("QID_IM_GET_ROSTER_MSG_HISTORY", {"msgto": "bob"}),
    ("QID_IM_SET_GROUP", {"gname": "team", "type": 1, "exit": "1", "fname": "alice"}),
    ("QID_IM_GET_GROUP_LIST", {}),
    ("QID_IM_GET_GROUP_PEER_LIST", {"gid": "g1"}),
    ("QID_IM_GET_GROUP_OFFLINE_MSG", {"gid": "g1"}),
    ("QID_IM_RECIVE_GROUP_OFFLINE_MSG", {"gid": "g1", "seq": 3, "time": "2015-01-30 12:23:00"}),
    ("QID_IM_GET_GROUP_MSG_HISTORY", {"gid": "g1"}),
    ("QID_IM_GET_USER_INFO", {"uname": "alice"}),
    ("QID_IM_SET_USER_INFO", {"uname": "alice", "sex": "f", "email": "a@b.c", "name": "Alice"}),
    ("QID_IM_GET_DEPT_LIST", {"ver": "0"}),
    ("QID_IM_GET_CONTACTS_LIST", {"ver": 3}),
    ("QID_IM_GET_DEPT_VER", {}),
]


class QidFuzzTests(LongConnTestMixin, SQLiteBackend, unittest.TestCase):
    @inlineCallbacks
    def test_mutated_bodies(self):
        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        yield server.accounts.register("bob", "secret1")
        token = yield self.login(server, "alice", "secret1")
        for name, raw in fuzzing.cases("qid", SEEDS):
            code, body, _ = yield self.http(server, "POST", f"/qid/{name}", raw=raw, token=token)
            self.assertNotEqual(code, 500, (fuzzing.where("qid"), name, raw[:200], body))
            if code == 401:
                # A mutated QID_IM_SET_USER_PWD that still made sense changed
                # the password, which revokes the token: start again.
                yield server.accounts.set_password("alice", "secret1")
                token = yield self.login(server, "alice", "secret1")
        self.assertEqual(fuzzing.internal_errors(server), 0)
