"""
Seed 002's tlim envelope over real XMPP streams (slixmpp), with the
seed-001 long connection and the seed-004 socket on the other side; and
the standard elements (XEP-0184, XEP-0333, XEP-0424) of stock clients.
"""

import uuid

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from imd.channels.methodapi.client import connect_socket
from tests.support import PostgresBackend, SQLiteBackend
from tests.test_xmpp import ON, XmppTestMixin, settle
from tests.xmppclient import envelope

HEADER = {"compress": "0", "encode": "1", "encrypt": "0", "version": "2.0.0"}


def doc(msg_type, body, frm="rose", to=None, msg_id=None, **extra):
    d = dict(HEADER, **{"from": frm, "msg_id": msg_id or str(uuid.uuid4()), "msg_type": msg_type, "msg_time": "1599218283837", "body": body})
    if to is not None:
        d["to"] = to
    d.update(extra)
    return d


def is_tlim(msg):
    return msg.xml.find("{im.itonglian.com}tlim") is not None


class TlimTestsMixin(XmppTestMixin):
    @inlineCallbacks
    def socket_user(self, server, uid):
        yield server.accounts.register(uid, "secret1")
        token = yield self.login(server, uid, "secret1")
        client = yield connect_socket(reactor, *server.address("socket"))
        self.addCleanup(client.close)
        yield client.bind(uid, token)
        return client

    def start_server(self, **sections):
        sections.setdefault("socket", {"endpoint": ON})
        return XmppTestMixin.start_server(self, **sections)

    @inlineCallbacks
    def test_one_to_one_every_kind_with_seed_001_and_seed_004(self):
        server = self.start_server()
        jack = yield self.user(server, "jack")
        tom = yield self.socket_user(server, "tom")
        rose = yield self.slix(server, "rose", tlim=True)
        kinds = (("MTT-000", {"text": "hello,world"}, "text", "hello,world"),) + tuple(
            (f"MTT-00{i}", {"file_id": f"f{i}"}, kind, f"f{i}") for i, kind in ((1, "image"), (2, "file"), (3, "voice"))
        )
        for msg_type, item, kind, content in kinds:
            yield rose.send_envelope("jack@localhost", doc(msg_type, [item], to="jack", msg_id=f"id-{msg_type}"))
            _, frame = yield jack.expect(T.IM_MESSAGE)
            self.assertEqual((frame["msgid"], frame["kind"], frame["body"], frame["from"]), (f"id-{msg_type}", kind, content, "rose"))
        # msg_to (the reference plugin's later name), and to the socket user.
        yield rose.send_envelope("tom@localhost", doc("MTT-000", [{"text": "to seed 004"}], msg_to="tom", msg_id="t1"))
        push = yield tom.expect("sendmsg")
        self.assertEqual((push["from_user_id"], push["content"], push["msgid"]), ("rose", "to seed 004", "t1"))
        # And back: both arrive as envelopes.
        yield jack.send_message("rose", "from 001", msgid="j1", kind="image")
        msg = yield rose.next_message(is_tlim)
        got = envelope(msg)
        self.assertEqual(
            (got["msg_type"], got["msg_id"], got["from"], got["to"], got["body"]), ("MTT-001", "j1", "jack", "rose", [{"file_id": "from 001"}])
        )
        self.assertEqual({k: got[k] for k in HEADER}, HEADER)
        yield tom.sendmsg("from 004", to_user_id="rose")
        msg = yield rose.next_message(is_tlim)
        got = envelope(msg)
        self.assertEqual((got["msg_type"], got["from"], got["body"]), ("MTT-000", "tom", [{"text": "from 004"}]))

    @inlineCallbacks
    def test_group_sessions_every_kind(self):
        server = self.start_server()
        jack = yield self.user(server, "jack")
        tom = yield self.socket_user(server, "tom")
        rose = yield self.slix(server, "rose", tlim=True)
        group = yield server.groups.create("rose", "team")
        for uid in ("jack", "tom"):
            yield server.store.groups.add_member(group.gid, uid, 0, "", 0)
        gid = group.gid
        sends = [("MTS-000", {"text": "hi all"}, "text", "hi all")]
        sends += [(f"MTS-00{i}", {"file_id": f"g{i}"}, kind, f"g{i}") for i, kind in ((1, "image"), (2, "file"), (3, "voice"))]
        for msg_type, item, kind, content in sends:
            # Addressed to the domain, as the seed's clients may.
            yield rose.send_envelope("localhost", doc(msg_type, [dict(item, session_id=gid)], msg_id=f"g-{msg_type}"))
            _, frame = yield jack.expect(T.IM_MESSAGE)
            self.assertEqual((frame["gid"], frame["kind"], frame["body"]), (gid, kind, content))
            push = yield tom.expect("sendmsg")
            self.assertEqual((push["to_group_id"], push["content"]), (gid, content))
        todo = {"session_id": gid, "title": "review", "due": "1599218283837"}
        yield rose.send_envelope(f"{gid}@localhost", doc("MTS-004", [todo], msg_id="todo1"), mtype="groupchat")
        _, frame = yield jack.expect(T.IM_MESSAGE)
        self.assertEqual(frame["kind"], "custom")
        yield jack.send_message(None, "from 001", gid=gid, msgid="gj1")
        msg = yield rose.next_message(is_tlim)
        got = envelope(msg)
        self.assertEqual((msg["type"], str(msg["from"])), ("groupchat", f"{gid}@localhost/jack"))
        self.assertEqual((got["msg_type"], got["to"], got["body"]), ("MTS-000", gid, [{"session_id": gid, "text": "from 001"}]))
        # A tlim member gets a to-do as it was sent.
        lily = yield self.slix(server, "lily", tlim=True)
        yield server.store.groups.add_member(gid, "lily", 0, "", 0)
        yield rose.send_envelope("localhost", doc("MTS-004", [todo], msg_id="todo2"))
        msg = yield lily.next_message(lambda m: is_tlim(m) and envelope(m)["msg_id"] == "todo2")
        self.assertEqual(envelope(msg)["body"], [todo])

    @inlineCallbacks
    def test_receipts_and_recall_both_ways(self):
        server = self.start_server()
        jack = yield self.user(server, "jack")
        rose = yield self.slix(server, "rose", tlim=True)
        yield jack.send_message("rose", "read me", msgid="r1")
        yield rose.next_message(is_tlim)
        # MTC-000: delivered, and the message leaves rose's offline messages.
        yield rose.send_envelope("jack@localhost", doc("MTC-000", [{"msg_id": "r1"}], to="jack"))
        _, receipt = yield jack.expect(T.IM_NOTIFY_RECEIPT)
        self.assertEqual((receipt["msgid"], receipt["from"], receipt["kind"]), ("r1", "rose", "delivered"))
        self.assertEqual((yield server.messages.pending("rose")), [])
        yield rose.send_envelope("jack@localhost", doc("MTC-001", [{"msg_id": "r1"}], to="jack"))
        _, receipt = yield jack.expect(T.IM_NOTIFY_RECEIPT)
        self.assertEqual(receipt["kind"], "read")
        # Group read receipt.
        group = yield server.groups.create("jack", "team")
        yield server.store.groups.add_member(group.gid, "rose", 0, "", 0)
        yield jack.send_message(None, "group read me", gid=group.gid, msgid="gr1")
        yield rose.next_message(is_tlim)
        yield rose.send_envelope("localhost", doc("MTC-001", [{"msg_id": "gr1", "session_id": group.gid}]))
        _, receipt = yield jack.expect(T.IM_NOTIFY_RECEIPT)
        self.assertEqual((receipt["msgid"], receipt["gid"], receipt["kind"]), ("gr1", group.gid, "read"))
        # MTC-002: rose recalls her own message.
        yield rose.send_envelope("jack@localhost", doc("MTT-000", [{"text": "oops"}], to="jack", msg_id="oops1"))
        yield jack.expect(T.IM_MESSAGE)
        yield rose.send_envelope("jack@localhost", doc("MTC-002", [{"msg_id": "oops1"}], to="jack"))
        _, recall = yield jack.expect(T.IM_NOTIFY_RECALL)
        self.assertEqual((recall["msgid"], recall["from"], recall["to"]), ("oops1", "rose", "jack"))
        # The other way: jack's receipt and recall reach rose as envelopes.
        yield jack.receipt("oops1", to="rose")
        msg = yield rose.next_message(lambda m: is_tlim(m) and envelope(m)["msg_type"] == "MTC-001")
        got = envelope(msg)
        self.assertEqual((got["from"], got["to"], got["body"]), ("jack", "rose", [{"msg_id": "oops1"}]))
        yield jack.send_message("rose", "take back", msgid="tb1")
        yield jack.recall("tb1", to="rose")
        msg = yield rose.next_message(lambda m: is_tlim(m) and envelope(m)["msg_type"] == "MTC-002")
        self.assertEqual(envelope(msg)["body"], [{"msg_id": "tb1"}])

    @inlineCallbacks
    def test_a_recall_reaches_a_seed_004_socket_user(self):
        server = self.start_server()
        tom = yield self.socket_user(server, "tom")
        rose = yield self.slix(server, "rose", tlim=True)
        yield rose.send_envelope("tom@localhost", doc("MTT-000", [{"text": "oops"}], to="tom", msg_id="so1"))
        push = yield tom.expect("sendmsg")
        self.assertEqual(push["msgid"], "so1")
        yield rose.send_envelope("tom@localhost", doc("MTC-002", [{"msg_id": "so1"}], to="tom"))
        push = yield tom.expect("recall")
        self.assertEqual((push["msgid"], push["from_user_id"]), ("so1", "rose"))

    @inlineCallbacks
    def test_recall_window_is_enforced(self):
        server = self.start_server(messages={"recall_window": 0})
        yield server.accounts.register("jack", "secret1")
        rose = yield self.slix(server, "rose", tlim=True)
        yield rose.send_envelope("jack@localhost", doc("MTT-000", [{"text": "late"}], to="jack", msg_id="late1"))
        yield settle(0.02)
        yield rose.send_envelope("jack@localhost", doc("MTC-002", [{"msg_id": "late1"}], to="jack"), id="rc1")
        msg = yield rose.next_message(lambda m: m["type"] == "error")
        self.assertEqual((msg["id"], msg["error"]["condition"]), ("rc1", "forbidden"))

    @inlineCallbacks
    def test_every_envelope_error_code(self):
        server = self.start_server()
        yield server.accounts.register("jack", "secret1")
        rose = yield self.slix(server, "rose", tlim=True)
        bystander = yield self.user(server, "tom")
        cases = [
            ("error-005", "{not json"),
            ("error-005", "[1, 2]"),
            ("error-001", doc(None, [{"text": "x"}], to="jack")),
            ("error-001", doc("MTT-999", [{"text": "x"}], to="jack")),
            ("error-001", doc("HTS-000", [{"text": "x"}], to="jack")),
            ("error-006", doc("MTT-000", {"text": "x"}, to="jack")),
            ("error-006", doc("MTT-000", "not an array", to="jack")),
            ("error-000", doc("MTT-000", [], to="jack")),
            ("error-000", doc("MTT-000", [{"nothing": "x"}], to="jack")),
            ("error-000", doc("MTC-000", [{"session_id": "g"}], to="jack")),
            ("error-007", doc("MTS-000", [{"text": "x"}])),
            ("error-004", doc("MTT-000", [{"text": "x"}])),
        ]
        for i, (code, bad) in enumerate(cases):
            if isinstance(bad, dict) and bad["msg_type"] is None:
                del bad["msg_type"]
            # error-004: no to in the envelope and none on the stanza.
            to = "localhost" if code == "error-004" else "jack@localhost"
            yield rose.send_envelope(to, bad, id=f"e{i}")
            msg = yield rose.next_message(lambda m: m["type"] == "error")
            self.assertEqual((msg["id"], msg["body"], msg["error"]["condition"]), (f"e{i}", code, "bad-request"), bad)
            self.assertTrue(is_tlim(msg))
        # Nobody else noticed, and the stream goes on.
        yield bystander.ping()
        yield rose.send_envelope("tom@localhost", doc("MTT-000", [{"text": "fine"}], to="tom"))
        _, frame = yield bystander.expect(T.IM_MESSAGE)
        self.assertEqual(frame["body"], "fine")


