# -*- test-case-name: tests.test_serverapi -*-
"""
Seed 003's server API: ``POST /nimserver/<module>/<name>.action`` with a
form body, signed by the headers AppKey, Nonce, CurTime and CheckSum.

Every call is checked (signature, time, Nonce) before any service is
called, so a refused call writes nothing.  Every answer is HTTP 200 with
a JSON body whose ``code`` is 200 or one of Yunxin's error codes, with a
``desc`` saying what is wrong.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import inlineCallbacks
from twisted.web.iweb import IRequest

from imd.channels.serverapi import serialize
from imd.channels.serverapi.checksum import CheckSumGuard, UnknownApp
from imd.channels.serverapi.form import Form, read_form
from imd.channels.shared.httpjson import client_address, write_json
from imd.channels.shared.web import Family
from imd.errors import BadSignature, Conflict, IMError, InvalidField, NotFound

if TYPE_CHECKING:
    from imd.server import Server

OK = {"code": serialize.OK}
# Peers one unreadCount call may ask about.
MAX_PEERS = 500
# msg/sendMsg's type -> imd's message kind.
SEND_KINDS = {0: "text", 1: "image", 2: "voice", 6: "file", 100: "custom"}

# "module/name" -> handler(server, form) -> Deferred of the reply.
CALLS: dict[str, Callable[["Server", Form], Any]] = {}


def call(path: str):
    def register(fn):
        CALLS[path] = inlineCallbacks(fn)
        return fn

    return register


@call("user/create")
def user_create(server, form):
    uid = form.accid()
    name = form.text("name", 64)
    token = form.text("token", 128) or None
    profile = _profile(form)
    try:
        user, token = yield server.accounts.register_with_token(uid, token, name)
    except Conflict:
        # Yunxin's answer, which business servers look for.
        raise InvalidField("already register") from None
    yield _set_profile(server, uid, profile)
    return serialize.created(user.uid, token, user.name)


@call("user/refreshToken")
def user_refresh_token(server, form):
    uid = form.accid()
    token = yield server.accounts.replace_token(uid)
    return {"code": serialize.OK, "info": {"token": token, "accid": uid}}


@call("user/update")
def user_update(server, form):
    uid = form.accid()
    token = form.text("token", 128)
    if token:
        yield server.accounts.replace_token(uid, token)
    elif (yield server.accounts.get_user(uid)) is None:
        raise NotFound(f"no user {uid}")
    return OK


@call("user/block")
def user_block(server, form):
    yield server.accounts.set_disabled(form.accid(), True)
    return OK


@call("user/unblock")
def user_unblock(server, form):
    yield server.accounts.set_disabled(form.accid(), False)
    return OK


@call("user/getUinfos")
def user_get_uinfos(server, form):
    infos = []
    for uid in form.accid_list("accids", 200):
        user = yield server.accounts.get_user(uid)
        if user is not None:
            infos.append(serialize.user_info(user))
    return {"code": serialize.OK, "uinfos": infos}


# Profile parameters of user/create and user/updateUinfo, and their longest values.
PROFILE = {"name": 64, "icon": 500, "sign": 256, "email": 64, "birth": 16, "mobile": 32, "gender": 1}
# Those stored as imd profile fields, and their names there.
PROFILE_FIELDS = {"name": "name", "email": "email", "birth": "birthday", "mobile": "cellphone", "gender": "sex"}


def _profile(form: Form) -> dict[str, str]:
    """The profile parameters of user/create and user/updateUinfo that were given, checked."""
    values = {}
    for name, limit in PROFILE.items():
        if name in form.values:
            values[name] = form.text(name, limit)
    if values.get("gender", "0") not in ("", "0", "1", "2"):
        raise InvalidField("gender must be 0, 1 or 2")
    return values


@inlineCallbacks
def _set_profile(server, uid: str, values: dict[str, str]):
    fields = {key: values[name] for name, key in PROFILE_FIELDS.items() if name in values}
    if fields:
        yield server.profiles.set(uid, fields)
    if "sign" in values:
        yield server.profiles.set_sign(uid, values["sign"])
    if "icon" in values:
        yield server.profiles.set_avatar(uid, values["icon"], uploaded=False)


@call("user/updateUinfo")
def user_update_uinfo(server, form):
    uid = form.accid()
    values = _profile(form)
    if (yield server.accounts.get_user(uid)) is None:
        raise NotFound(f"no user {uid}")
    yield _set_profile(server, uid, values)
    return OK


@call("friend/add")
def friend_add(server, form):
    uid, friend = form.accid(), form.accid("faccid")
    kind = form.integer("type", (1, 2, 3, 4))
    msg = form.text("msg", 256)
    roster = server.roster
    if kind == 1:
        yield roster.befriend(uid, friend)
    elif kind == 2:
        yield roster.request(uid, friend, uuid.uuid4().hex, msg)
    else:
        yield roster.answer_from(uid, friend, kind == 3)
    return OK


@call("friend/delete")
def friend_delete(server, form):
    yield server.roster.remove(form.accid(), form.accid("faccid"))
    return OK


@call("friend/get")
def friend_get(server, form):
    rows = yield server.roster.friends(form.accid())
    return serialize.friends(rows)


@call("msg/sendMsg")
def send_msg(server, form):
    sender = form.accid("from")
    team = form.integer("ope", (0, 1)) == 1
    to = form.text("to", 50, required=True)
    kind = SEND_KINDS.get(form.integer("type", tuple(SEND_KINDS)))
    body = form.json("body", 5000, required=True)
    if kind == "text":
        if not isinstance(body, dict) or not isinstance(body.get("msg"), str):
            raise InvalidField('a text body is {"msg": "..."}')
        text = body["msg"]
    else:
        text = form.text("body", 5000)
    if (yield server.accounts.get_user(sender)) is None:
        raise NotFound(f"no user {sender}")
    target = {"gid": to} if team else {"to": to.lower()}
    message = yield server.messages.send(
        sender, uuid.uuid4().hex, text, kind=kind, sender_res=serialize.API_RESOURCE, **target
    )
    return {"code": serialize.OK, "data": {"msgid": message.id, "timetag": message.created_at, "antispam": False}}


@call("msg/sendAttachMsg")
def send_attach_msg(server, form):
    sender = form.accid("from")
    team = form.integer("msgtype", (0, 1)) == 1
    to = form.text("to", 50, required=True)
    attach = form.text("attach", 4096, required=True)
    keep = form.integer("save", (1, 2), default=2) == 2
    option = form.json("option", 1024, default={})
    if not isinstance(option, dict):
        raise InvalidField("option must be a JSON object")
    badge, route = option.get("badge", True), option.get("route", True)
    if not isinstance(badge, bool) or not isinstance(route, bool):
        raise InvalidField("option's badge and route must be true or false")
    target = {"gid": to} if team else {"to": to.lower()}
    yield server.notices.send(sender, attach, keep=keep, badge=badge, report=route, **target)
    return OK


@call("msg/recall")
def recall(server, form):
    sender = form.accid("from")
    form.integer("type", (7, 8))
    message_id = form.text("deleteMsgid", 20, required=True)
    if not message_id.isdigit() or not message_id.isascii():
        raise InvalidField("deleteMsgid is the msgid sendMsg answered (msgidServer)")
    yield server.messages.recall_by_id(sender, int(message_id))
    return OK


@call("team/create")
def team_create(server, form):
    owner = form.accid("owner")
    name = form.text("tname", 64, required=True)
    members = form.accid_list("members", 200)
    invite = form.integer("magree", (0, 1), default=0) == 1
    if (yield server.accounts.get_user(owner)) is None:
        raise NotFound(f"no user {owner}")
    group = yield server.groups.create(owner, name)
    others = [m for m in members if m != owner]
    if others:
        if invite:
            yield server.groups.invite_many(owner, group.gid, others)
        else:
            yield server.groups.add_members(owner, group.gid, others)
    return {"code": serialize.OK, "tid": group.gid}


@call("team/add")
def team_add(server, form):
    gid, owner = form.text("tid", 50, required=True), form.accid("owner")
    members = form.accid_list("members", 200)
    if form.integer("magree", (0, 1), default=0) == 1:
        yield server.groups.invite_many(owner, gid, members)
    else:
        yield server.groups.add_members(owner, gid, members)
    return OK


@call("team/kick")
def team_kick(server, form):
    gid, owner = form.text("tid", 50, required=True), form.accid("owner")
    members = form.accid_list("members", 200) if "members" in form.values else [form.accid("member")]
    for member in members:
        yield server.groups.remove_member(owner, gid, member)
    return OK


@call("team/remove")
def team_remove(server, form):
    yield server.groups.delete(form.accid("owner"), form.text("tid", 50, required=True))
    return OK


@call("team/query")
def team_query(server, form):
    gids = form.json("tids", 64 * 100, required=True)
    if not isinstance(gids, list) or len(gids) > 100 or not all(isinstance(g, (str, int)) for g in gids):
        raise InvalidField("tids must be a JSON array of at most 100 team ids")
    with_members = form.integer("ope", (0, 1), default=0) == 1
    teams = []
    for gid in gids:
        found = yield server.groups.info(str(gid))
        if found is not None:
            teams.append(serialize.team(*found, with_members))
    return {"code": serialize.OK, "tinfos": teams}


@call("msg/unreadCount")
def unread_count(server, form):
    uid = form.accid()
    counts = yield server.messages.unread(uid, form.accid_list("peers", MAX_PEERS))
    return {"code": serialize.OK, "counts": counts}


def write_failure(request: IRequest, error: IMError) -> bytes:
    # Yunxin answers every call with HTTP 200; the body's code tells.
    return write_json(request, serialize.failure(error))


def make_app(server: "Server") -> Family:
    family = Family("serverapi", server.metrics, write_failure, prefixes=("/nimserver/",))
    guard = CheckSumGuard(server.apps, server.config.auth.sign_window, server.reactor, server.claim_once)
    max_body = server.config.serverapi.max_body

    @family.app.route("/nimserver/<module>/<name>.action", methods=["POST"])
    @inlineCallbacks
    def endpoint(request, module, name):
        handler = CALLS.get(f"{module}/{name}")
        if handler is None:
            raise NotFound(f"no call {module}/{name}")
        # Read before the check: the body is the same either way, and a
        # refused call should not leave it unread on the connection.
        form = read_form(request, max_body)

        def header(key: str) -> str | None:
            value = request.getHeader(key.encode("ascii"))
            return None if value is None else value.decode("latin-1").strip()

        # A business server's signature is its login: wrong ones back off
        # like wrong passwords (Yunxin's 416), per address.
        address = client_address(request)
        yield server.accounts.login_allowed("serverapi", address, "serverapi")
        try:
            yield guard.check(header)
        except (BadSignature, UnknownApp):
            yield server.accounts.login_failed("serverapi", address, "serverapi")
            raise
        reply = yield handler(server, form)
        return write_json(request, reply)

    return family
