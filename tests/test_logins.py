"""
Failed logins back off, per account and address and per address, shared
through Redis when there is one; the right password from an address that
has not been failing still works.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock
from twisted.trial import unittest

from imd.channels.longconn.client import LongConnClient, ServerError
from imd.config import LimitsConfig
from imd.core.logins import LoginGuard
from imd.errors import RateLimited
from imd.hub.counters import MemoryCounters
from imd.metrics import Metrics
from tests.support import LongConnTestMixin, SQLiteBackend

LIMITS = LimitsConfig(login_failures=3, login_address_failures=10, login_window=60)


class GuardTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.metrics = Metrics(lambda: {})
        self.guard = LoginGuard(MemoryCounters(self.clock), LIMITS, self.metrics)

    @inlineCallbacks
    def attempt(self, account, address, right):
        yield self.guard.check(account, address)
        if not right:
            yield self.guard.failed(account, address)
            return False
        yield self.guard.succeeded(account, address)
        return True

    @inlineCallbacks
    def test_backoff_doubles_per_account_and_address(self):
        for _ in range(2):
            yield self.attempt("alice", "A", False)
        yield self.attempt("alice", "A", False)  # the third: locked for 1 s
        error = yield self.assertFailure(self.attempt("alice", "A", True), RateLimited)
        self.assertIn("try again in 1 s", error.message)
        # The right password from elsewhere still works, and B's tries are its own.
        self.assertTrue((yield self.attempt("alice", "B", True)))
        self.clock.advance(1)
        yield self.attempt("alice", "A", False)  # the fourth: 2 s
        self.clock.advance(1.5)
        yield self.assertFailure(self.attempt("alice", "A", True), RateLimited)
        self.clock.advance(0.5)
        self.assertTrue((yield self.attempt("alice", "A", True)))
        # A success starts afresh.
        yield self.attempt("alice", "A", False)
        self.assertTrue((yield self.attempt("alice", "A", True)))
        self.assertEqual(self.metrics.logins_refused.labels("login")._value.get(), 2)

    @inlineCallbacks
    def test_one_address_on_many_accounts(self):
        for n in range(10):
            yield self.attempt(f"user{n}", "A", False)
        yield self.assertFailure(self.attempt("fresh", "A", True), RateLimited)
        self.assertTrue((yield self.attempt("fresh", "B", True)))

    @inlineCallbacks
    def test_many_addresses_on_one_account(self):
        # Thirty addresses fail once each: the account's lock binds those,
        # not an address that never failed on it.
        for n in range(30):
            yield self.attempt("alice", f"10.0.0.{n}", False)
        yield self.assertFailure(self.attempt("alice", "10.0.0.3", True), RateLimited)
        self.assertTrue((yield self.attempt("alice", "10.9.9.9", True)))

    @inlineCallbacks
    def test_the_window_forgets(self):
        yield self.attempt("alice", "A", False)
        yield self.attempt("alice", "A", False)
        self.clock.advance(61)
        yield self.attempt("alice", "A", False)
        yield self.attempt("alice", "A", False)
        self.assertTrue((yield self.attempt("alice", "A", True)))


class LoginLimitWireTests(LongConnTestMixin, SQLiteBackend, unittest.TestCase):
    @inlineCallbacks
    def connect_from(self, server, source: str):
        host, port = server.address("longconn")
        endpoint = TCP4ClientEndpoint(reactor, host, port, bindAddress=(source, 0))
        client = yield connectProtocol(endpoint, LongConnClient(reactor))
        self.addCleanup(client.close)
        return client

    @inlineCallbacks
    def test_http_and_long_connection(self):
        server = self.start_server(limits={"login_failures": 3})
        yield server.accounts.register("alice", "secret1")
        for _ in range(3):
            code, body, _ = yield self.http(server, "POST", "/auth/login", {"uid": "alice", "password": "wrong!"})
            self.assertEqual((code, body["code"]), (401, "bad_credentials"))
        code, body, _ = yield self.http(server, "POST", "/auth/login", {"uid": "alice", "password": "secret1"})
        self.assertEqual((code, body["code"]), (429, "rate_limited"))
        # The long connection from the same address is the same login.
        client = yield self.connect_from(server, "127.0.0.1")
        error = yield self.assertFailure(client.auth("alice", password="secret1"), ServerError)
        self.assertEqual(error.code, "rate_limited")
        # From another address the right password works.
        other = yield self.connect_from(server, "127.0.0.2")
        yield other.auth("alice", password="secret1")
        self.assertEqual(server.metrics.logins_refused.labels("password")._value.get(), 2)

    @inlineCallbacks
    def test_wrong_tokens(self):
        server = self.start_server(limits={"login_failures": 2})
        yield server.accounts.register("alice", "secret1")
        token = yield self.login(server, "alice", "secret1")
        for n in range(2):
            client = yield self.connect_from(server, "127.0.0.3")
            error = yield self.assertFailure(client.auth("alice", token=f"guess{n}"), ServerError)
            self.assertEqual(error.code, "invalid_token")
        client = yield self.connect_from(server, "127.0.0.3")
        error = yield self.assertFailure(client.auth("alice", token=token), ServerError)
        self.assertEqual(error.code, "rate_limited")
        client = yield self.connect_from(server, "127.0.0.4")
        yield client.auth("alice", token=token)
