# -*- test-case-name: tests.test_frames -*-
"""
Length-prefixed frames: a big-endian length header, then that many bytes.
The long connection (uint32) and the binary socket (uint16) cut their byte
streams with it, on the server and in the client libraries.
"""

from __future__ import annotations

import struct


class FrameError(Exception):
    """The byte stream cannot be framed; the connection must close."""


class LengthPrefixed:
    """
    Cuts a byte stream into payloads.  A length under C{min_length} or over
    C{max_frame} raises L{FrameError} before anything is buffered, so a
    hostile length costs no memory.
    """

    def __init__(self, header: struct.Struct, max_frame: int, min_length: int = 0, what: str = "frame") -> None:
        self._header = header
        self.max_frame = max_frame
        self._min = min_length
        self._what = what
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        payloads = []
        size = self._header.size
        while len(self._buffer) >= size:
            (length,) = self._header.unpack_from(self._buffer)
            if length < self._min:
                raise FrameError(f"{self._what} length {length} is under {self._min}")
            if length > self.max_frame:
                raise FrameError(f"{self._what} of {length} bytes is over the {self.max_frame} byte limit")
            if len(self._buffer) < size + length:
                break
            payloads.append(bytes(self._buffer[size : size + length]))
            del self._buffer[: size + length]
        return payloads
