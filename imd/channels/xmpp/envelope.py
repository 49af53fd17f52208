# -*- test-case-name: tests.test_xmpp_envelope -*-
"""
Seed 002's JSON envelope, carried in a message's ``<body>`` beside the
``tlim`` element::

    {compress, encode, encrypt, version, from, to, msg_id, msg_type,
     msg_time, body: [{text | file_id | msg_id, session_id?}]}

L{parse} reads what a client sends into a L{Request}, or raises
L{EnvelopeError} with the seed's error code; the other functions write
core events as envelopes.  The seed's words live here and nowhere else.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlencode

import orjson

from imd.channels.shared.jsonobj import parse_object, parse_value

HEADER = {"compress": "0", "encode": "1", "encrypt": "0", "version": "2.0.0"}
# imd's message kinds and the seed's number for each (MTT-00N 1:1, MTS-00N group).
KIND_CODES = {"text": "000", "image": "001", "file": "002", "voice": "003"}
CODE_KINDS = {code: kind for kind, code in KIND_CODES.items()}
TODO = "MTS-004"
DELIVERED, READ, RECALL = "MTC-000", "MTC-001", "MTC-002"
SESSION_TYPES = ("HTS-000", "HTS-001", "HTS-002")

# The seed's error codes (section 四).
EMPTY_BODY = "error-000"
BAD_MSG_TYPE = "error-001"
BAD_SESSION_TYPE = "error-002"
EMPTY_SESSION_NAME = "error-003"
BAD_SESSION_USER = "error-004"
BAD_JSON = "error-005"
BODY_NOT_ARRAY = "error-006"
NO_SESSION_ID = "error-007"
ERRORS = {
    EMPTY_BODY: "body is empty or invalid",
    BAD_MSG_TYPE: "msg_type is empty or invalid",
    BAD_SESSION_TYPE: "session_type is empty or invalid",
    EMPTY_SESSION_NAME: "session_name is empty",
    BAD_SESSION_USER: "session_user is empty or does not exist",
    BAD_JSON: "the JSON could not be parsed",
    BODY_NOT_ARRAY: "body is not a valid array",
    NO_SESSION_ID: "session_id is empty",
}


class EnvelopeError(Exception):
    """What the seed calls error-00N: C{code}, and a text for people."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(detail or ERRORS[code])
        self.code = code
        self.detail = detail or ERRORS[code]


@dataclass(frozen=True)
class Request:
    """
    What an envelope asks for.  C{action} is "send", "delivered", "read"
    or "recall"; C{kind} and C{content} are a send's; C{msgid} is the
    message a send creates or the one a receipt or recall names; C{to} the
    user of a 1:1 envelope, C{gid} the session of a group one.
    """

    action: str
    msgid: str
    to: str | None = None
    gid: str | None = None
    kind: str = "text"
    content: str = ""
    client_time: str = ""


def new_id() -> str:
    return str(uuid.uuid4())


def dumps(doc: Mapping[str, Any]) -> str:
    return orjson.dumps(doc).decode("utf-8")


def _text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) and value != "" else None


def parse(raw: str, default_to: str | None = None) -> Request:
    """
    The envelope in a ``<body>``.  C{default_to} is the user the stanza is
    addressed to, for an envelope without C{to}.  Accepts the reference
    plugin's later names ``msg_from``/``msg_to`` for ``from``/``to``.
    """
    if not raw.strip():
        raise EnvelopeError(EMPTY_BODY, "the message has no envelope")
    try:
        doc = parse_object(raw.encode("utf-8", "surrogatepass"), "the envelope", error=_BadJson)
    except _BadJson as e:
        raise EnvelopeError(BAD_JSON, str(e)) from None
    msg_type = _text(doc.get("msg_type"))
    if msg_type is None:
        raise EnvelopeError(BAD_MSG_TYPE)
    body = doc.get("body")
    if isinstance(body, str):
        # Some clients send the array as a JSON string; a blank one is no body.
        try:
            body = parse_value(body, "the body", error=_BadJson)
        except _BadJson:
            raise EnvelopeError(BODY_NOT_ARRAY) from None
    if body is None or body == "":
        raise EnvelopeError(EMPTY_BODY)
    if not isinstance(body, list):
        raise EnvelopeError(BODY_NOT_ARRAY)
    if not body or not isinstance(body[0], dict):
        raise EnvelopeError(EMPTY_BODY)
    item = body[0]
    to = _text(doc.get("to")) or _text(doc.get("msg_to")) or default_to
    client_time = _text(doc.get("msg_time")) or ""
    prefix, _, code = msg_type.partition("-")
    session_id = _text(item.get("session_id"))
    if prefix == "MTT" and code in CODE_KINDS:
        return _send(doc, item, CODE_KINDS[code], to=to, client_time=client_time)
    if prefix == "MTS" and (code in CODE_KINDS or msg_type == TODO):
        if session_id is None:
            raise EnvelopeError(NO_SESSION_ID)
        kind = "custom" if msg_type == TODO else CODE_KINDS[code]
        return _send(doc, item, kind, gid=session_id, client_time=client_time)
    if msg_type in (DELIVERED, READ, RECALL):
        msgid = _text(item.get("msg_id"))
        if msgid is None:
            raise EnvelopeError(EMPTY_BODY, "body[0].msg_id is required")
        action = {DELIVERED: "delivered", READ: "read", RECALL: "recall"}[msg_type]
        if session_id is None and to is None:
            raise EnvelopeError(BAD_SESSION_USER, "to (or body[0].session_id) is required")
        return Request(action, msgid, to=None if session_id else to, gid=session_id)
    raise EnvelopeError(BAD_MSG_TYPE, f"msg_type {msg_type[:20]!r} is not one a client sends")