class SQLiteTlimTests(SQLiteBackend, TlimTestsMixin, unittest.TestCase):
    pass


class PostgresTlimTests(PostgresBackend, TlimTestsMixin, unittest.TestCase):
    pass


class StockTestsMixin(XmppTestMixin):
    def extra(self, uri, name, msgid):
        from xml.etree import ElementTree

        return lambda msg: msg.xml.append(ElementTree.Element(f"{{{uri}}}{name}", id=msgid))

    @inlineCallbacks
    def test_xep_0184_0333_and_0424_map_to_core_receipts_and_recall(self):
        server = self.start_server()
        jack = yield self.user(server, "jack")
        rose = yield self.slix(server, "rose")
        yield jack.send_message("rose", "hello", msgid="s1")
        msg = yield rose.next_message(lambda m: m["body"])
        self.assertIsNotNone(msg.xml.find("{urn:xmpp:receipts}request"))
        yield rose.send("jack@localhost", None, extra=self.extra("urn:xmpp:receipts", "received", "s1"))
        _, receipt = yield jack.expect(T.IM_NOTIFY_RECEIPT)
        self.assertEqual((receipt["msgid"], receipt["kind"]), ("s1", "delivered"))
        yield rose.send("jack@localhost", None, extra=self.extra("urn:xmpp:chat-markers:0", "displayed", "s1"))
        _, receipt = yield jack.expect(T.IM_NOTIFY_RECEIPT)
        self.assertEqual((receipt["msgid"], receipt["kind"]), ("s1", "read"))
        yield rose.send("jack@localhost", "mistake", id="s2")
        yield jack.expect(T.IM_MESSAGE)
        yield rose.send("jack@localhost", None, extra=self.extra("urn:xmpp:message-retract:1", "retract", "s2"))
        _, recall = yield jack.expect(T.IM_NOTIFY_RECALL)
        self.assertEqual(recall["msgid"], "s2")
        # And the other way.
        yield jack.receipt("s2", to="rose", kind="delivered")
        msg = yield rose.next_message(lambda m: m.xml.find("{urn:xmpp:receipts}received") is not None)
        self.assertEqual(msg.xml.find("{urn:xmpp:receipts}received").get("id"), "s2")
        yield jack.receipt("s2", to="rose")
        msg = yield rose.next_message(lambda m: m.xml.find("{urn:xmpp:chat-markers:0}displayed") is not None)
        self.assertEqual(str(msg["from"]), "jack@localhost")
        yield jack.send_message("rose", "undo", msgid="s3")
        yield rose.next_message(lambda m: m["body"] == "undo")
        yield jack.recall("s3", to="rose")
        msg = yield rose.next_message(lambda m: m.xml.find("{urn:xmpp:message-retract:1}retract") is not None)
        self.assertEqual(msg.xml.find("{urn:xmpp:message-retract:1}retract").get("id"), "s3")


