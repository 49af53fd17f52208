"""
XEP-0198 stream management: the server's h counts only what it handled
(committed), a message leaves offline only once the client's <a h>
covers it, and a stream killed with messages unacknowledged loses none
of them: they come again on resume, or at a fresh login after the
resume timeout.
"""

import base64
import re

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial import unittest

from imd.channels.xmpp.streams import MOD, StreamState
from tests.support import PostgresBackend, SQLiteBackend
from tests.test_xmpp import ON, XmppTestMixin
from tests.xmppclient import HEADER


class StreamStateTests(unittest.TestCase):
    def test_acks_cover_the_oldest_first(self):
        state = StreamState("rose", "r")
        for i in range(5):
            state.wrote({"msgid": f"m{i}"} if i % 2 == 0 else None)
        self.assertEqual(state.acked(2), [{"msgid": "m0"}])
        self.assertEqual(state.acked(2), [])
        self.assertEqual(state.acked(1), [])
        self.assertEqual(state.acked(5), [{"msgid": "m2"}, {"msgid": "m4"}])
        self.assertEqual(state.unacked, [])

    def test_too_high_or_garbage(self):
        state = StreamState("rose", "r")
        state.wrote(None)
        self.assertIsNone(state.acked(2))
        self.assertIsNone(state.acked(-1))
        self.assertIsNone(state.acked(MOD))

    def test_wraps_at_2_32(self):
        state = StreamState("rose", "r")
        state.sent = MOD - 2
        for i in range(4):
            state.wrote({"n": i})
        self.assertEqual(state.sent, 2)
        self.assertEqual(state.acked(MOD - 1), [{"n": 0}])
        self.assertEqual(state.acked(1), [{"n": 1}, {"n": 2}])
        state.handled = MOD - 1
        state.handled_one()
        self.assertEqual(state.handled, 0)


def wait(seconds):
    return deferLater(reactor, seconds, lambda: None)


