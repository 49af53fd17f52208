# -*- test-case-name: tests.test_socket -*-
"""
The binary socket's frames (seed 004): a ``uint16`` big-endian length, then
``base64(AES-128-ECB(key, json))``, or the plain JSON with ``socket.encrypt
= false``.  Shared by the server channel and the client library.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from imd.channels.methodapi.crypto import CryptoError, decrypt, encrypt
from imd.channels.shared.frames import FrameError, LengthPrefixed
from imd.channels.shared.jsonobj import parse_object
from imd.errors import InvalidField

HEADER = struct.Struct(">H")


class FrameTooLarge(FrameError):
    """Over the frame limit, or too long for a uint16 length once encoded."""


class FrameDecoder:
    """Cuts a byte stream into frame bodies (trailing NULs removed)."""

    def __init__(self, max_frame: int) -> None:
        self._frames = LengthPrefixed(HEADER, max_frame)

    def feed(self, data: bytes) -> list[bytes]:
        try:
            payloads = self._frames.feed(data)
        except FrameError as e:
            # The only way a uint16 length can be wrong is being too long.
            raise FrameTooLarge(str(e)) from None
        return [p.rstrip(b"\x00") for p in payloads]


class Codec:
    """Bodies to and from JSON objects, encrypted or not (``socket.encrypt``)."""

    def __init__(self, key: bytes, encrypted: bool) -> None:
        self.key = key
        self.encrypted = encrypted

    def decode(self, body: bytes) -> dict[str, Any]:
        if not body:
            raise InvalidField("the frame is empty")
        if self.encrypted:
            try:
                body = decrypt(self.key, body)
            except CryptoError as e:
                raise InvalidField(str(e)) from None
        hint = " (or was encrypted with another key)" if self.encrypted else ""
        return parse_object(body, "the frame", InvalidField, hint)

    def encode(self, obj: dict[str, Any]) -> bytes:
        body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if self.encrypted:
            body = encrypt(self.key, body)
        if len(body) > 0xFFFF:
            raise FrameTooLarge(f"a frame of {len(body)} bytes does not fit a uint16 length")
        return HEADER.pack(len(body)) + body
