"""
Inputs that fuzzing once turned into internal errors, each sent over the
wire again: every one must now get a clear error for its sender alone (and
trial fails any test whose server logged a failure).
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from imd.channels.methodapi.codec import HEADER
from imd.channels.methodapi.crypto import encrypt
from imd.channels.shared import signing
from tests.support import SQLiteBackend
from tests.test_socket import SocketClientMixin

KEY = b"2108a4c486350f3a"
HUGE = b"9" * 5000
# Escaped in JSON text: what a client sends, not what Python can encode.
SURROGATE = '"\\ud800"'


class HostileInputTests(SocketClientMixin, SQLiteBackend, unittest.TestCase):
    @inlineCallbacks
    def setUp(self):
        self.server = self.start_server()
        yield self.server.accounts.register("alice", "secret1")
        self.token = yield self.login(self.server, "alice", "secret1")

    @inlineCallbacks
    def qid(self, name, raw: bytes):
        code, body, _ = yield self.http(self.server, "POST", f"/qid/{name}", raw=raw, token=self.token)
        return code, body

    @inlineCallbacks
    def assertQidRefused(self, name, raw: bytes, says: str):
        code, body = yield self.qid(name, raw)
        self.assertEqual(code, 400, body)
        self.assertIn(body["code"], ("bad_request", "invalid_field"))
        self.assertIn(says, body["err"])

    @inlineCallbacks
    def test_qid_huge_integer(self):
        yield self.assertQidRefused("QID_IM_GET_OFFLINE_MSG", b'{"x": ' + HUGE + b"}", "not JSON")

    @inlineCallbacks
    def test_qid_lone_surrogates(self):
        for name, key in (
            ("QID_IM_SET_ROSTER_SIGN", "sign"),
            ("QID_IM_SET_ROSTER_AVATAR", "avatar"),
            ("QID_IM_SET_ROSTER_FRD_NAME", "name"),
            ("QID_IM_SET_USER_PWD", "new"),
        ):
            yield self.assertQidRefused(name, f'{{"{key}": {SURROGATE}, "fid": "bob", "old": "secret1"}}'.encode(), "not JSON")

    @inlineCallbacks
    def test_qid_unicode_digits_and_far_times(self):
        for body in ({"time": "²"}, {"stime": "²"}, {"time": "0001-01-01"}, {"time": "-5"}):
            yield self.assertQidRefused("QID_IM_RECIVE_OFFLINE_MSG", json.dumps(body).encode(), "time")

    @inlineCallbacks
    def test_directory_infinity(self):
        for name in ("QID_IM_GET_DEPT_LIST", "QID_IM_GET_CONTACTS_LIST"):
            for value in (b"Infinity", b"NaN", b"1e400"):
                yield self.assertQidRefused(name, b'{"ver": ' + value + b"}", "not JSON")
            yield self.assertQidRefused(name, b'{"ver": "\xc2\xb2"}', "ver")

    @inlineCallbacks
    def test_files_json(self):
        for raw in (b'{"token": ' + HUGE + b"}", f'{{"token": {SURROGATE}, "filename": "a"}}'.encode()):
            code, body, _ = yield self.http(self.server, "POST", "/file/check", raw=raw)
            # The file server's own error form: 500 and a description.
            self.assertEqual(code, 500, body)
            self.assertIn(b"not JSON", body)

    @inlineCallbacks
    def test_files_signed_parameter_not_utf8(self):
        params = {"token": self.token, "filename": "a"}
        query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
        query += "&signature=" + signing.sign(params) + "&md5=%ED%A0%80"
        code, body, _ = yield self.http(self.server, "GET", "/file/check?" + query, raw=b"")
        self.assertEqual(code, 500, body)
        self.assertIn(b"not UTF-8", body)
        # While a file name in Chinese is fine.
        params = {"token": self.token, "filename": "文件.txt"}
        query = "&".join(f"{k}={quote(v)}" for k, v in params.items()) + "&signature=" + signing.sign(params)
        code, body, _ = yield self.http(self.server, "GET", "/file/check?" + query, raw=b"")
        self.assertNotIn(b"UTF-8", body)
        self.assertNotIn(b"parameters", body)

    def envelope(self, data_json: str, t: str | None = None) -> bytes:
        t = t or str(int(time.time()))
        return f'{{"method": "com.user.getFriends", "data": {data_json}, "_t": "{t}", "sign": "X", "token": "{self.token}"}}'.encode()

    @inlineCallbacks
    def method_api(self, raw: bytes, encrypted: bool):
        if encrypted:
            raw = b"request=" + quote(encrypt(KEY, raw).decode(), safe="").encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
        else:
            headers = {}
        code, body, _ = yield self.http(self.server, "POST", "/", raw=raw, headers=headers)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["status"], "0000", body)
        return body

    @inlineCallbacks
    def test_method_api(self):
        for encrypted in (False, True):
            body = yield self.method_api(self.envelope(f'{{"friend": {SURROGATE}}}'), encrypted)
            self.assertIn("not JSON", body["info"])
            body = yield self.method_api(self.envelope(f'{{"n": {HUGE.decode()}}}'), encrypted)
            self.assertIn("not JSON", body["info"])
            body = yield self.method_api(self.envelope("{}", t="²"), encrypted)
            self.assertEqual(body["code"], "invalid_field", body)
            # data as a JSON string, itself hostile.
            body = yield self.method_api(self.envelope(json.dumps('{"a": ' + SURROGATE + "}")), encrypted)
            self.assertIn("data is not JSON", body["info"])

    @inlineCallbacks
    def test_long_connection_ack_seq(self):
        alice = yield self.connect(self.server)
        yield alice.auth("alice", token=self.token)
        for seq in ("²", "٣", HUGE.decode(), -1, 1.5):
            alice.send_frame(T.IM_MESSAGE_ACK, {"type": str(T.IM_MESSAGE), "msgid": "m1", "gid": "g1", "seq": seq})
            _, ack = yield alice.expect(T.IM_MESSAGE_ACK)
            self.assertEqual(ack["code"], "invalid_field", (seq, ack))
        yield alice.ping()

    @inlineCallbacks
    def test_socket(self):
        client = yield self.socket(self.server)

        def send_raw(text: str) -> None:
            body = encrypt(KEY, text.encode())
            client.transport.write(HEADER.pack(len(body)) + body)

        send_raw(f'{{"action": {SURROGATE}}}')
        reply = yield client.expect(match=lambda r: r.get("status") == "0000")
        self.assertIn("not JSON", reply["info"])
        send_raw(f'{{"action": "bind", "token": {SURROGATE}}}')
        reply = yield client.expect(match=lambda r: r.get("status") == "0000")
        self.assertIn("not JSON", reply["info"])
        yield client.bind("alice", self.token)
        send_raw(f'{{"action": "sendmsg", "to_user_id": "alice", "content": {SURROGATE}}}')
        reply = yield client.expect(match=lambda r: r.get("status") == "0000")
        self.assertIn("not JSON", reply["info"])
        # Still bound and well.
        yield client.ping()