class SQLiteStockTests(SQLiteBackend, StockTestsMixin, unittest.TestCase):
    pass


class CarbonsTestsMixin(XmppTestMixin):
    @inlineCallbacks
    def test_xep_0280_copies_of_what_the_user_sends_elsewhere(self):
        server = self.start_server()
        jack = yield self.user(server, "jack")
        phone = yield self.slix(server, "rose", resource="phone")
        desk = yield self.slix(server, "rose", register=False, resource="desk", plugins=("xep_0280",))
        yield desk.call(lambda: desk.xmpp["xep_0280"].enable())
        sent = []
        yield desk.call(lambda: desk.xmpp.add_event_handler("carbon_sent", lambda m: reactor.callFromThread(desk.events.put, ("sent", m))))
        rose_lc = yield self.user(server, "rose", register=False, res="lc")
        yield phone.send("jack@localhost", "from the phone", id="c1")
        yield rose_lc.send_message("jack", "from the long connection", msgid="c2")
        for _ in range(2):
            event = yield desk.events.get()
            while not isinstance(event, tuple):
                event = yield desk.events.get()
            carbon = event[1]["carbon_sent"]
            sent.append((carbon["id"], carbon["from"].resource, carbon["body"]))
            self.assertEqual(str(carbon["to"]), "jack@localhost")
        # Two senders: either may be committed first.
        self.assertEqual(sorted(sent), [("c1", "phone", "from the phone"), ("c2", "lc", "from the long connection")])
        # phone did not ask for carbons: it sees only what is addressed to it.
        yield jack.send_message("rose", "to every resource", msgid="c3")
        msg = yield phone.next_message(lambda m: m["body"])
        self.assertEqual(msg["body"], "to every resource")
        # A tlim session gets the envelope of what its user sent elsewhere.
        tl = yield self.slix(server, "rose", register=False, resource="tl", tlim=True)
        yield rose_lc.send_message("jack", "seen by tlim", msgid="c4")
        msg = yield tl.next_message(lambda m: is_tlim(m) and envelope(m)["msg_id"] == "c4")
        self.assertEqual((envelope(msg)["from"], envelope(msg)["to"], str(msg["from"])), ("rose", "jack", "rose@localhost/lc"))


class SQLiteCarbonsTests(SQLiteBackend, CarbonsTestsMixin, unittest.TestCase):
    pass
