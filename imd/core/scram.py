# -*- test-case-name: tests.test_scram -*-
"""
SCRAM (RFC 5802, RFC 7677) on the server side, without the SASL message
syntax: the keys derived from a password, stored instead of it, and the
check of a client's proof against them.  The channel that speaks a SASL
profile parses and writes the messages; the rule of what proves a
password lives here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

# Mechanism name -> hashlib name.
HASHES = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}
SALT_BYTES = 16


@dataclass(frozen=True)
class ScramKeys:
    mechanism: str
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def derive(mechanism: str, password: str, iterations: int, salt: bytes | None = None) -> ScramKeys:
    """The keys of C{password} for C{mechanism}, under a new salt unless one is given."""
    name = HASHES[mechanism]
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    salted = hashlib.pbkdf2_hmac(name, password.encode("utf-8"), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", name)
    return ScramKeys(
        mechanism=mechanism,
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.new(name, client_key).digest(),
        server_key=hmac.digest(salted, b"Server Key", name),
    )


def derive_all(password: str, iterations: int) -> list[ScramKeys]:
    return [derive(mechanism, password, iterations) for mechanism in HASHES]


def proof_ok(keys: ScramKeys, auth_message: bytes, proof: bytes) -> bool:
    """Whether C{proof} shows the client knows the password behind C{keys}."""
    name = HASHES[keys.mechanism]
    signature = hmac.digest(keys.stored_key, auth_message, name)
    if len(proof) != len(signature):
        return False
    client_key = bytes(a ^ b for a, b in zip(proof, signature))
    return hmac.compare_digest(hashlib.new(name, client_key).digest(), keys.stored_key)


def server_signature(keys: ScramKeys, auth_message: bytes) -> bytes:
    """What proves to the client that the server knew its keys too."""
    return hmac.digest(keys.server_key, auth_message, HASHES[keys.mechanism])


def encode(keys: ScramKeys) -> dict:
    """C{keys} as the store keeps them (base64 text)."""
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return {
        "mechanism": keys.mechanism,
        "salt": b64(keys.salt),
        "iterations": keys.iterations,
        "stored_key": b64(keys.stored_key),
        "server_key": b64(keys.server_key),
    }


def decode(row: dict) -> ScramKeys:
    return ScramKeys(
        mechanism=row["mechanism"],
        salt=base64.b64decode(row["salt"]),
        iterations=row["iterations"],
        stored_key=base64.b64decode(row["stored_key"]),
        server_key=base64.b64decode(row["server_key"]),
    )
