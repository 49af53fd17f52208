"""Claims in the database, on SQLite and Postgres."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial import unittest

from imd.store.store import Store
from tests.support import PostgresBackend, SQLiteBackend


class ClaimsMixin:
    def setUp(self):
        self.store = Store(self.database_url(), reactor=reactor)
        self.store.migrate()
        self.store.start()
        self.addCleanup(self.store.stop)

    @inlineCallbacks
    def test_once_until_it_expires(self):
        claims = self.store.claims
        self.assertTrue((yield claims.claim("a", 1000, 2000)))
        self.assertFalse((yield claims.claim("a", 1999, 3000)))
        self.assertTrue((yield claims.claim("b", 1999, 3000)))
        # Expired: free again, and taken anew.
        self.assertTrue((yield claims.claim("a", 2000, 4000)))
        self.assertFalse((yield claims.claim("a", 3999, 5000)))

    @inlineCallbacks
    def test_concurrent_claims_one_wins(self):
        results = yield gatherResults([self.store.claims.claim("same", 1, 100) for _ in range(10)])
        self.assertEqual(sorted(results), [False] * 9 + [True])

    @inlineCallbacks
    def test_purge(self):
        claims = self.store.claims
        for name, expires in (("a", 10), ("b", 20), ("c", 30)):
            yield claims.claim(name, 0, expires)
        self.assertEqual((yield claims.purge_expired(20)), 2)
        self.assertFalse((yield claims.claim("c", 25, 50)))


class SQLiteClaimsTests(ClaimsMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresClaimsTests(ClaimsMixin, PostgresBackend, unittest.TestCase):
    pass
