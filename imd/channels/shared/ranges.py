# -*- test-case-name: tests.test_ranges -*-
"""
HTTP byte ranges (RFC 9110, section 14) of a file of known size.

One range per request: a client that asks for several gets the whole file
(200), which the RFC allows and every download client handles.  A Range
header that is not valid bytes syntax is ignored, as the RFC says; one that
is valid but starts past the end is L{Unsatisfiable} (416).
"""

from __future__ import annotations

import re

# first-last, first-, or -suffix; no spaces inside, at most 19 digits each
# (a byte position past 2**63 cannot be meant).
_SPEC = re.compile(r"^\s*(\d{0,19})-(\d{0,19})\s*$")


class Unsatisfiable(Exception):
    """A valid range that selects no byte of the file."""


def parse(header: bytes | str | None, size: int) -> tuple[int, int] | None:
    """
    The (start, length) that C{header} selects in a file of C{size} bytes;
    None to serve the whole file.  Raise L{Unsatisfiable} for a range
    wholly past the end (or a zero-length suffix).
    """
    if header is None:
        return None
    if isinstance(header, bytes):
        try:
            header = header.decode("ascii")
        except UnicodeDecodeError:
            return None
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes" or not specs or "," in specs:
        return None
    match = _SPEC.match(specs)
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable()
        start = max(size - suffix, 0)
        return start, size - start
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        raise Unsatisfiable()
    end = size - 1 if last == "" else min(int(last), size - 1)
    return start, end - start + 1


def content_range(start: int, length: int, size: int) -> bytes:
    """The C{Content-Range} value of a 206 answer."""
    return f"bytes {start}-{start + length - 1}/{size}".encode("ascii")


def unsatisfied_range(size: int) -> bytes:
    """The C{Content-Range} value of a 416 answer."""
    return f"bytes */{size}".encode("ascii")