def _send(doc: Mapping[str, Any], item: Mapping[str, Any], kind: str, to=None, gid=None, client_time="") -> Request:
    msgid = _text(doc.get("msg_id"))
    if msgid is None:
        raise EnvelopeError(EMPTY_BODY, "msg_id is required")
    if kind == "text":
        content = _text(item.get("text"))
    elif kind == "custom":
        # A to-do has no fixed shape: its item is kept whole.
        rest = {k: v for k, v in item.items() if k != "session_id"}
        content = dumps(rest) if rest else None
    else:
        content = _text(item.get("file_id"))
    if content is None:
        raise EnvelopeError(EMPTY_BODY, "body[0] has no text or file_id")
    if gid is None and to is None:
        raise EnvelopeError(BAD_SESSION_USER, "to is required")
    return Request("send", msgid, to=to, gid=gid, kind=kind, content=content, client_time=client_time)


class _BadJson(Exception):
    pass


def message(d: Mapping[str, Any]) -> dict[str, Any]:
    """A core message (L{imd.core.messages.message_data}) as an envelope."""
    group = "gid" in d
    kind = d["kind"]
    content = "" if d["recalled"] else d["body"]
    if group and kind == "custom":
        msg_type = TODO
        try:
            item = parse_value(content, "the body", error=_BadJson, blank={})
        except _BadJson:
            item = None
        if not isinstance(item, dict):
            item = {"text": content}
    else:
        code = KIND_CODES.get(kind, "000")
        msg_type = ("MTS-" if group else "MTT-") + code
        item = {"file_id": content} if code != "000" else {"text": content}
    if group:
        item = dict(item, session_id=d["gid"])
    client_time = d["client_time"]
    doc = dict(
        HEADER,
        **{
            "from": d["from"],
            "to": d["gid"] if group else d["to"],
            "msg_id": d["msgid"],
            "msg_type": msg_type,
            "msg_time": client_time if client_time.isdigit() else str(d["time"]),
            "body": [item],
        },
    )
    if d["recalled"]:
        doc["recalled"] = "1"
    return doc


def _command(msg_type: str, frm: str, to: str, d: Mapping[str, Any], now: int) -> dict[str, Any]:
    item = {"msg_id": d["msgid"]}
    if "gid" in d:
        item["session_id"] = d["gid"]
    return dict(HEADER, **{"from": frm, "to": to, "msg_id": new_id(), "msg_type": msg_type, "msg_time": str(now), "body": [item]})


def receipt(d: Mapping[str, Any], to: str, now: int) -> dict[str, Any]:
    """A core receipt (for the message's sender C{to}): MTC-000 delivered, MTC-001 read."""
    return _command(DELIVERED if d["kind"] == "delivered" else READ, d["from"], to, d, now)


def recall(d: Mapping[str, Any], now: int) -> dict[str, Any]:
    """A core recall, for the message's recipients (and the sender's other sessions)."""
    return _command(RECALL, d["from"], d.get("to") or d["gid"], d, now)


def plain_text(kind: str, body: str, download_url: str = "") -> str:
    """What a stock client shows of a message: a file kind as its download URL, or named."""
    if kind in ("text", "custom", "notification"):
        return body
    if download_url:
        return f"{download_url}?{urlencode({'fileId': body})}"
    return f"[{kind}] {body}"


def _session_push(msg_type: str, gid: str, owner: str, to: str, now: int, item: dict) -> dict[str, Any]:
    return dict(
        HEADER,
        **{
            "from": owner,
            "to": to,
            "msg_id": new_id(),
            "msg_type": msg_type,
            "msg_time": str(now),
            "body": [dict({"session_id": gid, "session_user": owner}, **item)],
        },
    )


def session_added(d: Mapping[str, Any], to: str, now: int) -> dict[str, Any]:
    """HTS-000: a group (L{imd.core.groups.group_data}, with members) a user is now in."""
    return _session_push(
        "HTS-000",
        d["gid"],
        d["creator"],
        to,
        now,
        {
            "session_name": d["name"],
            "session_create_time": str(d["created_at"]),
            "session_valid": 1,
            "subscribers": [{"user_id": m["uid"]} for m in d.get("members", [])],
        },
    )


def session_modified(d: Mapping[str, Any], to: str) -> dict[str, Any]:
    """HTS-001: the owner renamed a group or changed its members."""
    changes = [{"user_id": u, "type": "add"} for u in d["added"]] + [{"user_id": u, "type": "del"} for u in d["removed"]]
    return _session_push(
        "HTS-001",
        d["gid"],
        d["owner"],
        to,
        d["time"],
        {"session_name": d["name"], "session_modify_time": str(d["time"]), "subscribers": changes},
    )


def session_deleted(d: Mapping[str, Any], to: str) -> dict[str, Any]:
    """HTS-002: the owner deleted a group."""
    return _session_push(
        "HTS-002", d["gid"], d["owner"], to, d["time"], {"session_delete_time": str(d["time"]), "session_valid": 0}
    )
