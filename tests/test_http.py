"""The HTTP root over a real socket: health, login, errors, metrics."""

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.support import PostgresBackend, ServerTestMixin, SQLiteBackend


class HttpTestsMixin(ServerTestMixin):
    @inlineCallbacks
    def test_healthz(self):
        server = self.start_server()
        code, body, _ = yield self.http(server, "GET", "/healthz")
        self.assertEqual(code, 200)
        self.assertEqual(body["status"], "ok")
        self.assertEqual(body["store"]["status"], "ok")
        self.assertEqual(body["store"]["backend"], self.backend)

    @inlineCallbacks
    def test_login(self):
        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        code, body, _ = yield self.http(
            server, "POST", "/auth/login", {"uid": "alice", "password": "secret1"}
        )
        self.assertEqual(code, 200, body)
        self.assertEqual(body["uid"], "alice")
        self.assertEqual(body["expires_in"], 86400)
        code, who, _ = yield self.http(server, "GET", "/auth/whoami", token=body["token"])
        self.assertEqual((code, who), (200, {"uid": "alice"}))

    @inlineCallbacks
    def test_wrong_password(self):
        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        code, body, _ = yield self.http(
            server, "POST", "/auth/login", {"uid": "alice", "password": "wrong!"}
        )
        self.assertEqual(code, 401)
        self.assertEqual(body["type"], "error")
        self.assertEqual(body["code"], "bad_credentials")
        self.assertTrue(body["err"])


class SQLiteHttpTests(HttpTestsMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresHttpTests(HttpTestsMixin, PostgresBackend, unittest.TestCase):
    pass
