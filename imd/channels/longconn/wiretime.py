# -*- test-case-name: tests.test_qid -*-
"""
Seed 001's time strings ("2015-01-30 12:23:00"), in the server's local
time zone, to and from the store's milliseconds.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from imd.core import fields
from imd.errors import InvalidField

MAX_MS = 2**62
# Each form, and how long the moment it names lasts (None: exact to the ms).
_FORMATS = (
    ("%Y-%m-%d %H:%M:%S.%f", None),
    ("%Y-%m-%d %H:%M:%S", timedelta(seconds=1)),
    ("%Y-%m-%d %H:%M", timedelta(minutes=1)),
    ("%Y-%m-%d", timedelta(days=1)),
)


def cursor_time(body: dict) -> int:
    """A cursor from a request: its exact C{stime} (ms), else its C{time}."""
    return cursor_span(body)[0]


def cursor_span(body: dict) -> tuple[int, int | None]:
    """
    A cursor from a request as (start, end) in ms: C{stime}, or a C{time}
    with a fraction, is exact (end None); a C{time} of whole seconds
    (minutes, days) names all of its second, which ends at C{end}.
    """
    if body.get("stime") not in (None, ""):
        return parse_span("stime", body["stime"])
    return parse_span("time", body.get("time"))


# The second of the last call and its text: messages come many to a
# second, and each localtime() asks the C library for the zone again (a
# thirtieth of the reactor's time in p2p max, docs/benchmarks.rst, round 6).
_last_second: tuple[int, str] = (-1, "")


def format_time(ms: int) -> str:
    global _last_second
    second = ms // 1000
    last = _last_second
    if last[0] != second:
        last = _last_second = (second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second)))
    return last[1]


def parse_time(name: str, value: Any) -> int:
    """
    Milliseconds from a time string in one of the seed's forms, or from a
    number of milliseconds.  A string names the start of its second (or
    minute), so a cursor set from it never passes a message the client has
    not seen in that second.
    """
    return parse_span(name, value)[0]


def _ms(moment: datetime) -> int:
    # Whole seconds and milliseconds apart: float arithmetic can land a
    # millisecond short.
    return int(moment.replace(microsecond=0).timestamp()) * 1000 + moment.microsecond // 1000


def parse_span(name: str, value: Any) -> tuple[int, int | None]:
    """
    L{parse_time}'s start, and where the moment the string names ends:
    None for milliseconds or a time with a fraction.
    """
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_MS:
        return value, None
    if isinstance(value, str):
        text = value.strip()
        if fields.digits(text) and len(text) < 20 and int(text) < MAX_MS:
            return int(text), None
        for fmt, length in _FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)
            except ValueError:
                continue
            try:
                ms = _ms(parsed)
                end = None if length is None else _ms(parsed + length)
            except (OverflowError, OSError, ValueError):
                break  # before the epoch's reach, say year 1
            if 0 <= ms < MAX_MS and (end is None or end < MAX_MS):
                return ms, end
            break
    raise InvalidField(f'{name} must be a time like "2015-02-03 16:14:00" or milliseconds')
