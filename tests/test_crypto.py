"""Seed 004's AES body codec."""

import base64

from Crypto.Cipher import AES
from twisted.trial import unittest

from imd.channels.methodapi.crypto import CryptoError, decrypt, encrypt

KEY = b"2108a4c486350f3a"


class CryptoTests(unittest.TestCase):
    def test_round_trip_and_nul_padding(self):
        for text in (b"{}", b'{"a":1}', "中文".encode(), b"x" * 16, b"y" * 33):
            body = encrypt(KEY, text)
            raw = base64.b64decode(body)
            self.assertEqual(len(raw) % 16, 0)
            # mcrypt pads with NULs, never a whole extra block.
            self.assertEqual(AES.new(KEY, AES.MODE_ECB).decrypt(raw), text + b"\0" * (-len(text) % 16))
            self.assertEqual(decrypt(KEY, body), text)

    def test_accepts_pkcs7(self):
        text = b'{"method":"com.user.login"}'
        n = 16 - len(text) % 16
        body = base64.b64encode(AES.new(KEY, AES.MODE_ECB).encrypt(text + bytes([n]) * n))
        self.assertEqual(decrypt(KEY, body), text)
        self.assertEqual(decrypt(KEY, body.decode()), text)

    def test_form_encoded_plus_and_newlines(self):
        body = encrypt(KEY, b"x" * 100).decode()
        wrapped = "\n".join(body[i : i + 20] for i in range(0, len(body), 20)).replace("+", " ")
        self.assertEqual(decrypt(KEY, wrapped), b"x" * 100)

    def test_garbage(self):
        for body in (b"", b"!!!!", b"abc", base64.b64encode(b"short"), "中文", b"\xff\xfe"):
            self.assertRaises(CryptoError, decrypt, KEY, body)

    def test_wrong_key_gives_garbage_not_crash(self):
        body = encrypt(KEY, b'{"a":1}')
        self.assertNotEqual(decrypt(b"0" * 16, body), b'{"a":1}')
