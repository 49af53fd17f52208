# -*- test-case-name: tests.test_xmpp_sasl -*-
"""
The server side of SASL's SCRAM (RFC 5802) and PLAIN (RFC 4616) messages
as XMPP carries them (RFC 6120 section 6): parsing what the client sends
and writing the server's answers.  Whether a proof holds is
L{imd.core.scram}'s rule; this module only reads and writes the syntax.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets

from imd.core import scram

# Strongest first: a client takes the first of these it knows.
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1")
# Longest SASL message accepted (a client-final with a SHA-256 proof is
# about 150 bytes; PLAIN carries a password of at most 128 characters).
MAX_MESSAGE = 1024


class SaslFailure(Exception):
    """The exchange failed: C{condition} is the RFC 6120 SASL failure."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(text or condition)
        self.condition = condition
        self.text = text


def decode64(text: str) -> bytes:
    """An XMPP SASL payload: base64, or "=" for an empty one."""
    text = text.strip()
    if text in ("", "="):
        return b""
    if len(text) > MAX_MESSAGE * 2:
        raise SaslFailure("malformed-request", "SASL message too long")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SaslFailure("incorrect-encoding", "not base64") from None


def encode64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii") if data else "="


def parse_plain(data: bytes) -> tuple[str, str, str]:
    """(authzid, authcid, password) of a PLAIN message."""
    try:
        authzid, authcid, password = data.decode("utf-8").split("\0")
    except (UnicodeDecodeError, ValueError):
        raise SaslFailure("malformed-request", "PLAIN is authzid NUL authcid NUL password") from None
    if not authcid or not password:
        raise SaslFailure("malformed-request", "PLAIN needs a user and a password")
    return authzid, authcid, password


def _attributes(text: str) -> list[tuple[str, str]]:
    pairs = []
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or len(name) != 1:
            raise SaslFailure("malformed-request", f"bad SCRAM attribute {part[:20]!r}")
        pairs.append((name, value))
    return pairs


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslFailure("malformed-request", "not UTF-8") from None


def _saslname(value: str) -> str:
    # RFC 5802: "," and "=" travel as "=2C" and "=3D"; any other "=" is an error.
    out = value.replace("=2C", ",").replace("=3D", "=")
    if "=" in value.replace("=2C", "").replace("=3D", ""):
        raise SaslFailure("malformed-request", "bad escape in the user name")
    return out


class ScramExchange:
    """
    One SCRAM exchange: L{first} reads the client-first message and names
    the user, L{challenge} writes the server-first message once the keys
    are known, L{final} checks the client-final message and returns the
    server-final one.
    """

    def __init__(self, mechanism: str, secret: bytes) -> None:
        self.mechanism = mechanism
        # Salts of unknown users are made up from this, the same for a name
        # every time, so an answer does not tell whether a user exists.
        self._secret = secret
        self.username = ""
        self._gs2_header = ""
        self._first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._keys: scram.ScramKeys | None = None

    def first(self, data: bytes) -> str:
        """The user named by the client-first message."""
        text = _utf8(data)
        flag, sep1, rest = text.partition(",")
        authzid, sep2, bare = rest.partition(",")
        if not (sep1 and sep2):
            raise SaslFailure("malformed-request", "no GS2 header")
        if flag.startswith("p="):
            raise SaslFailure("malformed-request", "channel binding is not offered (no -PLUS mechanism)")
        if flag not in ("n", "y"):
            raise SaslFailure("malformed-request", "bad GS2 flag")
        if authzid and not authzid.startswith("a="):
            raise SaslFailure("malformed-request", "bad authzid")
        attrs = _attributes(bare)
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r" or not attrs[1][1]:
            raise SaslFailure("malformed-request", "client-first is n=user,r=nonce")
        if attrs[0][1] == "" or any(name == "m" for name, _ in attrs):
            raise SaslFailure("malformed-request", "no user, or an unsupported extension")
        self._gs2_header = f"{flag},{authzid},"
        self._first_bare = bare
        self.username = _saslname(attrs[0][1])
        self.authzid = _saslname(authzid[2:]) if authzid else ""
        self._nonce = attrs[1][1] + secrets.token_urlsafe(18)
        return self.username

    def challenge(self, keys: scram.ScramKeys | None, iterations: int) -> bytes:
        """
        The server-first message: with C{keys} None (no such user) a salt
        made up for the name, and the exchange will fail at the proof.
        """
        self._keys = keys
        if keys is None:
            salt = hmac.digest(self._secret, self.username.encode("utf-8"), "sha256")[:16]
        else:
            salt, iterations = keys.salt, keys.iterations
        self._server_first = f"r={self._nonce},s={base64.b64encode(salt).decode('ascii')},i={iterations}"
        return self._server_first.encode("ascii")

    def final(self, data: bytes) -> bytes:
        """Check the client-final message; the server-final one (v=…) when the proof holds."""
        text = _utf8(data)
        without_proof, sep, proof_attr = text.rpartition(",")
        attrs = _attributes(without_proof) if sep else []
        if len(attrs) < 2 or attrs[0][0] != "c" or attrs[1][0] != "r" or not proof_attr.startswith("p="):
            raise SaslFailure("malformed-request", "client-final is c=…,r=…,p=…")
        binding = base64.b64encode(self._gs2_header.encode("utf-8")).decode("ascii")
        if attrs[0][1] != binding:
            raise SaslFailure("malformed-request", "channel binding data differ from the GS2 header")
        if attrs[1][1] != self._nonce:
            raise SaslFailure("malformed-request", "wrong nonce")
        try:
            proof = base64.b64decode(proof_attr[2:], validate=True)
        except (binascii.Error, ValueError):
            raise SaslFailure("malformed-request", "the proof is not base64") from None
        auth_message = f"{self._first_bare},{self._server_first},{without_proof}".encode("utf-8")
        if self._keys is None or not scram.proof_ok(self._keys, auth_message, proof):
            raise SaslFailure("not-authorized")
        return b"v=" + base64.b64encode(scram.server_signature(self._keys, auth_message))


def new_secret() -> bytes:
    """A per-process secret for L{ScramExchange}'s made-up salts."""
    return hashlib.sha256(os.urandom(32)).digest()
