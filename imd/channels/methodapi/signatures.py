# -*- test-case-name: tests.test_methodapi -*-
"""
Seed 004's signed requests: the MD5 ``sign`` over the data and ``_t``,
a time window around the server clock, and refusal of a sign seen before
within that window.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from typing import Any, Callable, Mapping

from twisted.internet.defer import Deferred, fail, succeed

from imd.core import fields
from imd.errors import BadSignature, IMError, InvalidField, ReplayedRequest, StaleRequest
from imd.channels.shared.signing import sign as compute_sign

# Signs remembered at most; past this a flood of valid requests evicts the
# oldest, which are also the first to go stale.
MAX_REMEMBERED = 1_000_000


class SignatureGuard:
    """
    C{claim(key, ttl)}, when given, is asked once per good request and
    fires True only the first time a key is claimed anywhere: the server's
    C{claim_once} (Redis, or the database), so that a request replayed to
    another instance of a cluster, or after a restart, is refused too.
    """

    def __init__(self, window: int, clock: Any, claim: Callable[[str, int], Deferred] | None = None) -> None:
        self._window = window
        self._clock = clock
        self._claim = claim
        self._seen: set[str] = set()
        self._expiry: deque[tuple[float, str]] = deque()

    def check(self, data: Mapping[str, Any], sign: Any, t: Any, method: str = "") -> Deferred:
        """
        Fail unless C{sign} signs C{data} at C{t}, C{t} is within the
        window, and C{sign} is new for C{method}.  A good sign is
        remembered, so the same request cannot be played again while its
        C{t} is valid.  The seed's sign does not cover the method, so two
        methods with the same data in the same second (register, then log
        in) would otherwise look like a replay.
        """
        try:
            key = self._check_here(data, sign, t, method)
        except IMError:
            return fail()
        if self._claim is None:
            return succeed(None)
        d = self._claim("replay:" + hashlib.sha256(key.encode()).hexdigest(), 2 * self._window)

        def claimed(first: bool) -> None:
            if not first:
                raise ReplayedRequest()

        return d.addCallback(claimed)

    def _check_here(self, data: Mapping[str, Any], sign: Any, t: Any, method: str) -> str:
        if not isinstance(sign, str) or not sign:
            raise BadSignature("the request is not signed")
        if isinstance(t, bool) or not isinstance(t, (int, str)) or not fields.digits(str(t)) or len(str(t)) > 12:
            raise InvalidField("_t must be a Unix time in seconds")
        now = self._clock.seconds()
        if abs(now - int(t)) > self._window:
            raise StaleRequest(f"_t is more than {self._window} s away from the server's time")
        expected = compute_sign(data, str(t))
        if not hmac.compare_digest(expected.upper(), sign.upper().encode("ascii", "replace").decode()):
            raise BadSignature()
        self._forget(now)
        key = f"{method}\n{sign.upper()}"
        if key in self._seen:
            raise ReplayedRequest()
        self._seen.add(key)
        self._expiry.append((int(t) + self._window, key))
        if len(self._expiry) > MAX_REMEMBERED:
            self._seen.discard(self._expiry.popleft()[1])
        return key

    def _forget(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            self._seen.discard(self._expiry.popleft()[1])
