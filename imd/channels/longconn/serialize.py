# -*- test-case-name: tests.test_serialize -*-
"""
The long-connection design's one serializer: core objects and hub events
in seed 001's words (``fname``, ``right``, ``peers``, the ``grp`` JSON
string, time strings), and those words back into core values.  The long
connection and the QID routes both write through it, so a message row,
a group or a member reads the same whichever way it reached the client.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import orjson

from imd.channels.longconn import msgtypes as T
from imd.channels.longconn.wiretime import format_time
from imd.channels.shared.jsonobj import parse_value
from imd.core import events
from imd.core.roster import ANSWER_NAMES
from imd.errors import InvalidField
from imd.hub.interfaces import Event
from imd.store.roster import FriendGroup

# Seed 001's keys for the names of an answered friend request, in the order
# of ANSWER_NAMES.
_ANSWER_KEYS = dict(zip(("req_gid", "req_name", "resp_gid", "resp_name"), ANSWER_NAMES))


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


def message(data: Mapping[str, Any], to_res: str | None = None) -> dict[str, Any]:
    """
    A message (L{imd.core.messages.message_data}): a QID row, or with
    C{to_res} the body of a live IM_MESSAGE.  A row's C{time} is the
    server's (what offline cursors count by); a live message's is the
    sender's own, as the seed's clients show it.
    """
    group = "gid" in data
    recalled = data["recalled"]
    body = {
        "msgid": data["msgid"],
        "from": data["from"],
        "from_res": data["from_res"],
        "to": data["gid"] if group else data["to"],
        "type": "1" if group else "0",
        "kind": data["kind"],
        # A recalled message keeps its place in the conversation, not its words.
        "body": "" if recalled else data["body"],
        "time": format_time(data["time"]),
        "stime": data["time"],
        "ctime": data["client_time"],
        "recalled": "1" if recalled else "0",
    }
    if to_res is not None:
        body["to_res"] = to_res
        body["time"] = data["client_time"] or body["time"]
    if group:
        body["gid"] = data["gid"]
        body["seq"] = data["seq"]
    return body


def group(data: Mapping[str, Any]) -> dict[str, Any]:
    """A group (L{imd.core.groups.group_data}); with its members as C{peers} when given."""
    body = {
        "gid": data["gid"],
        "gname": data["name"],
        "creator": data["creator"],
        "type": str(data["type"]),
        "exit": "1" if data["exitable"] else "0",
        "time": format_time(data["created_at"]),
    }
    if "members" in data:
        body["peers"] = [member(m) for m in data["members"]]
    return body


def member(data: Mapping[str, Any]) -> dict[str, Any]:
    """A group member (L{imd.core.groups.member_data})."""
    return {
        "uid": data["uid"],
        "fname": data["name"],
        "right": str(data["role"]),
        "join_time": format_time(data["joined_at"]),
    }


def friend_groups(groups: list[FriendGroup]) -> str:
    """The ``grp`` JSON string."""
    return _json_text([{"gid": g.gid, "n": g.name, "w": g.weight, "def": g.is_default} for g in groups])


def parse_friend_groups(grp: Any) -> list[FriendGroup]:
    """
    The ``grp`` JSON string (or list) ``[{"gid", "n", "w", "def"}]`` as
    friend groups; the roster service checks them.
    """
    if isinstance(grp, str):
        grp = parse_value(grp, "grp", InvalidField)
    if not isinstance(grp, list) or not grp:
        raise InvalidField("grp must be a non-empty JSON array of friend groups")
    groups = []
    for item in grp:
        if not isinstance(item, dict):
            raise InvalidField("each friend group must be an object {gid, n, w, def}")
        groups.append(FriendGroup(gid=item.get("gid"), name=item.get("n"), weight=item.get("w", 0), is_default=item.get("def")))
    return groups


def parse_answer_names(msg: Any) -> dict[str, Any] | None:
    """An answer's ``msg``, ``{req_gid, req_name, resp_gid, resp_name}`` (or its JSON string)."""
    if msg is None or msg == "":
        return None
    if isinstance(msg, str):
        msg = parse_value(msg, "msg", InvalidField)
    if not isinstance(msg, dict):
        raise InvalidField("msg must be a JSON object {req_gid, req_name, resp_gid, resp_name}")
    return {name: msg[key] for key, name in _ANSWER_KEYS.items() if key in msg}


def _answer_msg(names: Mapping[str, Any]) -> str:
    return _json_text({key: names[name] for key, name in _ANSWER_KEYS.items() if name in names})


# -- hub events as frames


