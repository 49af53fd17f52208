"""
The XMPP channel (seed 002) over real loopback TCP, with slixmpp as the
client, on each backend; interop with the seed-001 long connection and
the seed-004 socket; hostile streams.
"""

import base64
import os
import secrets
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from tests.support import REDIS_URL, LongConnTestMixin, PostgresBackend, SQLiteBackend, child_env, make_config, start_server
from tests.xmppclient import HEADER, SlixClient, connect_raw

ON = "tcp:0:interface=127.0.0.1"


def settle(seconds=0.05):
    return deferLater(reactor, seconds, lambda: None)


class XmppTestMixin(LongConnTestMixin):
    # Everything here takes well under a second: a lost stanza fails fast.
    timeout = 20

    def start_server(self, **sections):
        sections.setdefault("xmpp", {"endpoint": ON})
        return LongConnTestMixin.start_server(self, **sections)

    @inlineCallbacks
    def slix(self, server, uid, password="secret1", register=True, resource="slix", presence=True, tlim=False, **options):
        if register:
            yield server.accounts.register(uid, password)
        domain = server.config.xmpp.domain
        client = SlixClient(f"{uid}@{domain}/{resource}", password, **options)
        self.addCleanup(client.stop)
        host, port = server.address("xmpp")
        yield client.start(host, port, presence=presence, tlim=tlim)
        return client

    @inlineCallbacks
    def raw(self, server, header=True):
        client = yield connect_raw(*server.address("xmpp"))
        self.addCleanup(client.transport.loseConnection)
        if header:
            client.send(HEADER.format(domain=server.config.xmpp.domain))
            yield client.until(b"</stream:features>")
        return client

    @inlineCallbacks
    def friends(self, server, a, b):
        """Make C{a} (a long-connection client) and C{b} friends over the wire."""
        yield a.add_friend(b.uid, "hi")
        _, request = yield b.expect(T.IM_ROSTER_ADD_REQ)
        yield b.answer_friend(a.uid, request["msgid"], True)
        yield a.expect(T.IM_NOTIFY_ROSTER_ADD)


