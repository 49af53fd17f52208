"""
The reads of a login, batched: what sessions missed (L{imd.store.missed})
and token lookups, many in one transaction, each answered with its own;
on each backend.
"""

from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial import unittest

from imd.store.missed import MissedQuery
from tests.support import PostgresBackend, SQLiteBackend
from tests.test_store import NOW, StoreMixin


class MissedStoreTestsMixin(StoreMixin):
    def setUp(self):
        self.transactions = []
        self.store = self.make_store(observer=lambda name, seconds, ok: self.transactions.append(name))

    @inlineCallbacks
    def missed_by_three(self):
        """bob: two offline messages and a group message; carol: a friend request, an invite, a notice; dave: nothing."""
        for uid in ("alice", "bob", "carol", "dave"):
            yield self.store.users.create(uid, None, NOW)
        for msgid in ("m1", "m2"):
            yield self.store.messages.send_direct("alice", "", "bob", msgid, "text", msgid, "", lambda: NOW)
        group = yield self.store.groups.create("g1", "team", "alice", 1, True, NOW)
        yield self.store.groups.add_member("g1", "bob", 0, "", NOW)
        yield self.store.messages.send_group("alice", "", group.gid, "g-1", "text", "hello", "", lambda: NOW)
        yield self.store.roster.add_request("r1", "alice", "carol", "hi", NOW)
        yield self.store.groups.add_invite("i1", "g1", "alice", "carol", "team", NOW)
        yield self.store.notices.add("alice", ["carol"], None, "notice", False, NOW, True)
        del self.transactions[:]

    @inlineCallbacks
    def test_logins_together_share_a_transaction_and_get_their_own(self):
        yield self.missed_by_three()
        bob, carol, dave, nobody = yield gatherResults(
            [self.store.missed.read(MissedQuery(uid, True, True, 500)) for uid in ("bob", "carol", "dave", "nobody")]
        )
        self.assertEqual([m.msgid for _, m in bob.direct], ["m1", "m2"])
        self.assertEqual([m.msgid for m in bob.group], ["g-1"])
        self.assertEqual((bob.requests, bob.invites, bob.notices), ([], [], []))
        self.assertEqual(([r.msgid for r in carol.requests], [i.msgid for i in carol.invites]), (["r1"], ["i1"]))
        self.assertEqual([n.body for n in carol.notices], ["notice"])
        self.assertEqual((carol.direct, carol.group), ([], []))
        for empty in (dave, nobody):
            self.assertEqual((empty.direct, empty.group, empty.requests, empty.invites, empty.notices), ([],) * 5)
        # The first read goes alone (nothing was waiting); the other three together.
        self.assertEqual(self.transactions, ["missed.read", "missed.read"])

    @inlineCallbacks
    def test_pages_and_parts(self):
        yield self.missed_by_three()
        first = yield self.store.missed.read(MissedQuery("bob", True, False, 1))
        self.assertEqual([m.msgid for _, m in first.direct], ["m1"])
        after = (first.group[-1].gid, first.group[-1].group_seq)
        second = yield self.store.missed.read(MissedQuery("bob", True, False, 1, first.direct[-1][0], after))
        self.assertEqual(([m.msgid for _, m in second.direct], second.group), (["m2"], []))
        others = yield self.store.missed.read(MissedQuery("carol", False, True, 500))
        self.assertEqual((len(others.requests), len(others.invites), len(others.notices)), (1, 1, 1))
        self.assertEqual(
            (yield self.store.missed.read(MissedQuery("bob", False, False, 500))).direct, []
        )

    @inlineCallbacks
    def test_token_lookups_together(self):
        for uid in ("alice", "bob"):
            yield self.store.users.create(uid, None, NOW)
        yield self.store.tokens.add("ha", "alice", 1, 10)
        yield self.store.tokens.add("hb", "bob", 2, 20)
        yield self.store.users.set_disabled("bob", True, NOW)
        del self.transactions[:]
        found = yield gatherResults([self.store.tokens.get(h) for h in ("ha", "unknown", "hb", "ha")])
        alice, unknown, bob, again = found
        self.assertEqual((alice.uid, alice.created_at, alice.expires_at, bool(alice.disabled)), ("alice", 1, 10, False))
        self.assertIsNone(unknown)
        self.assertEqual((bob.uid, bool(bob.disabled)), ("bob", True))
        self.assertEqual(again, alice)
        self.assertEqual(self.transactions, ["tokens.get", "tokens.get"])


class SQLiteMissedStoreTests(MissedStoreTestsMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresMissedStoreTests(MissedStoreTestsMixin, PostgresBackend, unittest.TestCase):
    pass
