"""SCRAM keys (RFC 5802): derived, stored beside the password hash, and checked."""

import base64
import hashlib
import hmac

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.core import scram
from tests.support import PostgresBackend, ServerTestMixin, SQLiteBackend


class DeriveTests(unittest.TestCase):
    def test_rfc5802_example(self):
        # RFC 5802 section 5: user "user", password "pencil".
        salt = base64.b64decode("QSXCR+Q6sek8bf92")
        keys = scram.derive("SCRAM-SHA-1", "pencil", 4096, salt)
        auth = (
            b"n=user,r=fyko+d2lbbFgONRv9qkxdawL,"
            b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096,"
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j"
        )
        proof = base64.b64decode("v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
        self.assertTrue(scram.proof_ok(keys, auth, proof))
        self.assertEqual(base64.b64encode(scram.server_signature(keys, auth)), b"rmF9pqV8S7suAoZWja4dJRkFsKQ=")

    def test_rfc7677_example(self):
        salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
        keys = scram.derive("SCRAM-SHA-256", "pencil", 4096, salt)
        auth = (
            b"n=user,r=rOprNGfwEbeRWgbNEkqO,"
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
        )
        proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
        self.assertTrue(scram.proof_ok(keys, auth, proof))
        self.assertEqual(
            base64.b64encode(scram.server_signature(keys, auth)), b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        )

    def test_wrong_proofs(self):
        keys = scram.derive("SCRAM-SHA-1", "pencil", 4096)
        self.assertFalse(scram.proof_ok(keys, b"msg", b"\0" * 20))
        self.assertFalse(scram.proof_ok(keys, b"msg", b""))
        self.assertFalse(scram.proof_ok(keys, b"msg", b"\0" * 200))
        # The right proof for another password.
        other = scram.derive("SCRAM-SHA-1", "crayon", 4096, keys.salt)
        salted = hashlib.pbkdf2_hmac("sha1", b"crayon", keys.salt, 4096)
        client_key = hmac.digest(salted, b"Client Key", "sha1")
        signature = hmac.digest(other.stored_key, b"msg", "sha1")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.assertTrue(scram.proof_ok(other, b"msg", proof))
        self.assertFalse(scram.proof_ok(keys, b"msg", proof))

    def test_round_trip_through_store_form(self):
        keys = scram.derive("SCRAM-SHA-256", "pencil", 4096)
        self.assertEqual(scram.decode(scram.encode(keys)), keys)


class StoredKeysMixin(ServerTestMixin):
    @inlineCallbacks
    def test_keys_follow_the_password(self):
        server = self.start_server()
        accounts = server.accounts
        yield accounts.register("alice", "secret1")
        first = yield accounts.scram_keys("alice", "SCRAM-SHA-1")
        self.assertEqual(first.iterations, 4096)
        self.assertEqual(first, scram.derive("SCRAM-SHA-1", "secret1", 4096, first.salt))
        sha256 = yield accounts.scram_keys("alice", "SCRAM-SHA-256")
        self.assertEqual(sha256, scram.derive("SCRAM-SHA-256", "secret1", 4096, sha256.salt))
        yield accounts.set_password("alice", "secret2")
        second = yield accounts.scram_keys("alice", "SCRAM-SHA-1")
        self.assertEqual(second, scram.derive("SCRAM-SHA-1", "secret2", 4096, second.salt))
        self.assertIsNone((yield accounts.scram_keys("alice", "SCRAM-MD5")))
        self.assertIsNone((yield accounts.scram_keys("nobody", "SCRAM-SHA-1")))
        self.assertIsNone((yield accounts.scram_keys("bad uid!", "SCRAM-SHA-1")))

    @inlineCallbacks
    def test_an_older_account_gets_keys_at_its_next_login(self):
        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        yield server.store.users.set_scram_keys("alice", [])
        self.assertIsNone((yield server.accounts.scram_keys("alice", "SCRAM-SHA-1")))
        yield self.assertFailure(server.accounts.login("alice", "wrong!!"), Exception)
        self.assertIsNone((yield server.accounts.scram_keys("alice", "SCRAM-SHA-1")))
        yield self.login(server, "alice", "secret1")
        keys = yield server.accounts.scram_keys("alice", "SCRAM-SHA-1")
        self.assertEqual(keys, scram.derive("SCRAM-SHA-1", "secret1", 4096, keys.salt))

    @inlineCallbacks
    def test_a_disabled_account_has_none(self):
        from imd.store import schema as s
        from sqlalchemy import update

        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        yield server.store.db.run("disable", lambda conn: conn.execute(update(s.users).values(disabled=True)))
        self.assertIsNone((yield server.accounts.scram_keys("alice", "SCRAM-SHA-1")))


class SQLiteStoredKeysTests(SQLiteBackend, StoredKeysMixin, unittest.TestCase):
    pass


class PostgresStoredKeysTests(PostgresBackend, StoredKeysMixin, unittest.TestCase):
    pass