class ChatTestsMixin(XmppTestMixin):
    @inlineCallbacks
    def test_cli_user_logs_in_with_scram_sha1_gets_roster_and_chats_with_seed_001(self):
        url = self.database_url()
        self.database_url = lambda: url
        # Created the way an administrator does it, before the server runs.
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        for args in (("db", "upgrade"), ("user", "add", "rose", "--password", "secret1")):
            out, err, code = yield getProcessOutputAndValue(
                sys.executable,
                ("-m", "imd", *args),
                env=child_env(IMD_DATABASE_URL=url),
                path=cwd,
                reactor=reactor,
            )
            self.assertEqual(code, 0, err)
        server = self.start_server()
        jack = yield self.user(server, "jack")
        rose_lc = yield self.user(server, "rose", register=False, res="phone")
        yield self.friends(server, jack, rose_lc)
        yield rose_lc.close()
        rose = yield self.slix(server, "rose", register=False, sasl_mech="SCRAM-SHA-1")
        roster = yield rose.roster()
        self.assertEqual(roster["jack@localhost"]["subscription"], "both")
        self.assertEqual(roster["jack@localhost"]["groups"], ["我的好友"])
        yield jack.send_message("rose", "hello from seed 001", msgid="m1")
        msg = yield rose.next_message(lambda m: m["body"])
        self.assertEqual(str(msg["from"]), "jack@localhost/default")
        self.assertEqual((msg["body"], msg["id"], msg["type"]), ("hello from seed 001", "m1", "chat"))
        yield rose.send("jack@localhost", "hello from xmpp", id="x1")
        _, frame = yield jack.expect(T.IM_MESSAGE)
        self.assertEqual((frame["from"], frame["from_res"], frame["body"], frame["msgid"]), ("rose", "slix", "hello from xmpp", "x1"))

    @inlineCallbacks
    def test_scram_sha256_and_wrong_passwords(self):
        server = self.start_server()
        yield self.slix(server, "rose", sasl_mech="SCRAM-SHA-256")
        for uid, password in (("rose", "wrong!!"), ("nobody", "secret1")):
            client = SlixClient(f"{uid}@localhost/x", password, sasl_mech="SCRAM-SHA-1")
            self.addCleanup(client.stop)
            yield self.assertFailure(client.start(*server.address("xmpp")), AssertionError)
        self.assertEqual(len(server.hub.sessions("rose")), 1)

    @inlineCallbacks
    def test_offline_messages_after_initial_presence_once(self):
        server = self.start_server()
        jack = yield self.user(server, "jack")
        yield server.accounts.register("rose", "secret1")
        for i in range(3):
            ack = yield jack.send_message("rose", f"while away {i}", msgid=f"o{i}")
            self.assertEqual(ack["err"], "")
        rose = yield self.slix(server, "rose", register=False)
        bodies = yield rose.next_bodies(3)
        self.assertEqual(bodies, ["while away 0", "while away 1", "while away 2"])
        yield rose.stop()
        # Written to a client that cannot confirm them: received.
        pending = yield server.messages.pending("rose")
        self.assertEqual(pending, [])

    @inlineCallbacks
    def test_presence_and_roster_pushes(self):
        server = self.start_server()
        jack = yield self.user(server, "jack")
        rose = yield self.slix(server, "rose")
        yield jack.add_friend("rose", "hi")
        # A friend request reaches a stock client as a subscription request.
        presence = yield rose.presences.get()
        self.assertEqual((str(presence["from"]), presence["type"]), ("jack@localhost", "subscribe"))
        # slixmpp authorizes it (<presence type='subscribed'/>): the core's
        # acceptance, and the roster push (after slixmpp's own note of the
        # subscribe, maybe).
        roster = {}
        while roster.get("jack@localhost", {}).get("subscription") != "both":
            yield rose.expect_event("roster_update")
            roster = yield rose.roster()
        yield jack.presence("online", "away")
        presence = yield rose.presences.get()
        while presence["type"] == "subscribe":
            presence = yield rose.presences.get()
        self.assertEqual((str(presence["from"]), presence["type"]), ("jack@localhost/default", "away"))
        # rose's own presence reaches jack's long connection.
        yield rose.call(lambda: rose.xmpp.send_presence(pshow="dnd"))
        _, body = yield jack.expect(T.IM_PRESENCE, lambda b: b.get("from") == "rose" and b.get("show") == "dnd")
        self.assertEqual(body["from_res"], "slix")

    @inlineCallbacks
    def test_message_to_nobody_is_an_error_for_the_sender_only(self):
        server = self.start_server()
        rose = yield self.slix(server, "rose")
        yield rose.send("nobody@localhost", "hello?", id="n1")
        msg = yield rose.next_message()
        self.assertEqual((msg["type"], msg["id"], msg["error"]["condition"]), ("error", "n1", "item-not-found"))
        yield rose.send("jack@elsewhere.example", "hello?", id="n2")
        msg = yield rose.next_message()
        self.assertEqual((msg["type"], msg["id"]), ("error", "n2"))

    @inlineCallbacks
    def test_ping_disco_and_unknown_iq(self):
        server = self.start_server()
        rose = yield self.slix(server, "rose", plugins=("xep_0199", "xep_0030"))
        rtt = yield rose.call(lambda: rose.xmpp["xep_0199"].ping("localhost", timeout=5))
        self.assertGreaterEqual(rtt, 0)
        info = yield rose.call(lambda: rose.xmpp["xep_0030"].get_info(jid="localhost"))
        self.assertIn("urn:xmpp:ping", info["disco_info"]["features"])
        self.assertIn(("server", "im", None, "imd"), info["disco_info"]["identities"])

        def version():
            iq = rose.xmpp.make_iq_get(queryxmlns="jabber:iq:version", ito="localhost")
            return iq.send(timeout=5)

        from slixmpp.exceptions import IqError

        error = yield self.assertFailure(rose.call(version), IqError)
        self.assertEqual(error.condition, "service-unavailable")

    @inlineCallbacks
    def test_same_resource_again_replaces_the_older_stream(self):
        server = self.start_server()
        first = yield self.slix(server, "rose")
        second = yield self.slix(server, "rose", register=False)
        yield first.expect_event("disconnected", "stream_error")
        self.assertEqual(len(server.hub.sessions("rose")), 1)
        self.assertTrue(second.xmpp.is_connected())


