# -*- test-case-name: tests.test_jsonobj -*-
"""
The one JSON-object parser of every channel and HTTP API.

Whatever a client sends, the answer is a dict of str keys or an error of
the caller's choosing that says what is wrong, never another exception:
orjson refuses what the stdlib parser would let through to hurt later
(lone surrogates, which no UTF-8 encoder takes; NaN and Infinity; numbers
that overflow a double) and has no digit limit or recursion to trip over.
"""

from __future__ import annotations

from typing import Any

import orjson

from imd.errors import BadRequest

_BLANK = object()


def parse_value(
    raw: bytes | bytearray | memoryview | str,
    what: str = "the body",
    error: type[Exception] = BadRequest,
    hint: str = "",
    blank: Any = None,
) -> Any:
    """Any JSON value in C{raw} (C{blank} when it is blank); errors as L{parse_object}."""
    if isinstance(raw, str):
        # A str may carry lone surrogates; encoded as they are, orjson
        # refuses them below like any other bad UTF-8.
        raw = raw.encode("utf-8", "surrogatepass")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        # Blank input is refused by orjson too: asked only then, so that a
        # frame's body is not copied to be asked on every frame.
        if not bytes(raw).strip():
            return blank
        if "utf-8" in e.msg.lower():
            raise error(f"{what} is not UTF-8") from None
        raise error(f"{what} is not JSON{hint}: {e}") from None


def parse_object(
    raw: bytes | bytearray | memoryview | str,
    what: str = "the body",
    error: type[Exception] = BadRequest,
    hint: str = "",
) -> dict[str, Any]:
    """
    The JSON object in C{raw}; blank input is C{{}}.  Anything else raises
    C{error} with a message that starts with C{what} ("the body is not
    UTF-8", "... is not JSON: ...", "... must be a JSON object").  C{hint}
    follows "is not JSON" (say, that a wrong key decrypts to garbage).
    """
    obj = parse_value(raw, what, error, hint, _BLANK)
    if obj is _BLANK:
        return {}
    if not isinstance(obj, dict):
        raise error(f"{what} must be a JSON object")
    return obj