def _request(uid: str, to_res: str, d: Mapping[str, Any]) -> tuple[int, dict]:
    return T.IM_ROSTER_ADD_REQ, {
        "msgid": d["msgid"],
        "from": d["from"],
        "from_res": "",
        "to": d["to"],
        "to_res": to_res,
        "time": format_time(d["time"]),
        "msg": d["note"],
    }


def _answer(uid: str, to_res: str, d: Mapping[str, Any]) -> tuple[int, dict]:
    return T.IM_ROSTER_ADD_RESP, {
        "msgid": d["msgid"],
        "from": d["from"],
        "to": d["to"],
        "accept": d["accept"],
        "msg": _answer_msg(d["names"]),
    }


def _presence(uid: str, to_res: str, d: Mapping[str, Any]) -> tuple[int, dict]:
    return T.IM_PRESENCE, {
        "type": d["type"],
        "from": d["from"],
        "from_res": d["from_res"],
        "to": uid,
        "to_res": to_res,
        "show": d["show"],
    }


def _invite(uid: str, to_res: str, d: Mapping[str, Any]) -> tuple[int, dict]:
    return T.IM_CHATROOM, {
        "msgid": d["msgid"],
        "type": "0",
        "from": d["from"],
        "from_res": "",
        "to": d["to"],
        "to_res": to_res,
        "gid": d["gid"],
        "gname": d["name"],
    }


def _leave(uid: str, to_res: str, d: Mapping[str, Any]) -> tuple[int, dict]:
    return T.IM_CHATROOM, {
        "msgid": d["msgid"],
        "type": "2",
        "from": d["from"],
        "from_res": "",
        "to": uid,
        "to_res": to_res,
        "rid": d["gid"],
    }


def _changed(uid: str, to_res: str, d: Mapping[str, Any]) -> tuple[int, dict]:
    # Seed 001 has no frame for a change: a member removed hears that it
    # left, the others get the group again, as a new member does.
    if uid in d["removed"]:
        return _left(uid, to_res, d)
    return T.IM_NOTIFY_GROUP_DATA, group(d["group"])


def _left(uid: str, to_res: str, d: Mapping[str, Any]) -> tuple[int, dict]:
    """A group deleted, or the recipient removed from it: as if it left (as a dissolved group's members do)."""
    return _leave(uid, to_res, {"msgid": "", "from": uid, "gid": d["gid"]})


def _notice(uid: str, to_res: str, d: Mapping[str, Any]) -> tuple[int, dict]:
    group = "gid" in d
    return T.IM_NOTIFY_SYSTEM, {
        "from": d["from"],
        "attach": d["body"],
        "type": "1" if group else "0",
        "to": d["gid"] if group else d["to"],
        "time": format_time(d["time"]),
    }


_EVENTS: dict[str, Callable[[str, str, Mapping[str, Any]], tuple[int, dict]]] = {
    events.MESSAGE: lambda u, r, d: (T.IM_MESSAGE, message(d, r)),
    events.MESSAGE_COPY: lambda u, r, d: (T.IM_NOTIFY_MESSAGE, message(d, r)),
    events.ROSTER_REQUEST: _request,
    events.ROSTER_ANSWER: _answer,
    events.ROSTER_ADDED: lambda u, r, d: (T.IM_NOTIFY_ROSTER_ADD, {"frd": d["friend"]}),
    events.ROSTER_DELETED: lambda u, r, d: (T.IM_NOTIFY_ROSTER_DEL, {"frd": d["friend"]}),
    events.PRESENCE: _presence,
    events.GROUP_INVITE: _invite,
    events.GROUP_DATA: lambda u, r, d: (T.IM_NOTIFY_GROUP_DATA, group(d)),
    events.GROUP_MEMBER_ADDED: lambda u, r, d: (T.IM_NOTIFY_GROUP_PEER_ADD, dict(member(d), gid=d["gid"])),
    events.GROUP_LEAVE: _leave,
    events.GROUP_CHANGED: _changed,
    events.GROUP_DELETED: _left,
    events.RECEIPT: lambda u, r, d: (T.IM_NOTIFY_RECEIPT, dict(d)),
    events.RECALL: lambda u, r, d: (T.IM_NOTIFY_RECALL, dict(d)),
    events.NOTICE: _notice,
}


def event(uid: str, to_res: str, e: Event) -> tuple[int, dict] | None:
    """C{e} as a frame (msgtype, body) for C{uid}'s session C{to_res}; None: not for this design."""
    render = _EVENTS.get(e.kind)
    if render is None:
        return None
    return render(uid, to_res, e.data)
