# -*- test-case-name: tests.test_serverapi -*-
"""
A call's parameters: an ``application/x-www-form-urlencoded`` UTF-8 body
(and the query string), read within a limit, and checked one by one into
what the services take.  Anything wrong is an InvalidField (code 414).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from twisted.web.iweb import IRequest

from imd.channels.shared.httpjson import read_body
from imd.channels.shared.jsonobj import parse_value
from imd.errors import InvalidField, TooLarge

MAX_FIELDS = 100
# Yunxin's accid: lower-cased, at most 32 of these.
ACCID_RE = re.compile(r"\A[a-z0-9_@.-]{1,32}\Z")


def _pairs(text: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(
            # Raw UTF-8 is taken as well as %-escapes: curl -d sends it unescaped.
            text.decode("utf-8"), keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=MAX_FIELDS
        )
    except UnicodeDecodeError:
        raise InvalidField("the parameters are not UTF-8") from None
    except ValueError:
        raise InvalidField(f"more than {MAX_FIELDS} parameters") from None


def read_form(request: IRequest, max_body: int) -> "Form":
    try:
        body = read_body(request, max_body)
    except TooLarge as e:
        raise InvalidField(e.message) from None
    values: dict[str, str] = {}
    query = request.uri.partition(b"?")[2]
    # The body wins over the query string; the first of a repeated name wins.
    for key, value in _pairs(body.strip()) + _pairs(query):
        values.setdefault(key, value)
    return Form(values)


class Form:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def text(self, name: str, max_length: int, required: bool = False, default: str = "") -> str:
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise InvalidField(f"{name} is required")
            return default
        if len(value) > max_length:
            raise InvalidField(f"{name} must be at most {max_length} characters")
        return value

    def accid(self, name: str = "accid", required: bool = True) -> str:
        """A Yunxin accid, lower-cased as Yunxin does."""
        value = self.text(name, 32, required).lower()
        if value and not ACCID_RE.match(value):
            raise InvalidField(f"{name} must be at most 32 characters of a-z 0-9 _ @ . -")
        return value

    def integer(self, name: str, allowed: tuple[int, ...], default: int | None = None) -> int:
        value = self.values.get(name, "")
        if value == "" and default is not None:
            return default
        if value.lstrip("-").isdigit() and value.isascii() and len(value) < 10 and int(value) in allowed:
            return int(value)
        raise InvalidField(f"{name} must be one of {', '.join(map(str, allowed))}")

    def json(self, name: str, max_length: int, required: bool = False, default: Any = None) -> Any:
        text = self.text(name, max_length, required)
        if text == "":
            return default
        return parse_value(text, name, InvalidField)

    def accid_list(self, name: str, max_items: int) -> list[str]:
        """A JSON array of accids."""
        value = self.json(name, 64 * max_items, required=True)
        if not isinstance(value, list) or len(value) > max_items:
            raise InvalidField(f"{name} must be a JSON array of at most {max_items} accids")
        checked = []
        for item in value:
            if not isinstance(item, str) or not ACCID_RE.match(item.lower()):
                raise InvalidField(f"each of {name} must be an accid")
            checked.append(item.lower())
        return checked
