# -*- test-case-name: tests.test_directory -*-
"""
The enterprise directory (seed 001): departments and contacts, loaded by
an administrator from JSON or CSV, read by every signed-in user with
version numbers so that clients fetch only what changed.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from twisted.internet.defer import inlineCallbacks, returnValue

from imd.core import fields
from imd.errors import InvalidField

KINDS = ("departments", "contacts")
_TEXT = {
    "departments": {"id": 50, "parent_id": 50, "name": 200},
    "contacts": {
        "uid": 50,
        "dept_id": 50,
        "name": 100,
        "telephone": 32,
        "cellphone": 32,
        "email": 255,
        "position": 100,
    },
}
_REQUIRED = {"departments": ("id", "name"), "contacts": ("uid",)}
_NULLABLE = {"parent_id", "dept_id"}


def _ord(where: str, value: Any) -> int:
    """A row's sort order: an integer the database's INTEGER column holds."""
    if value is None or value == "":
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError
        number = int(value)
    except ValueError:
        raise InvalidField(f"{where}: ord must be an integer") from None
    if not -(2**31) <= number < 2**31:
        raise InvalidField(f"{where}: ord must be between {-(2**31)} and {2**31 - 1}")
    return number


def clean_rows(kind: str, rows: Any) -> list[dict[str, Any]]:
    """Check and normalise imported rows of C{kind}; InvalidField names the first bad one."""
    if not isinstance(rows, list):
        raise InvalidField(f"{kind} must be a list")
    key = _REQUIRED[kind][0]
    cleaned, keys = [], set()
    for n, row in enumerate(rows, 1):
        where = f"{kind} row {n}"
        if not isinstance(row, dict):
            raise InvalidField(f"{where} must be an object")
        unknown = set(row) - set(_TEXT[kind]) - {"ord"}
        if unknown:
            raise InvalidField(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        out: dict[str, Any] = {}
        for name, limit in _TEXT[kind].items():
            required = name in _REQUIRED[kind]
            value = fields.text(f"{where}: {name}", row.get(name), limit, required=required)
            out[name] = (value or None) if name in _NULLABLE else value
        out["ord"] = _ord(where, row.get("ord"))
        if out[key] in keys:
            raise InvalidField(f"{where}: {key} {out[key]} appears twice")
        keys.add(out[key])
        cleaned.append(out)
    return cleaned


def parse_import(data: bytes, fmt: str) -> dict[str, list[dict]]:
    """
    JSON: ``{"departments": [...], "contacts": [...]}`` (either may be
    absent).  CSV: one list per file, its kind told by a ``kind`` column
    on every row (``department`` or ``contact``) or by the header: a file
    with a ``uid`` column holds contacts, else departments.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidField("the file is not UTF-8") from None
    if fmt == "json":
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise InvalidField(f"the file is not JSON: {e}") from None
        if not isinstance(doc, dict) or not set(doc) <= set(KINDS) or not doc:
            raise InvalidField('the JSON must be an object with "departments" and/or "contacts"')
        return {kind: clean_rows(kind, doc[kind]) for kind in KINDS if kind in doc}
    if fmt != "csv":
        raise InvalidField(f"unknown format {fmt!r}: use json or csv")
    try:
        return _parse_csv(text)
    except csv.Error as e:
        raise InvalidField(f"the file is not CSV: {e}") from None


def _parse_csv(text: str) -> dict[str, list[dict]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise InvalidField("the CSV file has no header")
    by_header = "contacts" if "uid" in reader.fieldnames else "departments"
    if "kind" in reader.fieldnames:
        allowed = {"kind", "ord"}.union(*_TEXT.values())
    else:
        allowed = {"ord"}.union(_TEXT[by_header])
    unknown = [name for name in reader.fieldnames if name not in allowed]
    if unknown:
        raise InvalidField(f"the CSV header has unknown column(s) {', '.join(unknown)}")
    # Without a kind column the header names the file's one list, so a
    # file with a header and no rows empties that list, as [] in JSON does.
    result: dict[str, list] = {} if "kind" in reader.fieldnames else {by_header: []}
    for row in reader:
        kind = row.pop("kind", None) or by_header
        kind = {"department": "departments", "contact": "contacts"}.get(kind, kind)
        if kind not in KINDS:
            raise InvalidField(f"CSV line {reader.line_num}: unknown kind {kind!r}")
        if None in row:
            raise InvalidField(f"CSV line {reader.line_num}: more values than the header has columns")
        row = {k: v for k, v in row.items() if v not in (None, "")}
        result.setdefault(kind, []).append(row)
    if not result:
        raise InvalidField("the CSV file has no rows")
    return {kind: clean_rows(kind, rows) for kind, rows in result.items()}


class DirectoryService:
    def __init__(self, store: Any) -> None:
        self._directory = store.directory

    def version(self, kind: str):
        return self._directory.version(kind)

    @inlineCallbacks
    def listing(self, kind: str, ver: Any = None):
        """
        (version, rows, delta).  A client that sends the version it has
        gets the rows changed since, deleted ones included (delta True);
        one that sends nothing, or a version the server never had, gets
        the whole list.
        """
        since = None
        if ver not in (None, ""):
            try:
                since = int(ver)
            except (TypeError, ValueError, OverflowError):
                raise InvalidField("ver must be a version number") from None
        current = yield self._directory.version(kind)
        if since is not None and not 0 <= since <= current:
            since = None
        version, rows = yield self._directory.listing(kind, since)
        returnValue((version, rows, since is not None))

    @inlineCallbacks
    def import_data(self, data: bytes, fmt: str):
        """Replace the lists the file holds; {kind: (version, changed)}."""
        parsed = parse_import(data, fmt)
        result = {}
        for kind, rows in parsed.items():
            result[kind] = yield self._directory.replace(kind, rows)
        returnValue(result)