class SQLiteChatTests(SQLiteBackend, ChatTestsMixin, unittest.TestCase):
    pass


class PostgresChatTests(PostgresBackend, ChatTestsMixin, unittest.TestCase):
    pass


class BadInputTestsMixin(XmppTestMixin):
    @inlineCallbacks
    def assertStreamError(self, server, payload, condition, header=True):
        """C{payload} ends that stream with C{condition}; a bystander chats on."""
        name = f"by{secrets.token_hex(3)}"
        bystander = yield self.slix(server, name, plugins=("xep_0199",))
        peer = yield self.user(server, f"lc{secrets.token_hex(3)}")
        client = yield self.raw(server, header=header)
        client.send(payload)
        received = yield client.closed
        self.assertIn(f"<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>".encode(), received)
        self.assertTrue(received.endswith(b"</stream:stream>"), received[-200:])
        yield peer.send_message(name, "still here")
        msg = yield bystander.next_message(lambda m: m["body"])
        self.assertEqual(msg["body"], "still here")
        yield bystander.call(lambda: bystander.xmpp["xep_0199"].ping("localhost", timeout=5))
        self.flushLoggedErrors()

    def test_malformed_xml(self):
        return self.assertStreamError(self.start_server(), b"<message><body>x</message>", "not-well-formed")

    def test_garbage_bytes(self):
        return self.assertStreamError(self.start_server(), os.urandom(64) + b"\xff<", "not-well-formed", header=False)

    def test_entity_expansion_bomb(self):
        bomb = (
            b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
            + b"".join(b"<!ENTITY lol%d '%s'>" % (i, b"&lol%d;" % (i - 1) * 10 if i else b"&lol;" * 10) for i in range(9))
            + b"]><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>&lol8;"
        )
        return self.assertStreamError(self.start_server(), bomb, "restricted-xml", header=False)

    def test_undeclared_entity_in_a_stanza(self):
        return self.assertStreamError(self.start_server(), b"<message>&lol;</message>", "not-well-formed")

    def test_deep_nesting(self):
        return self.assertStreamError(self.start_server(), b"<a>" * 1000, "policy-violation")

    def test_oversized_stanza(self):
        server = self.start_server(xmpp={"endpoint": ON, "max_stanza": 4096})
        return self.assertStreamError(server, b"<message><body>" + b"x" * 10_000, "policy-violation")

    def test_stanza_before_auth(self):
        return self.assertStreamError(self.start_server(), b"<message to='a@localhost'><body>x</body></message>", "not-authorized")

    def test_wrong_host(self):
        header = HEADER.format(domain="elsewhere.example")
        return self.assertStreamError(self.start_server(), header, "host-unknown", header=False)

    def test_not_a_stream(self):
        return self.assertStreamError(self.start_server(), b"<hello/>", "invalid-namespace", header=False)

    def test_comment_and_processing_instruction(self):
        server = self.start_server()
        d = self.assertStreamError(server, b"<!-- hi -->", "restricted-xml")
        d.addCallback(lambda _: self.assertStreamError(server, b"<?evil x?>", "restricted-xml"))
        return d

    @inlineCallbacks
    def test_wrong_scram_proof(self):
        server = self.start_server()
        yield server.accounts.register("rose", "secret1")
        client = yield self.raw(server)
        first = b"n,,n=rose,r=abcdefgh"
        client.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>{base64.b64encode(first).decode()}</auth>")
        received = yield client.until(b"</challenge>")
        challenge = received.split(b"<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>")[1].split(b"<")[0]
        server_first = base64.b64decode(challenge).decode()
        nonce = server_first.split(",")[0][2:]
        self.assertTrue(nonce.startswith("abcdefgh"))
        final = f"c=biws,r={nonce},p={base64.b64encode(b'0' * 20).decode()}"
        client.send(f"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{base64.b64encode(final.encode()).decode()}</response>")
        received = yield client.until(b"</failure>")
        self.assertIn(b"<not-authorized/>", received)
        # Still unauthenticated: a stanza now ends the stream.
        client.send("<message to='a@localhost'><body>x</body></message>")
        received = yield client.closed
        self.assertIn(b"<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", received)
        self.assertEqual(server.hub.sessions("rose"), [])

    @inlineCallbacks
    def test_a_silent_stream_times_out(self):
        server = self.start_server(xmpp={"endpoint": ON, "idle_timeout": 1})
        client = yield self.raw(server)
        received = yield client.closed
        self.assertIn(b"<connection-timeout xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", received)

    @inlineCallbacks
    def test_bad_sasl_messages(self):
        server = self.start_server()
        client = yield self.raw(server)
        for payload, condition in (
            ("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'>=</auth>", b"invalid-mechanism"),
            ("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>!!notbase64</auth>", b"incorrect-encoding"),
        ):
            client.send(payload)
            received = yield client.until(condition)
        # A third failure closes the stream.
        client.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>" + base64.b64encode(b"garbage").decode() + "</auth>")
        received = yield client.closed
        self.assertIn(b"malformed-request", received)
        # PLAIN is not offered on a plain-text stream.
        self.assertNotIn(b"<mechanism>PLAIN</mechanism>", received)


