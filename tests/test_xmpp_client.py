"""imd's own small XMPP client (the benchmark's) against the server."""

from twisted.internet import reactor
from twisted.internet.defer import DeferredQueue, inlineCallbacks
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from imd.channels.xmpp.client import XmppError, connect_xmpp
from tests.support import SQLiteBackend
from tests.test_xmpp import XmppTestMixin


class ClientTests(SQLiteBackend, XmppTestMixin, unittest.TestCase):
    @inlineCallbacks
    def client(self, server, uid, password="secret1"):
        client = yield connect_xmpp(reactor, *server.address("xmpp"))
        self.addCleanup(client.close)
        yield client.login(uid, password)
        return client

    @inlineCallbacks
    def test_login_chat_and_confirmation_after_commit(self):
        server = self.start_server()
        jack = yield self.user(server, "jack")
        yield server.accounts.register("rose", "secret1")
        rose = yield self.client(server, "rose")
        received = DeferredQueue()
        rose.on_message = lambda *m: received.put(m)
        yield rose.send_message("jack", "hello <&>", msgid="b1")
        # Confirmed: already committed.
        stored = yield server.store.messages.get("rose", "b1")
        self.assertEqual(stored.body, "hello <&>")
        _, frame = yield jack.expect(T.IM_MESSAGE)
        self.assertEqual(frame["body"], "hello <&>")
        yield jack.send_message("rose", "back", msgid="b2")
        self.assertEqual((yield received.get()), ("jack", "b2", "back"))

    @inlineCallbacks
    def test_wrong_password(self):
        server = self.start_server()
        yield server.accounts.register("rose", "secret1")
        client = yield connect_xmpp(reactor, *server.address("xmpp"))
        self.addCleanup(client.close)
        yield self.assertFailure(client.login("rose", "wrong!!"), XmppError)

    @inlineCallbacks
    def test_token_logins_are_not_failed_logins(self):
        # More PLAIN logins with a token from one address than the failed
        # logins it may have: none counts as a failure (a wrong password still does).
        server = self.start_server(
            xmpp={"endpoint": "tcp:0:interface=127.0.0.1", "plain_without_tls": True},
            limits={"login_address_failures": 3},
        )
        yield server.accounts.register("rose", "secret1")
        token = yield self.login(server, "rose", "secret1")
        for _ in range(5):
            client = yield connect_xmpp(reactor, *server.address("xmpp"))
            yield client.login("rose", token, plain=True)
            yield client.close()
        # Each counted as a token login, as on the long connection.
        self.assertEqual(server.metrics.logins.labels("token")._value.get(), 5)
        self.assertEqual(server.metrics.logins_failed.labels("token")._value.get(), 0)
        client = yield connect_xmpp(reactor, *server.address("xmpp"))
        self.addCleanup(client.close)
        yield self.assertFailure(client.login("rose", "wrong!!", plain=True), XmppError)
        # The right password still works: one failure is within the limits.
        other = yield connect_xmpp(reactor, *server.address("xmpp"))
        self.addCleanup(other.close)
        yield other.login("rose", "secret1", plain=True)
