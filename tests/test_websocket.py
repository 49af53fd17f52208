"""The long connection over a WebSocket at /ws, over real loopback sockets, on each backend."""

import json

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from imd.channels.longconn.client import ServerError, connect_websocket
from tests.support import LongConnTestMixin, PostgresBackend, SQLiteBackend


def handshake(host, port, origin=None, path="/ws"):
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Raw(Protocol):
    """Bytes in, everything received kept."""

    def __init__(self):
        self.received = b""
        from twisted.internet.defer import Deferred

        self.closed = Deferred()

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason=None):
        self.closed.callback(self.received)


class WebSocketTestsMixin(LongConnTestMixin):
    @inlineCallbacks
    def ws(self, server):
        host, port = server.address("http")
        client = yield connect_websocket(reactor, f"ws://{host}:{port}/ws")
        self.addCleanup(client.close)
        return client

    @inlineCallbacks
    def ws_user(self, server, uid, res="web", register=True):
        if register:
            yield server.accounts.register(uid, "secret1")
        client = yield self.ws(server)
        yield client.auth(uid, password="secret1", res=res)
        return client

    @inlineCallbacks
    def raw(self, server, data):
        host, port = server.address("http")
        protocol = Raw()
        yield connectProtocol(TCP4ClientEndpoint(reactor, host, port), protocol)
        protocol.transport.write(data)
        return protocol

    @inlineCallbacks
    def test_browser_and_long_connection_chat(self):
        server = self.start_server()
        web = yield self.ws_user(server, "alice")
        tcp = yield self.user(server, "bob")
        self.assertEqual(server.hub.session_counts(), {"websocket": 1, "longconn": 1})
        yield web.send_message("bob", "hello from the browser")
        _, body = yield tcp.expect(T.IM_MESSAGE)
        self.assertEqual((body["from"], body["body"], body["from_res"]), ("alice", "hello from the browser", "web"))
        yield tcp.send_message("alice", "hello back")
        _, body = yield web.expect(T.IM_MESSAGE)
        self.assertEqual((body["from"], body["body"]), ("bob", "hello back"))
        web.ack_message(body["msgid"], "bob")
        # Receipts and recall reach the browser as they reach TCP clients.
        yield tcp.request(T.IM_RECALL, {"msgid": body["msgid"], "to": "alice"})
        _, recall = yield web.expect(T.IM_NOTIFY_RECALL)
        self.assertEqual(recall["msgid"], body["msgid"])

    @inlineCallbacks
    def test_missed_messages_pushed_after_auth_until_acknowledged(self):
        server = self.start_server()
        yield server.accounts.register("bob", "secret1")
        alice = yield self.user(server, "alice")
        for text in ("one", "two"):
            yield alice.send_message("bob", text)
        bob = yield self.ws_user(server, "bob", register=False)
        first = yield bob.expect(T.IM_MESSAGE)
        second = yield bob.expect(T.IM_MESSAGE)
        self.assertEqual([first[1]["body"], second[1]["body"]], ["one", "two"])
        # Only the first is acknowledged: the second comes again.
        bob.ack_message(first[1]["msgid"], "alice")
        yield bob.ping()
        yield bob.close()
        again = yield self.ws_user(server, "bob", register=False)
        _, body = yield again.expect(T.IM_MESSAGE)
        self.assertEqual(body["body"], "two")
        yield again.ping()
        self.assertEqual(again.take(T.IM_MESSAGE), [])

    @inlineCallbacks
    def test_bad_messages_before_auth_close(self):
        server = self.start_server()
        for text in ("garbage", "[1, 2]", '{"body": {}}', '{"msgtype": "65537", "body": {}}',
                     '{"msgtype": 65537, "body": []}', '{"msgtype": -1}', "\u00ff" * 70_000):
            client = yield self.ws(server)
            client.send_text(text)
            _, ack = yield client.expect(T.IM_MESSAGE_ACK)
            self.assertEqual(ack["code"], "protocol_error", text[:40])
            self.assertTrue(ack["err"])
            yield client.closed
        # The first frame must be IM_AUTH, as on TCP.
        client = yield self.ws(server)
        yield self.assertFailure(client.request(T.IM_PING, {}), ServerError)

    @inlineCallbacks
    def test_bad_messages_after_auth_answered_and_connection_kept(self):
        server = self.start_server()
        client = yield self.ws_user(server, "alice")
        for text in ("garbage", '{"msgtype": 1.5, "body": {}}', '{"msgtype": 196609, "body": "x"}'):
            client.send_text(text)
            _, ack = yield client.expect(T.IM_MESSAGE_ACK)
            self.assertEqual(ack["code"], "invalid_field", text)
        err = yield self.assertFailure(client.send_message("", "to nobody"), ServerError)
        self.assertEqual(err.code, "invalid_field")
        yield client.ping()
        client.transport.sendBytesMessage(b"\x00\x01")
        _, ack = yield client.expect(T.IM_MESSAGE_ACK)
        self.assertEqual(ack["code"], "protocol_error")
        yield client.closed

    @inlineCallbacks
    def test_message_growing_past_the_limit_closes(self):
        server = self.start_server(web={"max_message": 1000})
        client = yield self.ws_user(server, "alice")
        client.send_text(json.dumps({"msgtype": T.IM_MESSAGE, "body": {"to": "bob", "body": "x" * 5000}}))
        _, ack = yield client.expect(T.IM_MESSAGE_ACK)
        self.assertIn("over the limit of 1000 bytes", ack["err"])
        yield client.closed
        self.assertEqual(server.hub.session_counts(), {})

    @inlineCallbacks
    def test_foreign_origin_refused(self):
        server = self.start_server(web={"origins": "https://chat.example.com"})
        host, port = server.address("http")
        refused = yield self.raw(server, handshake(host, port, origin="https://evil.example"))
        answer = yield deferLater(reactor, 0.2, lambda: refused.received)
        self.assertTrue(answer.startswith(b"HTTP/1.1 403"), answer[:80])
        self.assertIn(b'"code":"forbidden"', answer)
        refused.transport.loseConnection()
        yield refused.closed
        for origin in (f"http://{host}:{port}", "https://chat.example.com", None):
            accepted = yield self.raw(server, handshake(host, port, origin=origin))
            answer = yield deferLater(reactor, 0.2, lambda: accepted.received)
            self.assertTrue(answer.startswith(b"HTTP/1.1 101"), (origin, answer[:80]))
            accepted.transport.loseConnection()
            yield accepted.closed

    @inlineCallbacks
    def test_unauthenticated_connections_per_address_capped(self):
        server = self.start_server(limits={"unauthenticated_per_address": 2})
        waiting = []
        for _ in range(2):
            waiting.append((yield self.ws(server)))
        host, port = server.address("http")
        refused = yield self.raw(server, handshake(host, port))
        answer = yield deferLater(reactor, 0.2, lambda: refused.received)
        self.assertTrue(answer.startswith(b"HTTP/1.1 429"), answer[:80])
        refused.transport.loseConnection()
        yield refused.closed
        # One authenticates: room for another.
        yield server.accounts.register("alice", "secret1")
        yield waiting[0].auth("alice", password="secret1")
        accepted = yield self.raw(server, handshake(host, port))
        answer = yield deferLater(reactor, 0.2, lambda: accepted.received)
        self.assertTrue(answer.startswith(b"HTTP/1.1 101"), answer[:80])
        accepted.transport.loseConnection()
        yield accepted.closed

    @inlineCallbacks
    def test_plain_get_is_a_clear_error(self):
        server = self.start_server()
        code, body, _ = yield self.http(server, "GET", "/ws")
        self.assertEqual(code, 400)
        self.assertIn("WebSocket handshake", body["err"])
        code, body, _ = yield self.http(server, "POST", "/ws", {})
        self.assertEqual(code, 405)

    @inlineCallbacks
    def test_unauthenticated_connection_closed_at_the_deadline(self):
        server = self.start_server(limits={"auth_timeout": 1})
        client = yield self.ws(server)
        _, ack = yield client.expect(T.IM_MESSAGE_ACK, timeout=5)
        self.assertEqual(ack["code"], "auth_timeout")
        yield client.closed


class SQLiteWebSocketTests(WebSocketTestsMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresWebSocketTests(WebSocketTestsMixin, PostgresBackend, unittest.TestCase):
    pass
