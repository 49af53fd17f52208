"""Finding a user across designs: the core rule, then each wire over real sockets."""

import xml.etree.ElementTree as ET

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from imd.config import LimitsConfig
from imd.core.lookup import Card, LookupService
from imd.errors import InvalidField, RateLimited
from imd.hub.counters import MemoryCounters
from imd.store.store import Store
from tests.support import LongConnTestMixin, PostgresBackend, SQLiteBackend
from tests.test_methodapi import MethodApiTestsMixin
from tests.test_qid import QidTestsMixin, rows
from tests.test_socket import SocketClientMixin
from tests.test_xmpp import ON, XmppTestMixin

TEL = "13800000001"


class LookupRuleMixin:
    @inlineCallbacks
    def setUp(self):
        store = Store(self.database_url())
        store.migrate()
        store.start()
        self.addCleanup(store.stop)
        self.clock = Clock()
        self.lookup = LookupService(store, MemoryCounters(self.clock), LimitsConfig(lookups_per_minute=8))
        for uid, telephone, name in (("rose", TEL, "罗斯"), ("13800000002", None, "digits"),
                                     ("jack", "13800000002", "Jack"), ("gone", "13800000003", "")):
            yield store.users.create(uid, None, 0, telephone=telephone, name=name)
        yield store.users.set_disabled("gone", True, 0)

    @inlineCallbacks
    def test_exact_id_or_telephone(self):
        self.assertEqual((yield self.lookup.find("asker", "rose")), [Card("rose", "罗斯", "")])
        self.assertEqual((yield self.lookup.find("asker", f" {TEL} ")), [Card("rose", "罗斯", "")])
        # One user's id and another's telephone: both, each once.
        found = yield self.lookup.find("asker", "13800000002")
        self.assertEqual(sorted(c.uid for c in found), ["13800000002", "jack"])
        # Not a prefix, not another case, not a disabled account.
        for query in ("ros", "Rose", "1380000000", "13800000003", "gone"):
            self.assertEqual((yield self.lookup.find("asker", query)), [], query)

    @inlineCallbacks
    def test_the_card_never_holds_a_telephone(self):
        [card] = yield self.lookup.find("asker", "rose")
        self.assertEqual(set(vars(card)), {"uid", "name", "avatar"})

    @inlineCallbacks
    def test_patterns_and_garbage_are_refused(self):
        for query in (None, "", "   ", 13800000001, ["rose"], {"q": 1}, "ros*", "%", "a b", "x" * 51,
                      "rose'--", "<rose>", "\x00", "１３８"):
            yield self.assertFailure(self.lookup.find("asker", query), InvalidField)

    @inlineCallbacks
    def test_rate_per_user_and_minute(self):
        for _ in range(8):
            yield self.lookup.find("asker", "nobody")
        yield self.assertFailure(self.lookup.find("asker", "rose"), RateLimited)
        # Another user is not held back; the next minute starts afresh.
        self.assertEqual(len((yield self.lookup.find("other", "rose"))), 1)
        self.clock.advance(61)
        self.assertEqual(len((yield self.lookup.find("asker", "rose"))), 1)


