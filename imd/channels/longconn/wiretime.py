# -*- test-case-name: tests.test_qid -*-
"""
Seed 001's time strings ("2015-01-30 12:23:00"), in the server's local
time zone, to and from the store's milliseconds.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from imd.core import fields
from imd.errors import InvalidField

MAX_MS = 2**62
_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def cursor_time(body: dict) -> int:
    """A cursor from a request: its exact C{stime} (ms), else its C{time}."""
    if body.get("stime") not in (None, ""):
        return parse_time("stime", body["stime"])
    return parse_time("time", body.get("time"))


def format_time(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def parse_time(name: str, value: Any) -> int:
    """
    Milliseconds from a time string in one of the seed's forms, or from a
    number of milliseconds.  A string names the start of its second (or
    minute), so a cursor set from it never passes a message the client has
    not seen in that second.
    """
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_MS:
        return value
    if isinstance(value, str):
        text = value.strip()
        if fields.digits(text) and len(text) < 20 and int(text) < MAX_MS:
            return int(text)
        for fmt in _FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)
            except ValueError:
                continue
            try:
                # Whole seconds and milliseconds apart: float arithmetic can
                # land a millisecond short.
                seconds = int(parsed.replace(microsecond=0).timestamp())
            except (OverflowError, OSError, ValueError):
                break  # before the epoch's reach, say year 1
            ms = seconds * 1000 + parsed.microsecond // 1000
            if 0 <= ms < MAX_MS:
                return ms
            break
    raise InvalidField(f'{name} must be a time like "2015-02-03 16:14:00" or milliseconds')
