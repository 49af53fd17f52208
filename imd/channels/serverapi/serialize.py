# -*- test-case-name: tests.test_serialize -*-
"""
The server-API design's one serializer: replies in Yunxin's words
(``code``, ``desc``, ``info``, ``accid``, ``faccid``), imd's errors as
Yunxin's codes, and outbox rows as the bodies of message-copy webhooks
(``eventType``, ``convType``, ``msgType``, every value a string).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from imd.channels.serverapi.checksum import NoApp, UnknownApp
from imd.errors import (
    BadRequest,
    BadSignature,
    Conflict,
    Forbidden,
    IMError,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    ReplayedRequest,
    StaleRequest,
    TooLarge,
    TooLate,
    Unauthenticated,
)

OK = 200
# Yunxin's codes, most specific type first.
_CODES: list[tuple[type[IMError], int]] = [
    (NoApp, 403),
    (UnknownApp, 403),
    (BadSignature, 414),
    (StaleRequest, 414),
    (ReplayedRequest, 431),
    (TooLate, 508),
    (TooLarge, 414),
    (BadRequest, 414),
    (MethodNotAllowed, 414),
    (Unauthenticated, 403),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 417),
    (RateLimited, 416),
]


def code_for(error: IMError) -> int:
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return 500


def failure(error: IMError) -> dict[str, Any]:
    return {"code": code_for(error), "desc": error.message}


def created(uid: str, token: str, name: str) -> dict[str, Any]:
    return {"code": OK, "info": {"token": token, "accid": uid, "name": name}}


def user_info(user: Any) -> dict[str, Any]:
    """A user (L{imd.store.users.User}) in ``getUinfos``."""
    return {"accid": user.uid, "name": user.name, "icon": user.avatar, "sign": user.sign}


def team(group: Any, members: Any, with_members: bool) -> dict[str, Any]:
    """A group (L{imd.store.groups.Group}) as a team of ``team/query``."""
    info = {
        "tid": group.gid,
        "tname": group.name,
        "owner": group.creator,
        "createtime": group.created_at,
        "size": len(members),
        "admins": [m.uid for m in members if m.role == 1 and m.uid != group.creator],
    }
    if with_members:
        info["members"] = [m.uid for m in members if m.uid != group.creator]
    return info


def friends(rows: Any) -> dict[str, Any]:
    """L{imd.store.roster} friend rows for ``friend/get``."""
    items = [{"faccid": f.fid, "alias": f.remark} for f in rows]
    return {"code": OK, "size": len(items), "friends": items}


# -- message copy -------------------------------------------------------------

_MSG_TYPES = {
    "text": "TEXT",
    "image": "PICTURE",
    "voice": "AUDIO",
    "file": "FILE",
    "custom": "CUSTOM",
    "notification": "NOTIFICATION",
}
# The client type Yunxin names for a message sent through this API.
API_RESOURCE = "rest"


def _client_type(resource: str) -> str:
    return "REST" if resource == API_RESOURCE else "PC"


def _copy(data: Mapping[str, Any], conv: str, client_type: str, nick: str) -> dict[str, str]:
    """What an eventType 1 body says of any message or notification."""
    group = "gid" in data
    return {
        "eventType": "1",
        "convType": f"{conv}TEAM" if group else f"{conv}PERSON",
        "to": data["gid"] if group else data["to"],
        "fromAccount": data["from"],
        "fromClientType": client_type,
        "fromNick": nick,
        "msgTimestamp": str(data["time"]),
    }


def copied_message(data: Mapping[str, Any], nick: str) -> dict[str, str]:
    """A message (L{imd.store.messages.message_data}) as an eventType 1 body."""
    return {
        **_copy(data, "", _client_type(data["from_res"]), nick),
        "fromDeviceId": data["from_res"],
        "msgType": _MSG_TYPES.get(data["kind"], "CUSTOM"),
        "body": data["body"],
        "attach": "",
        "msgidClient": data["msgid"],
        "msgidServer": str(data["id"]),
        "resendFlag": "0",
    }


def copied_notice(data: Mapping[str, Any], nick: str) -> dict[str, str]:
    """A custom notification (L{imd.core.notices.notice_data}) as an eventType 1 body."""
    return {**_copy(data, "CUSTOM_", "REST", nick), "msgType": "CUSTOM", "body": "", "attach": data["body"]}


def copied_recall(data: Mapping[str, Any], nick: str) -> dict[str, str]:
    """
    A recall (L{imd.store.messages.recall_data}) as an eventType 7 (1:1)
    or 8 (team) body: who recalled which message, and when.
    """
    group = "gid" in data
    return {
        "eventType": "8" if group else "7",
        "convType": "TEAM" if group else "PERSON",
        "fromAccount": data["from"],
        "fromNick": nick,
        "to": data["gid"] if group else data["to"],
        "msgidClient": data["msgid"],
        "msgidServer": str(data["id"]),
        "deleteMsgid": str(data["id"]),
        "msgTimestamp": str(data["recalled_at"]),
        "sendTimestamp": str(data["time"]),
    }


def copied_receipt(data: Mapping[str, Any], nick: str) -> dict[str, str]:
    """
    A read receipt (L{imd.store.messages.receipt_data}) as an eventType 30
    body: C{objects} is a JSON string, as the seed shows, whose
    C{fromAccount} read C{toAccount}'s message.
    """
    objects = [
        {
            "toAccount": data["to"],
            "fromAccount": data["from"],
            "msgidClient": data["msgid"],
            "msgidServer": str(data["id"]),
            "timestamp": data["time"],
            "clientType": "PC",
        }
    ]
    return {"eventType": "30", "objects": json.dumps(objects, ensure_ascii=False, separators=(",", ":"))}


# Yunxin's client types by imd channel.
_CLIENT_TYPES = {"longconn": "PC", "socket": "AOS", "xmpp": "PC"}


def _copied_session(event_type: str):
    def render(data: Mapping[str, Any], nick: str) -> dict[str, str]:
        """A session's start or end (L{imd.core.sessions.session_data}): eventType 2 or 3."""
        return {
            "eventType": event_type,
            "accid": data["uid"],
            "clientIp": data["address"],
            "clientType": _CLIENT_TYPES.get(data["channel"], "PC"),
            "deviceId": data["resource"],
            "code": "200",
            "timestamp": str(data["time"]),
        }

    return render


# Outbox kind -> its renderer; each takes the row's data and the name of its user.
COPIES = {
    "message": copied_message,
    "notice": copied_notice,
    "recall": copied_recall,
    "receipt": copied_receipt,
    "login": _copied_session("2"),
    "logout": _copied_session("3"),
}
