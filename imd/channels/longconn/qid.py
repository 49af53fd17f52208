# -*- test-case-name: tests.test_qid,tests.test_web -*-
"""
Seed 001's short connection: ``POST /qid/<QID>`` with a JSON body and a
bearer token, answered in the seed's ``text`` / ``table`` / ``list`` forms
(docs/qid.rst).  Every handler acts as the token's user; the core services
decide what that user may see.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import inlineCallbacks

from imd.channels.longconn import serialize
from imd.core.groups import group_data, member_data
from imd.core.messages import message_data
from imd.errors import Forbidden, NotFound
from imd.channels.shared.httpjson import bearer_token, read_json, write_error, write_json
from imd.channels.shared.web import Family
from imd.channels.longconn.wiretime import cursor_span, cursor_time

if TYPE_CHECKING:
    from imd.server import Server


def text(value: Any) -> dict:
    return {"type": "text", "result": str(value)}


def pairs(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"n": n, "v": v} for n, v in row.items()]


def table(rows: list[dict[str, Any]]) -> dict:
    return {"type": "table", "result": [pairs(row) for row in rows]}


def _messages(messages) -> list[dict[str, Any]]:
    return [serialize.message(message_data(m)) for m in messages]


def directory_rows(rows: list[dict], delta: bool) -> list[dict]:
    out = []
    for row in rows:
        row = {k: ("" if v is None else v) for k, v in row.items()}
        deleted = row.pop("deleted")
        if delta:
            row["deleted"] = "1" if deleted else "0"
        out.append(row)
    return out


# Each handler: (server, uid, token, body) -> Deferred or value of a result dict.
Handler = Callable[["Server", str, str, dict], Any]
HANDLERS: dict[str, Handler] = {}


def qid(name: str):
    def register(fn: Handler) -> Handler:
        HANDLERS[name] = inlineCallbacks(fn)
        return fn

    return register


@qid("QID_IM_GET_ROSTER_ALL")
def roster_all(server, uid, token, body):
    friends = yield server.roster.friends(uid)
    groups = yield server.roster.friend_groups(uid)
    profile = yield server.profiles.get(uid)
    result = [
        {"fid": f.fid, "gid": f.gid, "fname": f.remark, "name": f.name, "sign": f.sign, "avatar": f.avatar}
        for f in friends
    ]
    return {
        "type": "text",
        "result": json.dumps(result, ensure_ascii=False),
        "ext": {
            "avatar": profile["avatar"],
            "grp": serialize.friend_groups(groups),
            "sign": profile["sign"],
        },
    }


@qid("QID_IM_SET_ROSTER_GRP")
def set_roster_groups(server, uid, token, body):
    yield server.roster.set_friend_groups(uid, serialize.parse_friend_groups(body.get("grp")))
    return text("1")


@qid("QID_IM_SET_ROSTER_SIGN")
def set_sign(server, uid, token, body):
    yield server.profiles.set_sign(uid, body.get("sign"))
    return text("1")


@qid("QID_IM_SET_ROSTER_AVATAR")
def set_avatar(server, uid, token, body):
    yield server.profiles.set_avatar(uid, body.get("avatar"))
    return text("1")


@qid("QID_IM_SET_USER_PWD")
def set_password(server, uid, token, body):
    yield server.accounts.change_password(uid, body.get("old"), body.get("new"), current_token=token)
    return text("1")


@qid("QID_IM_SET_ROSTER_FRD_GID")
def set_friend_group(server, uid, token, body):
    yield server.roster.set_friend_group(uid, body.get("fid"), body.get("gid"))
    return text("1")


@qid("QID_IM_SET_ROSTER_FRD_NAME")
def set_friend_name(server, uid, token, body):
    yield server.roster.set_remark(uid, body.get("fid"), body.get("name"))
    return text("1")


@qid("QID_IM_GET_OFFLINE_MSG")
def offline(server, uid, token, body):
    messages = yield server.messages.offline(uid)
    return table(_messages(messages))


@qid("QID_IM_RECIVE_OFFLINE_MSG")
def offline_received(server, uid, token, body):
    yield server.messages.received_until(uid, *cursor_span(body))
    return text("1")


@qid("QID_IM_GET_ROSTER_MSG_HISTORY")
def history(server, uid, token, body):
    messages = yield server.messages.history(uid, body.get("msgto"))
    return table(_messages(messages))


@qid("QID_IM_SET_GROUP")
def create_group(server, uid, token, body):
    creator = body.get("fname")
    if creator not in (None, "", uid):
        raise Forbidden("a group's creator is the user who creates it")
    group = yield server.groups.create(uid, body.get("gname"), body.get("type", 1), body.get("exit", True))
    return text(group.gid)


@qid("QID_IM_GET_GROUP_LIST")
def group_list(server, uid, token, body):
    groups = yield server.groups.groups_of(uid)
    return table([serialize.group(group_data(g)) for g in groups])


@qid("QID_IM_GET_GROUP_PEER_LIST")
def group_members(server, uid, token, body):
    members = yield server.groups.members(uid, body.get("gid"))
    return table([serialize.member(member_data(m)) for m in members])


@qid("QID_IM_GET_GROUP_OFFLINE_MSG")
def group_offline(server, uid, token, body):
    messages = yield server.messages.group_offline(uid, body.get("gid"))
    return table(_messages(messages))


@qid("QID_IM_RECIVE_GROUP_OFFLINE_MSG")
def group_offline_received(server, uid, token, body):
    if body.get("seq") not in (None, ""):
        yield server.messages.group_synced(uid, body.get("gid"), seq=body["seq"])
    else:
        yield server.messages.group_synced(uid, body.get("gid"), until_ms=cursor_time(body))
    return text("1")


@qid("QID_IM_GET_GROUP_MSG_HISTORY")
def group_history(server, uid, token, body):
    messages = yield server.messages.group_history(uid, body.get("gid"))
    return table(_messages(messages))


def _directory(kind: str):
    def version(server, uid, token, body):
        v = yield server.directory.version(kind)
        return text(v)

    def listing(server, uid, token, body):
        version, rows, delta = yield server.directory.listing(kind, body.get("ver"))
        result = table(directory_rows(rows, delta))
        result["ext"] = {"ver": str(version), "delta": delta}
        return result

    return version, listing


for _kind, _prefix in (("departments", "DEPT"), ("contacts", "CONTACTS")):
    _version, _listing = _directory(_kind)
    qid(f"QID_IM_GET_{_prefix}_VER")(_version)
    qid(f"QID_IM_GET_{_prefix}_LIST")(_listing)


@qid("QID_IM_GET_USER_INFO")
def user_info(server, uid, token, body):
    profile = yield server.profiles.get(body.get("uname") or uid)
    return {"type": "list", "result": pairs(profile)}


@qid("QID_IM_SET_USER_INFO")
def set_user_info(server, uid, token, body):
    if body.get("uname") not in (None, "", uid):
        raise Forbidden("you can only change your own profile")
    yield server.profiles.set(uid, body)
    return text("1")


@qid("QID_IM_FIND_USER")
def find_user(server, uid, token, body):
    """imd's extension: who has exactly this user id or telephone (docs/qid.rst)."""
    cards = yield server.lookup.find(uid, body.get("q"))
    return table([{"uid": c.uid, "name": c.name, "avatar": c.avatar} for c in cards])


def make_app(server: "Server") -> Family:
    family = Family("qid", server.metrics, write_error, prefixes=("/qid/",))
    max_body = server.config.http.max_body

    @family.app.route("/qid/<string:name>", methods=["POST"])
    @inlineCallbacks
    def handle(request, name):
        token = bearer_token(request)
        uid = yield server.accounts.authenticate(token)
        body = read_json(request, max_body)
        handler = HANDLERS.get(name)
        if handler is None:
            raise NotFound(f"unknown QID {name}")
        result = yield handler(server, uid, token, body)
        return write_json(request, result)

    return family
