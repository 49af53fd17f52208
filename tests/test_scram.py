"""SCRAM keys (RFC 5802): derived, stored beside the password hash, and checked."""

import base64
import hashlib
import hmac

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.core import scram
from tests.support import PostgresBackend, ServerTestMixin, SQLiteBackend


class DeriveTests(unittest.TestCase):
    # (mechanism, salt, client nonce, server nonce part, proof, server signature) of
    # RFC 5802 section 5 and RFC 7677 section 3: user "user", password "pencil".
    VECTORS = (
        ("SCRAM-SHA-1", "QSXCR+Q6sek8bf92", "fyko+d2lbbFgONRv9qkxdawL", "3rfcNHYJY1ZVvWVs7j",
         "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", "rmF9pqV8S7suAoZWja4dJRkFsKQ="),
        ("SCRAM-SHA-256", "W22ZaJ0SNY7soEsUEjb6gQ==", "rOprNGfwEbeRWgbNEkqO", "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
         "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
    )

    def test_rfc_examples(self):
        for mechanism, salt, cnonce, snonce, proof, signature in self.VECTORS:
            keys = scram.derive(mechanism, "pencil", 4096, base64.b64decode(salt))
            nonce = cnonce + snonce
            auth = f"n=user,r={cnonce},r={nonce},s={salt},i=4096,c=biws,r={nonce}".encode()
            self.assertTrue(scram.proof_ok(keys, auth, base64.b64decode(proof)))
            self.assertEqual(base64.b64encode(scram.server_signature(keys, auth)).decode(), signature)

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
    def test_keys_follow_a_permanent_token(self):
        # A business server's account logs in over XMPP with SCRAM and its token.
        accounts = self.start_server().accounts
        _, token = yield accounts.register_with_token("alice")
        keys = yield accounts.scram_keys("alice", "SCRAM-SHA-1")
        self.assertEqual(keys, scram.derive("SCRAM-SHA-1", token, 4096, keys.salt))
        token = yield accounts.replace_token("alice", "another-token")
        keys = yield accounts.scram_keys("alice", "SCRAM-SHA-256")
        self.assertEqual(keys, scram.derive("SCRAM-SHA-256", "another-token", 4096, keys.salt))

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
