# -*- test-case-name: tests.test_serverapi -*-
"""
The server API's signature: ``CheckSum = sha1(AppSecret + Nonce +
CurTime)`` in lower-case hex, ``CurTime`` in seconds near the server's
clock, and a ``Nonce`` accepted once per app inside that window (on every
instance, through the server's C{claim_once}: Redis, or the database).  The webhooks are signed the
same way with the body's MD5 for the Nonce and ``CurTime`` in ms.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Callable

from twisted.internet.defer import Deferred, inlineCallbacks

from imd.core import fields
from imd.errors import BadSignature, Forbidden, InvalidField, ReplayedRequest, StaleRequest

MAX_NONCE = 128
# Nonces remembered by one process at most: past this a flood of good
# requests evicts the oldest, which are also the first to go stale.
MAX_REMEMBERED = 1_000_000
HEADERS = ("AppKey", "Nonce", "CurTime", "CheckSum")


def checksum(secret: str, nonce: str, curtime: str) -> str:
    return hashlib.sha1((secret + nonce + curtime).encode("utf-8")).hexdigest()


def body_md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


class NoApp(Forbidden):
    """No app exists; an administrator makes one with: python -m imd app add NAME."""

    code = "no_app"


class UnknownApp(Forbidden):
    """No app has this AppKey."""

    code = "unknown_app"


class CheckSumGuard:
    """
    Checks the four headers of a call.  C{apps} is the app service;
    C{claim(key, ttl)} the server's C{claim_once}, so that a Nonce replayed
    to another instance of a cluster is refused too.
    """

    def __init__(self, apps: Any, window: int, clock: Any, claim: Callable[[str, int], Deferred]) -> None:
        self._apps = apps
        self._window = window
        self._clock = clock
        self._claim = claim
        # (app key, nonce) -> when it may be forgotten; insertion order is
        # roughly expiry order, and exactly so within one CurTime.
        self._seen: dict[tuple[str, str], float] = {}

    @inlineCallbacks
    def check(self, header: Callable[[str], str | None]):
        """The app that signed the call whose headers C{header} reads; fails with the reason."""
        values = {}
        for name in HEADERS:
            value = header(name)
            if not value:
                raise InvalidField(f"the {name} header is missing")
            values[name] = value
        key, nonce, curtime, given = (values[name] for name in HEADERS)
        if len(nonce) > MAX_NONCE:
            raise InvalidField(f"Nonce must be at most {MAX_NONCE} characters")
        if not fields.digits(curtime) or len(curtime) > 12:
            raise InvalidField("CurTime must be a Unix time in seconds")
        app = yield self._apps.get(key)
        if app is None:
            if not (yield self._apps.any()):
                raise NoApp()
            raise UnknownApp()
        expected = checksum(app.secret, nonce, curtime)
        if not hmac.compare_digest(expected, given.lower().encode("ascii", "replace").decode()):
            raise BadSignature("the CheckSum does not match")
        now = self._clock.seconds()
        if abs(now - int(curtime)) > self._window:
            raise StaleRequest(f"CurTime is more than {self._window} s away from the server's time")
        self._remember(key, nonce, now)
        digest = hashlib.sha256(f"{key}\n{nonce}".encode()).hexdigest()
        first = yield self._claim("nonce:" + digest, 2 * self._window)
        if not first:
            raise ReplayedRequest("this Nonce was already used")
        return app

    def _remember(self, key: str, nonce: str, now: float) -> None:
        while self._seen:
            oldest = next(iter(self._seen))
            if self._seen[oldest] >= now and len(self._seen) < MAX_REMEMBERED:
                break
            del self._seen[oldest]
        if (key, nonce) in self._seen:
            raise ReplayedRequest("this Nonce was already used")
        # Kept for twice the window: a CurTime may be a window behind and
        # still good for a window more.
        self._seen[(key, nonce)] = now + 2 * self._window
