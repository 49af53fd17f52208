"""The HTTP access log names every request and none of its secrets."""

from __future__ import annotations

import io
import json
from urllib.parse import quote

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.channels.methodapi.crypto import encrypt
from imd.channels.shared.accesslog import redact
from tests.support import ServerTestMixin, SQLiteBackend


class RedactTests(unittest.TestCase):
    def test_secret_values_go(self):
        self.assertEqual(
            redact(b"/file/download?filename=a.txt&token=abc&Token=x&signature=S"),
            b"/file/download?filename=a.txt&token=%3Credacted%3E&Token=%3Credacted%3E&signature=S",
        )
        self.assertEqual(redact(b"/?request=AbC%2B%3D%3D"), b"/?request=%3Credacted%3E")
        self.assertEqual(redact(b"/x?%74oken=1&pass"), b"/x?%74oken=%3Credacted%3E&pass")

    def test_nothing_else_changes(self):
        for uri in (b"/healthz", b"/qid/QID_IM_GET_OFFLINE_MSG", b"/a?b=1&c=&d", b"/?", b"/x?tokens=1"):
            self.assertEqual(redact(uri), uri)


class AccessLogTests(ServerTestMixin, SQLiteBackend, unittest.TestCase):
    @inlineCallbacks
    def test_tokens_and_encrypted_requests_stay_out_of_the_log(self):
        server = self.start_server()
        site = server.service.getServiceNamed("http").factory
        site.logFile = log = io.StringIO()
        yield server.accounts.register("alice", "secret1")
        token = yield self.login(server, "alice", "secret1")
        yield self.http(server, "GET", f"/file/download?filename=a.txt&token={token}", raw=b"")
        form = quote(encrypt(b"2108a4c486350f3a", json.dumps({"data": {"password": "hunter2"}}).encode()).decode(), safe="")
        yield self.http(server, "POST", f"/?request={form}", raw=b"", headers={"Referer": f"http://x/?token={token}"})
        lines = log.getvalue().splitlines()
        self.assertEqual(len([line for line in lines if '"GET /file/download?filename=a.txt&token=%3Credacted%3E' in line]), 1, lines)
        self.assertEqual(len([line for line in lines if '"POST /?request=%3Credacted%3E' in line]), 1, lines)
        for line in lines:
            self.assertNotIn(token, line)
            self.assertNotIn(form, line)
