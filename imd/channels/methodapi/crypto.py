# -*- test-case-name: tests.test_crypto -*-
"""
Seed 004's body encryption: AES-128-ECB (or 192/256 with a longer key),
NUL-padded to the block size as PHP's mcrypt does, then base64.  Decoding
also accepts PKCS#7 padding, which OpenSSL-based clients send.
"""

from __future__ import annotations

import base64
import binascii

from Crypto.Cipher import AES

BLOCK = AES.block_size


class CryptoError(ValueError):
    """A body that is not base64, not whole AES blocks, or not decryptable."""


def _cipher(key: bytes):
    return AES.new(key, AES.MODE_ECB)


def encrypt(key: bytes, plaintext: bytes) -> bytes:
    """base64(AES-ECB(key, plaintext NUL-padded)), as mcrypt clients expect."""
    padded = plaintext + b"\x00" * (-len(plaintext) % BLOCK)
    return base64.b64encode(_cipher(key).encrypt(padded))


def decrypt(key: bytes, body: bytes | str) -> bytes:
    """The plaintext of an L{encrypt}ed body (NUL or PKCS#7 padding removed)."""
    if isinstance(body, str):
        body = body.encode("ascii", "replace")
    # Form decoding turns "+" into " " (base64 has no spaces); line
    # breaks that some encoders insert are dropped.
    body = b"".join(body.replace(b" ", b"+").split())
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("the body is not base64") from None
    if not raw or len(raw) % BLOCK:
        raise CryptoError("the body is not a whole number of AES blocks")
    plain = _cipher(key).decrypt(raw)
    n = plain[-1]
    if 1 <= n <= BLOCK and plain[-n:] == bytes([n]) * n:
        return plain[:-n]
    return plain.rstrip(b"\x00")
