# -*- test-case-name: tests.test_serialize -*-
"""
The method-API design's one serializer: core objects and hub events in
seed 004's words, for the binary socket's pushes and the method API's
replies alike.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from imd.core import events
from imd.hub.interfaces import Event


def message(data: Mapping[str, Any]) -> dict[str, Any]:
    """A message (L{imd.core.messages.message_data}) as a ``sendmsg`` push."""
    push = {
        "action": "sendmsg",
        "from_user_id": data["from"],
        "msgid": data["msgid"],
        # A recalled message keeps its place, not its words.
        "content": "" if data["recalled"] else data["body"],
        "kind": data["kind"],
        "time": data["time"] // 1000,
    }
    if data["recalled"]:
        push["recalled"] = True
    push.update(_target(data))
    return push


def _target(data: Mapping[str, Any]) -> dict[str, Any]:
    if "gid" in data:
        return {"sendto": "group", "to_group_id": data["gid"]}
    return {"sendto": "user", "to_user_id": data["to"]}


def friends(rows) -> list[dict[str, Any]]:
    """L{imd.store.roster} friend rows for ``com.user.getFriends``."""
    return [{"friend_id": f.fid, "friend_name": f.remark or f.name or f.fid} for f in rows]


def cards(found) -> list[dict[str, Any]]:
    """L{imd.core.lookup.Card}s for ``com.user.findUser``."""
    return [{"user_id": c.uid, "name": c.name, "avatar": c.avatar} for c in found]


def group_members(group, members) -> list[dict[str, Any]]:
    """One group's entry of ``com.user.getGroups``: a row per member."""
    return [
        {
            "gid": group.gid,
            "user_id": m.uid,
            "groupId": group.gid,
            "host": None,
            "founder": group.creator,
            "name": group.name,
        }
        for m in members
    ]


_EVENTS: dict[str, Callable[[Mapping[str, Any]], dict]] = {
    events.MESSAGE: message,
    events.ROSTER_REQUEST: lambda d: {
        "action": "addfriend",
        "opt": "addMsg",
        "from_user_id": d["from"],
        "sender": d["from"],
        "msg": d["note"],
    },
    events.ROSTER_ANSWER: lambda d: {
        "action": "addfriend",
        "opt": "agreeMsg" if d["accept"] else "repulseMsg",
        "from_user_id": d["from"],
        "sender": d["from"],
    },
    events.GROUP_INVITE: lambda d: {
        "action": "addGroup",
        "opt": "addMsg",
        "from_user_id": d["from"],
        "sender": d["from"],
        "group_id": d["gid"],
        "group_name": d["name"],
    },
    events.RECALL: lambda d: {"action": "recall", "from_user_id": d["from"], "msgid": d["msgid"], **_target(d)},
    events.NOTICE: lambda d: {
        "action": "notify",
        "from_user_id": d["from"],
        "content": d["body"],
        "time": d["time"] // 1000,
        **_target(d),
    },
}


def event(e: Event) -> dict[str, Any] | None:
    """C{e} as a socket push; None: seed 004 has no push for it."""
    render = _EVENTS.get(e.kind)
    return None if render is None else render(e.data)
