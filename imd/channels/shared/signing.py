# -*- test-case-name: tests.test_signing -*-
"""
The MD5 request signature the seeds share.

Seed 004's method API signs its ``data`` and seed 001's file server signs
its parameters the same way: the parameters sorted by key,
ascending, written as ``k=v`` pairs joined by ``&``, hashed with MD5 and
written as upper-case hex.  The method API appends ``&time=<_t>`` after
the sorted pairs; the file server signs without a time.

Neither seed names a secret: the signature proves integrity of what was
sent, not who sent it (the token does that).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Mapping


def text(value: Any) -> str:
    """
    How one value is written into the signed string: a string as it is,
    anything else (numbers, booleans, null, nested objects and arrays) as
    compact JSON, so C{5} and C{"5"} sign alike.  A nested object keeps its
    keys in the order they arrived (JSON parsing preserves it), which is the
    order the client serialized when it signed.
    """
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def signed_string(params: Mapping[str, Any], time: str | None = None) -> str:
    """The string L{sign} hashes, for logs and documentation."""
    pairs = [f"{key}={text(params[key])}" for key in sorted(params)]
    if time is not None:
        # After the sorted pairs, whatever "time" sorts as: that is where
        # seed 004 puts it.
        pairs.append(f"time={time}")
    return "&".join(pairs)


def sign(params: Mapping[str, Any], time: str | None = None) -> str:
    """
    The upper-case hex MD5 of C{params} as C{k=v&k=v}, keys ascending,
    values per L{text}, hashed as UTF-8.

    @param params: what is signed.  The caller leaves out what the protocol
        excludes (the file server: C{bin} and C{signature}; the method API:
        everything outside C{data}).
    @param time: seed 004's C{_t}, appended as C{&time=<time>} (or
        C{time=<time>} when C{params} is empty); C{None} for the file
        server, which signs without a time.
    """
    return hashlib.md5(signed_string(params, time).encode("utf-8")).hexdigest().upper()


def matches(signature: Any, params: Mapping[str, Any], time: str | None = None) -> bool:
    """
    Whether C{signature} is L{sign}'s answer, compared case-insensitively
    (the seeds print upper case, clients send either) and in constant time.
    """
    if not isinstance(signature, str):
        return False
    # compare_digest wants ASCII for str; a non-ASCII signature is wrong anyway.
    given = signature.strip().upper().encode("utf-8")
    return hmac.compare_digest(given, sign(params, time).encode("ascii"))
