"""Fuzzing the method API: no mutated envelope or data gets an internal error."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.channels.methodapi.crypto import encrypt
from imd.channels.shared.signing import sign
from tests import fuzzing
from tests.support import SQLiteBackend, ServerTestMixin

KEY = b"2108a4c486350f3a"
DATA = [
    ("com.user.register", {"telephone": "13800000001", "password": "123456", "sms_code": "1234"}),
    ("com.user.login", {"telephone": "13800000001", "password": "123456"}),
    ("com.user.smsCode", {"telephone": "13800000001"}),
    ("com.user.addfriend", {"opt": "addMsg", "mobile": "13800000002", "msg": "hi"}),
    ("com.user.addfriend", {"opt": "agreeMsg", "sender": "bob"}),
    ("com.user.createGroup", {"name": "team"}),
    ("com.user.addGroup", {"opt": "addMsg", "group_id": "g1", "friends": '["bob"]'}),
    ("com.user.addGroup", {"opt": "browseMsg", "group_id": "g1"}),
    ("com.user.getFriends", {"user_id": "alice"}),
    ("com.user.getGroups", {}),
]


class MethodApiFuzzTests(ServerTestMixin, SQLiteBackend, unittest.TestCase):
    @inlineCallbacks
    def post(self, server, raw: bytes, encrypted: bool, label):
        if encrypted:
            raw = b"request=" + quote(encrypt(KEY, raw).decode(), safe="").encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
        else:
            headers = {}
        code, body, _ = yield self.http(server, "POST", "/", raw=raw, headers=headers)
        self.assertEqual(code, 200, (label, raw[:200], body))
        self.assertNotEqual(body.get("code"), "internal_error", (label, raw[:200], body))

    @inlineCallbacks
    def test_mutated_data(self):
        # Signed as sent, so the mutation reaches the method, not just the signature check.
        server = self.start_server(sms={"required": False})
        yield server.accounts.register("alice", "secret1")
        token = yield self.login(server, "alice", "secret1")
        t = int(time.time()) - 200
        for n, (method, raw) in enumerate(fuzzing.cases("methodapi.data", DATA)):
            try:
                data = json.loads(raw)
            except (ValueError, RecursionError):
                data = None
            if not isinstance(data, dict):
                data = raw.decode("utf-8", "replace")
            envelope = {"method": method, "data": data, "_t": t + n, "_v": "1.0", "token": token}
            try:
                envelope["sign"] = sign(data, str(t + n))
            except (TypeError, AttributeError, UnicodeEncodeError):
                envelope["sign"] = "X"  # not an object, or nothing a client could sign
            text = json.dumps(envelope, ensure_ascii=True).encode()
            yield self.post(server, text, n % 2 == 0, (fuzzing.where("methodapi.data"), method))
        self.assertEqual(fuzzing.internal_errors(server), 0)

    @inlineCallbacks
    def test_mutated_envelopes(self):
        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        token = yield self.login(server, "alice", "secret1")
        seeds = [
            (method, {"method": method, "data": data, "_t": int(time.time()), "_v": "1.0", "sign": sign(data, "1"), "token": token})
            for method, data in DATA
        ]
        for n, (method, raw) in enumerate(fuzzing.cases("methodapi.envelope", seeds)):
            yield self.post(server, raw, n % 2 == 1, (fuzzing.where("methodapi.envelope"), method))
        self.assertEqual(fuzzing.internal_errors(server), 0)
