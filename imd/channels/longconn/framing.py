# -*- test-case-name: tests.test_longconn_framing -*-
"""
Long-connection frames (PROTOCOL.md): ``uint32 length`` (4 + body bytes),
``uint32 msgtype``, then a UTF-8 JSON object.  Shared by the server channel
and the client library.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import orjson

HEADER = struct.Struct(">II")


class FrameError(Exception):
    """The byte stream cannot be framed; the connection must close."""


def encode(msgtype: int, body: dict[str, Any]) -> bytes:
    # orjson: the same compact UTF-8 as json.dumps, several times faster.
    try:
        payload = orjson.dumps(body)
    except TypeError:
        # Beyond orjson: an integer over 64 bits, say.
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return HEADER.pack(4 + len(payload), msgtype) + payload


class FrameDecoder:
    """
    Cuts a byte stream into [msgtype, body bytes] frames.  A length under 4
    or over C{max_frame} raises L{FrameError} before anything is buffered,
    so a hostile length costs no memory.
    """

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[list]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= 4:
            (length,) = struct.unpack_from(">I", self._buffer)
            if length < 4:
                raise FrameError(f"frame length {length} is shorter than its msgtype")
            if length > self.max_frame:
                raise FrameError(f"frame of {length} bytes is over the {self.max_frame} byte limit")
            if len(self._buffer) < 4 + length:
                break
            (msgtype,) = struct.unpack_from(">I", self._buffer, 4)
            # A list: the server keeps the decoded body in its place.
            frames.append([msgtype, bytes(self._buffer[8 : 4 + length])])
            del self._buffer[: 4 + length]
        return frames


def decode_body(payload: bytes) -> dict[str, Any]:
    """The JSON object of a frame; ValueError says what is wrong with it."""
    if not payload.strip():
        return {}
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        # orjson tells a body that is not UTF-8 among its other errors.
        if "utf-8" in e.msg.lower():
            raise ValueError("the frame body is not UTF-8") from None
        raise ValueError(f"the frame body is not JSON: {e.msg}") from None
    if not isinstance(body, dict):
        raise ValueError("the frame body must be a JSON object")
    return body