class SQLiteBadInputTests(SQLiteBackend, BadInputTestsMixin, unittest.TestCase):
    pass


class ClusterTests(PostgresBackend, XmppTestMixin, unittest.TestCase):
    """Two instances on one Postgres, linked by Redis: XMPP on one, seed 001 on the other."""

    if REDIS_URL is None:
        skip = "IMD_TEST_REDIS_URL is not set"

    @inlineCallbacks
    def test_xmpp_on_one_instance_chats_with_seed_001_on_another(self):
        from tests.test_cluster import _subscribed, eventually

        url = self.database_url()
        prefix = f"imdtest{secrets.token_hex(4)}"
        servers = []
        for i in range(2):
            config = make_config(
                url,
                longconn={"endpoint": ON},
                xmpp={"endpoint": ON},
                redis={"url": REDIS_URL, "prefix": prefix, "heartbeat": 1},
                instance={"id": f"node{i}"},
            )
            servers.append(start_server(self, config))
        a, b = servers
        yield eventually(lambda: all(s.hub.healthy for s in servers))
        rose = yield self.slix(a, "rose", sasl_mech="SCRAM-SHA-1")
        yield eventually(lambda: _subscribed(a, "rose"))
        jack = yield self.user(b, "jack")
        yield eventually(lambda: _subscribed(b, "jack"))
        yield jack.send_message("rose", "across instances", msgid="c1")
        msg = yield rose.next_message(lambda m: m["body"])
        self.assertEqual((str(msg["from"]), msg["body"]), ("jack@localhost/default", "across instances"))
        yield rose.send("jack@localhost", "and back", id="c2")
        _, frame = yield jack.expect(T.IM_MESSAGE)
        self.assertEqual((frame["from"], frame["body"]), ("rose", "and back"))


