# -*- test-case-name: tests.test_core_fields -*-
"""Checks of values that arrive from any channel, raising InvalidField."""

from __future__ import annotations

import re
from typing import Any

from imd.errors import InvalidField

# \A and \Z: "$" would also match before a trailing newline.
_UID = re.compile(r"\A[A-Za-z0-9_.@-]{1,50}\Z")
_ID = re.compile(r"\A[A-Za-z0-9_.:@-]+\Z")
# Group and friend-group ids are stored in 50-character columns.
GID_LENGTH = 50
# Past this, integers from clients are refused rather than overflowing a column.
MAX_INT = 2**62


def digits(value: str) -> bool:
    """
    Whether C{value} is a run of ASCII digits: str.isdigit also takes "²",
    which int() refuses, and "٣", which it reads as 3.
    """
    return value.isascii() and value.isdigit()


def text(name: str, value: Any, max_length: int, required: bool = True, default: str = "") -> str:
    """A string of at most C{max_length} characters (numbers are taken as text)."""
    if value is None or value == "":
        if required:
            raise InvalidField(f"{name} is required")
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidField(f"{name} must be a string")
    value = str(value)
    if len(value) > max_length:
        raise InvalidField(f"{name} must be at most {max_length} characters")
    if "\x00" in value:
        # Postgres stores no NUL in text: refused here, for this client
        # alone, rather than failing the batch it would have joined.
        raise InvalidField(f"{name} must not contain NUL characters")
    return value


def uid(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _UID.match(value):
        raise InvalidField(f"{name} must be a user id (1-50 characters of A-Z a-z 0-9 _ . @ -)")
    return value


def ident(name: str, value: Any, max_length: int = 64) -> str:
    """A client-chosen id such as a msgid or gid: no spaces, at most C{max_length}."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _ID.match(value) or len(value) > max_length:
        raise InvalidField(f"{name} must be 1-{max_length} characters of A-Z a-z 0-9 _ . : @ -")
    return value


def gid(name: str, value: Any) -> str:
    return ident(name, value, GID_LENGTH)


def integer(name: str, value: Any, minimum: int = 0, maximum: int = MAX_INT - 1) -> int:
    """A JSON integer or a string of digits, within what the store can hold."""
    if isinstance(value, str) and digits(value.strip().removeprefix("-")) and len(value) < 20:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidField(f"{name} must be an integer from {minimum} to {maximum}")
    return value


def boolean(name: str, value: Any, default: bool | None = None) -> bool:
    """JSON true/false, or the seeds' "1"/"0" and "true"/"false"."""
    if value is None and default is not None:
        return default
    if isinstance(value, bool):
        return value
    if value in (1, "1", "true"):
        return True
    if value in (0, "0", "false"):
        return False
    raise InvalidField(f"{name} must be true or false")