class ManagedTestsMixin(XmppTestMixin):
    def start_server(self, **xmpp):
        return XmppTestMixin.start_server(self, xmpp=dict({"endpoint": ON, "plain_without_tls": True}, **xmpp))

    @inlineCallbacks
    def authenticated(self, server, uid):
        """A hand-driven stream after PLAIN and the restart."""
        client = yield self.raw(server)
        plain = base64.b64encode(f"\0{uid}\0secret1".encode()).decode()
        client.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>")
        yield client.until(b"<success")
        client.received = b""
        client.send(HEADER.format(domain="localhost"))
        yield client.until(b"</stream:features>")
        return client

    @inlineCallbacks
    def raw_login(self, server, uid, resource="raw", resume=None):
        """A hand-driven stream: PLAIN, then bind and enable (or resume C{(id, h)})."""
        client = yield self.authenticated(server, uid)
        if resume is not None:
            client.send(f"<resume xmlns='urn:xmpp:sm:3' previd='{resume[0]}' h='{resume[1]}'/>")
            yield client.until(b"<resumed")
            return client, resume[0]
        client.send(f"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>")
        yield client.until(b"</iq>")
        client.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        received = yield client.until(b"<enabled")
        sm_id = re.search(rb"<enabled xmlns='urn:xmpp:sm:3' id='(\w+)'", received).group(1).decode()
        client.send("<presence/>")
        return client, sm_id

    def bodies(self, received):
        # A message committed while the login's backlog is read may come
        # both in the backlog and live; clients drop the msgid they have.
        return list(dict.fromkeys(re.findall(rb"<body>([^<]*)</body>", received)))

    @inlineCallbacks
    def three_written(self, server, prefix):
        """rose on a managed raw stream, and three messages from jack written to it."""
        jack = yield self.user(server, "jack")
        yield server.accounts.register("rose", "secret1")
        rose, sm_id = yield self.raw_login(server, "rose")
        for i in range(3):
            yield jack.send_message("rose", f"{prefix}{i}", msgid=f"{prefix}{i}")
        yield rose.until(f"{prefix}2</body>".encode())
        return jack, rose, sm_id

    def handled_through(self, received, body):
        """
        The h of a client that handled what it received up to the last
        copy of C{body}: the stanzas written since <enabled/>.  Counted, not
        assumed: a message committed while the login's backlog is read
        comes twice, and each copy is a stanza.
        """
        start = received.index(b"<enabled")
        end = received.rindex(b">" + body + b"</body>")
        return len(re.findall(rb"<(?:message|presence|iq)[\s>/]", received[start:end]))

    @inlineCallbacks
    def unacked_then_killed(self, server):
        jack, rose, sm_id = yield self.three_written(server, "m")
        self.assertEqual(self.bodies(rose.received), [b"m0", b"m1", b"m2"])
        # The server asks; this client never answers.
        self.assertIn(b"<r xmlns='urn:xmpp:sm:3'/>", rose.received)
        rose.transport.abortConnection()
        yield rose.closed
        self.assertEqual(len((yield server.messages.pending("rose"))), 3)
        return jack, sm_id, rose.received

    @inlineCallbacks
    def test_resume_writes_again_what_was_not_acked(self):
        server = self.start_server()
        jack, sm_id, _ = yield self.unacked_then_killed(server)
        self.assertEqual(server.hub.sessions("rose"), [])
        # The client says it handled none of what followed <enable/>.
        rose, _ = yield self.raw_login(server, "rose", resume=(sm_id, 0))
        yield rose.until(b"m2</body>")
        self.assertEqual(self.bodies(rose.received), [b"m0", b"m1", b"m2"])
        self.assertEqual(len(server.hub.sessions("rose")), 1)
        # Acknowledged now: they leave offline, and nothing comes twice.
        rose.send("<a xmlns='urn:xmpp:sm:3' h='3'/>")
        rose.send("<r xmlns='urn:xmpp:sm:3'/>")
        yield rose.until(b"<a xmlns='urn:xmpp:sm:3' h=")
        self.assertEqual((yield server.messages.pending("rose")), [])

    @inlineCallbacks
    def test_resume_with_an_h_that_covers_some(self):
        server = self.start_server()
        _, sm_id, received = yield self.unacked_then_killed(server)
        # The client had handled two of the three before the stream died.
        rose, _ = yield self.raw_login(server, "rose", resume=(sm_id, self.handled_through(received, b"m1")))
        yield rose.until(b"m2</body>")
        self.assertEqual(self.bodies(rose.received), [b"m2"])
        pending = yield server.messages.pending("rose")
        self.assertEqual([e.data["msgid"] for e in pending], ["m2"])

    @inlineCallbacks
    def test_fresh_login_after_the_resume_timeout_gets_everything(self):
        server = self.start_server(resume_timeout=1)
        _, sm_id, _ = yield self.unacked_then_killed(server)
        yield wait(1.2)
        client = yield self.authenticated(server, "rose")
        self.assertIn(b"<sm xmlns='urn:xmpp:sm:3'/>", client.received)
        client.send(f"<resume xmlns='urn:xmpp:sm:3' previd='{sm_id}' h='0'/>")
        received = yield client.until(b"</failed>")
        self.assertIn(b"<item-not-found", received)
        client.transport.loseConnection()
        rose = yield self.slix(server, "rose", register=False)
        self.assertEqual((yield rose.next_bodies(3)), ["m0", "m1", "m2"])

    @inlineCallbacks
    def test_a_partial_ack_keeps_only_the_rest(self):
        server = self.start_server()
        _, rose, sm_id = yield self.three_written(server, "p")
        h = self.handled_through(rose.received, b"p0")
        rose.send(f"<a xmlns='urn:xmpp:sm:3' h='{h}'/><r xmlns='urn:xmpp:sm:3'/>")
        yield rose.until(b"<a xmlns='urn:xmpp:sm:3' h=")
        rose.transport.abortConnection()
        yield rose.closed
        pending = yield server.messages.pending("rose")
        self.assertEqual([e.data["msgid"] for e in pending], ["p1", "p2"])
        rose, _ = yield self.raw_login(server, "rose", resume=(sm_id, h))
        yield rose.until(b"p2</body>")
        self.assertEqual(self.bodies(rose.received), [b"p1", b"p2"])

    @inlineCallbacks
    def test_h_counts_handled_stanzas_and_a_wrong_h_ends_the_stream(self):
        server = self.start_server()
        yield server.accounts.register("jack", "secret1")
        rose, _ = yield self.raw_login(server, "jack")
        rose.send("<message to='jack@localhost' id='h1' type='chat'><body>to self</body></message>")
        rose.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq><r xmlns='urn:xmpp:sm:3'/>")
        received = yield rose.until(b"<a xmlns='urn:xmpp:sm:3' h=")
        # presence, message, iq: three handled, the message committed.
        self.assertIn(b"<a xmlns='urn:xmpp:sm:3' h='3'/>", received)
        message = yield server.store.messages.get("jack", "h1")
        self.assertEqual(message.body, "to self")
        rose.send("<a xmlns='urn:xmpp:sm:3' h='999'/>")
        received = yield rose.closed
        self.assertIn(b"<undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", received)

    @inlineCallbacks
    def test_slixmpp_with_stream_management(self):
        server = self.start_server()
        jack = yield self.user(server, "jack")
        rose = yield self.slix(server, "rose", plugins=("xep_0198",))
        for _ in range(50):
            if server.hub.sessions("rose")[0].protocol.sm is not None:
                break
            yield wait(0.02)
        self.assertIsNotNone(server.hub.sessions("rose")[0].protocol.sm)
        yield jack.send_message("rose", "managed", msgid="sm1")
        msg = yield rose.next_message(lambda m: m["body"])
        self.assertEqual(msg["body"], "managed")
        # slixmpp answers the server's <r/>; then the message is received.
        for _ in range(100):
            if not (yield server.messages.pending("rose")):
                break
            yield wait(0.02)
        self.assertEqual((yield server.messages.pending("rose")), [])


class SQLiteManagedTests(SQLiteBackend, ManagedTestsMixin, unittest.TestCase):
    pass


class PostgresManagedTests(PostgresBackend, ManagedTestsMixin, unittest.TestCase):
    pass
