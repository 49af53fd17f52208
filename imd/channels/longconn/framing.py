# -*- test-case-name: tests.test_longconn,tests.test_fuzz_longconn -*-
"""
Long-connection frames, imd's framing of seed 001 (docs/longconn.rst):
``uint32 length`` (4 + body bytes), ``uint32 msgtype``, then a UTF-8 JSON
object.  Shared by the server channel and the client library.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import orjson

from imd.channels.shared.frames import LengthPrefixed
from imd.channels.shared.jsonobj import parse_object

HEADER = struct.Struct(">II")
LENGTH = struct.Struct(">I")
MSGTYPE = LENGTH


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON."""
    # orjson: the same compact UTF-8 as json.dumps, several times faster.
    try:
        return orjson.dumps(obj)
    except TypeError:
        # Beyond orjson: an integer over 64 bits, say.
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def encode(msgtype: int, body: dict[str, Any]) -> bytes:
    payload = dumps(body)
    return HEADER.pack(4 + len(payload), msgtype) + payload


class FrameDecoder:
    """Cuts a byte stream into [msgtype, body bytes] frames."""

    def __init__(self, max_frame: int) -> None:
        # The length counts the msgtype too, so it is at least 4.
        self._frames = LengthPrefixed(LENGTH, max_frame, min_length=4)

    def feed(self, data: bytes) -> list[list]:
        # A list: the server keeps the decoded body in its place.
        return [[MSGTYPE.unpack_from(p)[0], p[4:]] for p in self._frames.feed(data)]


def decode_body(payload: bytes) -> dict[str, Any]:
    """The JSON object of a frame; ValueError says what is wrong with it."""
    return parse_object(payload, "the frame body", ValueError)