class SQLiteLookupRuleTests(LookupRuleMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresLookupRuleTests(LookupRuleMixin, PostgresBackend, unittest.TestCase):
    pass


class LookupWireMixin(LongConnTestMixin):
    """A seed-001 user and a seed-004 user find each other and talk; XMPP searches too."""

    call = MethodApiTestsMixin.call
    envelope = MethodApiTestsMixin.envelope
    register_login = MethodApiTestsMixin.register_login
    socket = SocketClientMixin.socket
    qid = QidTestsMixin.qid
    slix = XmppTestMixin.slix

    def start_server(self, **sections):
        sections.setdefault("sms", {"required": False})
        sections.setdefault("socket", {"endpoint": ON})
        sections.setdefault("xmpp", {"endpoint": ON})
        return LongConnTestMixin.start_server(self, **sections)

    @inlineCallbacks
    def test_seed_001_and_seed_004_users_find_each_other_and_talk(self):
        server = self.start_server()
        # A seed-004 user: a generated id nobody knows, a telephone people do.
        rose_id, rose_token = yield self.register_login(server, TEL)
        rose = yield self.socket(server)
        yield rose.bind(rose_id, rose_token)
        alice = yield self.user(server, "alice")

        # Seed 001: QID_IM_FIND_USER by the telephone, then a message to the id.
        body = yield self.qid(server, alice.token, "QID_IM_FIND_USER", {"q": TEL})
        self.assertEqual(rows(body), [{"uid": rose_id, "name": "", "avatar": ""}])
        yield alice.send_message(rose_id, "found you", msgid="f1")
        push = yield rose.expect("sendmsg")
        self.assertEqual((push["from_user_id"], push["content"]), ("alice", "found you"))

        # Seed 004: com.user.findUser by the seed-001 user's id, then a reply.
        reply = yield self.call(server, "com.user.findUser", {"keyword": "alice"}, token=rose_token)
        self.assertEqual(reply, {"status": "1111", "data": [{"user_id": "alice", "name": "", "avatar": ""}]})
        yield rose.sendmsg("hello alice", to_user_id="alice")
        _, frame = yield alice.expect(T.IM_MESSAGE)
        self.assertEqual((frame["from"], frame["body"]), (rose_id, "hello alice"))

        # Exact only, a clear error for a pattern, nothing for a near miss.
        body = yield self.qid(server, alice.token, "QID_IM_FIND_USER", {"q": "1380000000*"}, expect=400)
        self.assertEqual(body["code"], "invalid_field")
        self.assertEqual(rows((yield self.qid(server, alice.token, "QID_IM_FIND_USER", {"q": TEL[:-1]}))), [])
        reply = yield self.call(server, "com.user.findUser", {"keyword": ["alice"]}, token=rose_token)
        self.assertEqual((reply["status"], reply["code"]), ("0000", "invalid_field"))
        reply = yield self.call(server, "com.user.findUser", {"keyword": "alice"})
        self.assertEqual(reply["status"], "0000")

    @inlineCallbacks
    def test_rate_limit_over_the_wire(self):
        server = self.start_server(limits={"lookups_per_minute": 2})
        alice = yield self.user(server, "alice")
        for _ in range(2):
            yield self.qid(server, alice.token, "QID_IM_FIND_USER", {"q": "nobody"})
        body = yield self.qid(server, alice.token, "QID_IM_FIND_USER", {"q": "nobody"}, expect=429)
        self.assertEqual(body["code"], "rate_limited")

    @inlineCallbacks
    def test_xmpp_jabber_iq_search(self):
        """XEP-0055 with slixmpp: the form, a data-form search, and the old simple form."""
        server = self.start_server()
        yield self.register_login(server, TEL)
        jack = yield self.slix(server, "jack", plugins=("xep_0004", "xep_0030", "xep_0055"))
        domain = server.config.xmpp.domain
        [rose] = yield server.lookup.find("test", TEL)

        def get_form():
            iq = jack.xmpp.make_iq_get(ito=domain)
            iq.enable("search")
            return iq.send()

        result = yield jack.call(get_form)
        form = result["search"]["form"]
        self.assertEqual((form["type"], set(form.get_fields())), ("form", {"FORM_TYPE", "q"}))

        def submit(value):
            iq = jack.xmpp.make_iq_set(ito=domain)
            form = iq["search"]["form"]
            form.set_type("submit")
            form.add_field("FORM_TYPE", ftype="hidden", value="jabber:iq:search")
            form.add_field("q", value=value)
            return iq.send()

        result = yield jack.call(lambda: submit(TEL))
        items = result["search"]["form"]["items"]
        self.assertEqual([(str(i["jid"]), i["name"]) for i in items], [(f"{rose.uid}@{domain}", "")])
        result = yield jack.call(lambda: submit("nobody"))
        self.assertEqual(result["search"]["form"]["items"], [])

        def simple(nick):
            iq = jack.xmpp.make_iq_set(ito=domain)
            ET.SubElement(iq["search"].xml, "{jabber:iq:search}nick").text = nick
            return iq.send()

        result = yield jack.call(lambda: simple(TEL))
        items = result["search"].xml.findall("{jabber:iq:search}item")
        self.assertEqual([i.get("jid") for i in items], [f"{rose.uid}@{domain}"])

        from slixmpp.exceptions import IqError

        error = yield self.assertFailure(jack.call(lambda: submit("13*")), IqError)
        self.assertEqual(error.condition, "bad-request")
        # The search is a feature of the server.
        info = yield jack.call(lambda: jack.xmpp["xep_0030"].get_info(jid=domain))
        self.assertIn("jabber:iq:search", info["disco_info"]["features"])


class SQLiteLookupWireTests(LookupWireMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresLookupWireTests(LookupWireMixin, PostgresBackend, unittest.TestCase):
    pass
