"""SASL SCRAM and PLAIN messages as the XMPP channel reads and writes them."""

import base64
import hashlib
import hmac
import random

from twisted.trial import unittest

from imd.channels.xmpp.sasl import SaslFailure, ScramExchange, decode64, encode64, parse_plain
from imd.core import scram


def client_final(password, mechanism, first_bare, server_first, gs2=b"n,,"):
    """What a correct client answers (RFC 5802 section 3)."""
    name = scram.HASHES[mechanism]
    attrs = dict(part.split("=", 1) for part in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(name, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", name)
    stored = hashlib.new(name, client_key).digest()
    without_proof = f"c={base64.b64encode(gs2).decode()},r={attrs['r']}"
    auth = f"{first_bare},{server_first},{without_proof}".encode()
    proof = bytes(a ^ b for a, b in zip(client_key, hmac.digest(stored, auth, name)))
    server_key = hmac.digest(salted, b"Server Key", name)
    return f"{without_proof},p={base64.b64encode(proof).decode()}".encode(), b"v=" + base64.b64encode(hmac.digest(server_key, auth, name))


class ScramTests(unittest.TestCase):
    def exchange(self, mechanism="SCRAM-SHA-1", password="secret1", user="rose"):
        keys = scram.derive(mechanism, "secret1", 4096)
        ex = ScramExchange(mechanism, b"k" * 32)
        first_bare = f"n={user},r=clientnonce"
        self.assertEqual(ex.first(f"n,,{first_bare}".encode()), user.replace("=2C", ",").replace("=3D", "="))
        server_first = ex.challenge(keys, 4096).decode()
        final, verifier = client_final(password, mechanism, first_bare, server_first)
        return ex, final, verifier

    def test_both_mechanisms(self):
        for mechanism in scram.HASHES:
            ex, final, verifier = self.exchange(mechanism)
            self.assertEqual(ex.final(final), verifier)

    def test_wrong_password(self):
        ex, final, _ = self.exchange(password="wrong!!")
        e = self.assertRaises(SaslFailure, ex.final, final)
        self.assertEqual(e.condition, "not-authorized")

    def test_unknown_user_gets_a_stable_made_up_salt(self):
        a, b = ScramExchange("SCRAM-SHA-1", b"k" * 32), ScramExchange("SCRAM-SHA-1", b"k" * 32)
        a.first(b"n,,n=ghost,r=x")
        b.first(b"n,,n=ghost,r=y")
        salt = lambda m: m.decode().split(",")[1]  # noqa: E731
        self.assertEqual(salt(a.challenge(None, 4096)), salt(b.challenge(None, 4096)))
        e = self.assertRaises(SaslFailure, a.final, b"c=biws,r=" + a._nonce.encode() + b",p=AAAA")
        self.assertEqual(e.condition, "not-authorized")

    def test_escaped_user_name(self):
        ex = ScramExchange("SCRAM-SHA-1", b"k")
        self.assertEqual(ex.first(b"n,,n=a=2Cb=3Dc,r=x"), "a,b=c")

    def test_malformed(self):
        for first in (b"", b"n", b"x,,n=a,r=b", b"p=tls-unique,,n=a,r=b", b"n,,r=b,n=a", b"n,,n=,r=b", b"n,,n=a", b"n,,n=a=ZZ,r=b", b"n,,n=a,r=b,m=ext", b"\xff"):
            e = self.assertRaises(SaslFailure, ScramExchange("SCRAM-SHA-1", b"k").first, first)
            self.assertEqual(e.condition, "malformed-request", first)
        ex, final, _ = self.exchange()
        for bad in (b"", b"c=biws", final.replace(b"c=biws", b"c=eSws"), final.replace(b"r=clientnonce", b"r=othernonce"), final[:-4] + b"!!!!"):
            fresh, _, _ = self.exchange()
            self.assertRaises(SaslFailure, fresh.final, bad)


class FuzzTests(unittest.TestCase):
    def test_only_sasl_failures(self):
        rng = random.Random(5)
        pieces = [b"n", b"y", b"p=x", b",", b"=", b"a=", b"n=", b"r=", b"c=", b"p=", b"biws", b"=2C", b"=3D", b"\0", b"\xff", b"rose"]
        for _ in range(500):
            data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
            ex = ScramExchange(rng.choice(list(scram.HASHES)), b"k")
            try:
                ex.first(data)
                ex.challenge(None, 4096)
                ex.final(data)
            except SaslFailure:
                pass
            try:
                parse_plain(data)
            except SaslFailure:
                pass
            try:
                decode64(data.decode("latin-1"))
            except SaslFailure:
                pass


class PlainAndBase64Tests(unittest.TestCase):
    def test_plain(self):
        self.assertEqual(parse_plain(b"\0rose\0secret1"), ("", "rose", "secret1"))
        self.assertEqual(parse_plain(b"rose@localhost\0rose\0secret1"), ("rose@localhost", "rose", "secret1"))
        for bad in (b"", b"rose\0secret1", b"\0\0secret1", b"\0rose\0", b"\0r\0p\0x", b"\0\xff\0p"):
            self.assertRaises(SaslFailure, parse_plain, bad)

    def test_base64(self):
        self.assertEqual(decode64("="), b"")
        self.assertEqual(decode64(" " + encode64(b"abc") + "\n"), b"abc")
        self.assertEqual(encode64(b""), "=")
        self.assertEqual(self.assertRaises(SaslFailure, decode64, "!!").condition, "incorrect-encoding")
        self.assertEqual(self.assertRaises(SaslFailure, decode64, "A" * 5000).condition, "malformed-request")