def self_signed(directory, host="localhost"):
    """A certificate for C{host} and its key, as PEM files in C{directory}."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(directory)
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


class TlsTestsMixin(XmppTestMixin):
    def tls_server(self, **xmpp):
        cert, key = self_signed(os.path.abspath(self.mktemp()))
        self.cert = cert
        return self.start_server(xmpp=dict({"endpoint": ON, "tls_cert": cert, "tls_key": key}, **xmpp))

    @inlineCallbacks
    def test_starttls_then_plain_with_password_and_with_token(self):
        server = self.tls_server(require_tls=True)
        jack = yield self.user(server, "jack")
        rose = yield self.slix(server, "rose", starttls=True, ca_file=self.cert, sasl_mech="PLAIN")
        yield jack.send_message("rose", "over tls", msgid="t1")
        msg = yield rose.next_message(lambda m: m["body"])
        self.assertEqual(msg["body"], "over tls")
        # PLAIN also takes a live token as the password.
        token = yield self.login(server, "jack", "secret1")
        other = yield self.slix(server, "jack", password=token, register=False, starttls=True, ca_file=self.cert, sasl_mech="PLAIN")
        self.assertTrue(other.xmpp.is_connected())

    @inlineCallbacks
    def test_require_tls_refuses_sasl_in_the_clear(self):
        server = self.tls_server(require_tls=True)
        client = yield self.raw(server)
        self.assertIn(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>", client.received)
        self.assertNotIn(b"<mechanisms", client.received)
        client.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>biwsbj1yb3NlLHI9YWJj</auth>")
        received = yield client.until(b"</failure>")
        self.assertIn(b"<encryption-required/>", received)

    @inlineCallbacks
    def test_bytes_after_starttls_are_not_read_into_the_new_stream(self):
        server = self.tls_server()
        client = yield self.raw(server)
        # A man in the middle appends a stanza after <starttls/>.
        client.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message to='x@localhost'><body>injected</body></message>")
        yield client.until(b"<proceed")
        yield settle(0.1)
        # Read as a stanza before authentication it would have ended the
        # stream (not-authorized); it was dropped, and the server waits for
        # the TLS handshake.
        refused = server.metrics.errors.labels("xmpp", "not-authorized")._value.get()
        self.assertEqual(refused, 0)
        self.assertFalse(client.closed.called)


class SQLiteTlsTests(SQLiteBackend, TlsTestsMixin, unittest.TestCase):
    pass


class SubscriptionTestsMixin(XmppTestMixin):
    @inlineCallbacks
    def test_subscribe_is_a_friend_request_and_roster_remove_ends_it(self):
        server = self.start_server()
        jack = yield self.user(server, "jack")
        rose = yield self.slix(server, "rose")
        yield rose.call(lambda: rose.xmpp.send_presence(pto="jack@localhost", ptype="subscribe", pstatus="rose here"))
        _, request = yield jack.expect(T.IM_ROSTER_ADD_REQ)
        self.assertEqual((request["from"], request["msg"]), ("rose", "rose here"))
        yield jack.answer_friend("rose", request["msgid"], True)
        roster = {}
        while roster.get("jack@localhost", {}).get("subscription") != "both":
            yield rose.expect_event("roster_update")
            roster = yield rose.roster()
        yield rose.call(lambda: rose.xmpp.update_roster("jack@localhost", name="Jacky"))
        friends = yield server.roster.friends("rose")
        self.assertEqual([(f.fid, f.remark) for f in friends], [("jack", "Jacky")])
        yield rose.call(lambda: rose.xmpp.del_roster_item("jack@localhost"))
        _, deleted = yield jack.expect(T.IM_NOTIFY_ROSTER_DEL)
        self.assertEqual(deleted, {"frd": "rose"})
        self.assertEqual((yield server.roster.friend_ids("rose")), [])


class SQLiteSubscriptionTests(SQLiteBackend, SubscriptionTestsMixin, unittest.TestCase):
    pass


class RefusalTestsMixin(XmppTestMixin):
    @inlineCallbacks
    def test_non_friend_and_non_member_are_refused_to_the_sender_alone(self):
        server = self.start_server(messages={"friends_only": True})
        jack = yield self.user(server, "jack")
        rose = yield self.slix(server, "rose")
        yield rose.send("jack@localhost", "not friends", id="f1")
        msg = yield rose.next_message(lambda m: m["type"] == "error")
        self.assertEqual((msg["id"], msg["error"]["condition"]), ("f1", "forbidden"))
        group = yield server.groups.create("jack", "jack's")
        yield rose.send(f"{group.gid}@localhost", "let me in", mtype="groupchat", id="g1")
        msg = yield rose.next_message(lambda m: m["type"] == "error")
        self.assertEqual((msg["id"], msg["error"]["condition"]), ("g1", "forbidden"))
        # Nothing reached jack, whose connection goes on; a member's groupchat does.
        yield server.store.groups.add_member(group.gid, "rose", 0, "", 0)
        yield rose.send(f"{group.gid}@localhost", "now a member", mtype="groupchat", id="g2")
        _, frame = yield jack.expect(T.IM_MESSAGE)
        self.assertEqual((frame["msgid"], frame["gid"], frame["body"]), ("g2", group.gid, "now a member"))
        self.assertEqual(jack.take(T.IM_MESSAGE), [])


class SQLiteRefusalTests(SQLiteBackend, RefusalTestsMixin, unittest.TestCase):
    pass


class PostgresRefusalTests(PostgresBackend, RefusalTestsMixin, unittest.TestCase):
    pass
