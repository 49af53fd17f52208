# -*- test-case-name: tests.test_methodapi,tests.test_web -*-
"""
Seed 004's method API: ``POST /`` (or ``/api``) with an envelope
``{"method", "data", "sign", "_v", "_t", "token"}``, sent either as plain
JSON or as the form field ``request=<base64 AES-128-ECB of that JSON>``.

Every request is checked (signature, time window, replay, token) before
any service is called, so a refused request writes nothing.  Replies are
plain JSON, ``{"status": "1111", "data"}`` or ``{"status": "0000",
"info", "code"}``, with HTTP status 200 as seed-004 clients expect.
"""

from __future__ import annotations

import json
from typing import Any, Callable
from urllib.parse import parse_qs

from twisted.internet.defer import inlineCallbacks
from twisted.web.iweb import IRequest

from imd.channels.methodapi.signatures import SignatureGuard
from imd.channels.methodapi.crypto import CryptoError, decrypt
from imd.errors import BadRequest, Forbidden, IMError, InvalidField, TooLarge
from imd.channels.shared.httpjson import write_json
from imd.channels.shared.web import Family

SUCCESS = "success"


def parse_envelope(raw: bytes, query: dict, key: bytes) -> dict[str, Any]:
    """The envelope of a request body (JSON, or the encrypted form field)."""
    stripped = raw.strip()
    if stripped.startswith(b"{"):
        text = stripped
    else:
        try:
            form = parse_qs(stripped.decode("ascii"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise BadRequest("the body is neither JSON nor a request= form") from None
        encrypted = form.get("request")
        if not encrypted and query.get(b"request"):
            encrypted = [query[b"request"][0].decode("ascii", "replace")]
        if not encrypted:
            raise BadRequest('the body is neither JSON nor a form with a "request" field')
        try:
            text = decrypt(key, encrypted[0])
        except CryptoError as e:
            raise BadRequest(f"request: {e}") from None
    try:
        envelope = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the request is not JSON (or was encrypted with another key)") from None
    except RecursionError:
        raise BadRequest("the request is nested too deeply") from None
    if not isinstance(envelope, dict):
        raise BadRequest("the request must be a JSON object")
    data = envelope.get("data", {})
    if isinstance(data, str):
        try:
            data = json.loads(data) if data.strip() else {}
        except ValueError:
            raise InvalidField("data must be a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidField("data must be a JSON object")
    envelope["data"] = data
    return envelope


# name -> (needs a token, handler(server, uid, data) -> Deferred of reply data)
METHODS: dict[str, tuple[bool, Callable]] = {}


def method(name: str, authenticated: bool = True):
    def register(fn):
        METHODS[name] = (authenticated, inlineCallbacks(fn))
        return fn

    return register


@method("com.user.register", authenticated=False)
def register(server, uid, data):
    user = yield server.accounts.register_by_telephone(
        data.get("telephone"), data.get("password"), data.get("sms_code")
    )
    return {"user_id": user.uid}


@method("com.user.login", authenticated=False)
def login(server, uid, data):
    session = yield server.accounts.login_by_telephone(
        data.get("telephone"), data.get("password"), data.get("sms_code")
    )
    return {"user_id": session.uid, "token": session.token, "expires_in": session.expires_in}


@method("com.user.smsCode", authenticated=False)
def sms_code(server, uid, data):
    yield server.accounts.request_sms_code(data.get("telephone"))
    return SUCCESS


@method("com.user.addfriend")
def add_friend(server, uid, data):
    roster = server.roster
    opt = data.get("opt")
    if opt == "addMsg":
        yield roster.request_by_telephone(uid, data.get("mobile"), data.get("msg", ""))
    elif opt == "browseMsg":
        yield roster.browse(uid, data.get("sender"))
    elif opt in ("agreeMsg", "repulseMsg"):
        yield roster.answer_from(uid, data.get("sender"), opt == "agreeMsg")
    else:
        raise InvalidField("opt must be addMsg, browseMsg, agreeMsg or repulseMsg")
    return SUCCESS


@method("com.user.createGroup")
def create_group(server, uid, data):
    group = yield server.groups.create(uid, data.get("name") or data.get("group_name") or "群聊")
    return {"group_id": group.gid}


@method("com.user.addGroup")
def add_group(server, uid, data):
    groups = server.groups
    opt = data.get("opt")
    if opt == "addMsg":
        yield groups.invite_many(uid, data.get("group_id"), data.get("friends"))
    elif opt == "browseMsg":
        yield groups.browse(uid, data.get("group_id"))
    elif opt == "repulseMsg":
        yield groups.answer(uid, data.get("group_id"), False)
    else:
        raise InvalidField("opt must be addMsg, browseMsg or repulseMsg")
    return SUCCESS


@method("com.user.getFriends")
def get_friends(server, uid, data):
    friends = yield server.roster.friends(uid)
    return [{"friend_id": f.fid, "friend_name": f.remark or f.name or f.fid} for f in friends]


@method("com.user.getGroups")
def get_groups(server, uid, data):
    result = {}
    for group in (yield server.groups.groups_of(uid)):
        members = yield server.groups.members(uid, group.gid)
        result[group.gid] = [
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
    return result


class MethodApi:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.key = server.config.socket.aes_key.encode("utf-8")
        self.max_body = server.config.http.max_body
        self.guard = SignatureGuard(server.config.auth.sign_window, server.reactor, server.hub.claim_once)

    @inlineCallbacks
    def handle(self, request):
        length = request.getHeader(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise TooLarge(f"the body is larger than {self.max_body} bytes")
        raw = request.content.read(self.max_body + 1)
        if len(raw) > self.max_body:
            raise TooLarge(f"the body is larger than {self.max_body} bytes")
        envelope = parse_envelope(raw, request.args or {}, self.key)
        name = envelope.get("method")
        entry = METHODS.get(name) if isinstance(name, str) else None
        if entry is None:
            raise InvalidField(f"unknown method {name!r}")
        authenticated, handler = entry
        data = envelope["data"]
        yield self.guard.check(data, envelope.get("sign"), envelope.get("_t"), name)
        uid = None
        if authenticated:
            token = envelope.get("token") or data.get("token")
            uid = yield self.server.accounts.authenticate(token)
            claimed = data.get("user_id")
            if claimed not in (None, "") and str(claimed) != uid:
                raise Forbidden("user_id is not the token's user")
        result = yield handler(self.server, uid, data)
        return result


def write_failure(request: IRequest, error: IMError) -> bytes:
    # Seed-004 clients read the reply's status, not the HTTP one.
    return write_json(request, {"status": "0000", "info": error.message, "code": error.code})


def make_app(server: Any) -> Family:
    family = Family(
        "methodapi", server.metrics, write_failure, prefixes=("/api/",), internal_message="internal error; try again"
    )
    api = MethodApi(server)

    @inlineCallbacks
    def endpoint(request):
        data = yield api.handle(request)
        return write_json(request, {"status": "1111", "data": data})

    family.app.route("/", methods=["POST"])(endpoint)
    family.app.route("/api", methods=["POST"])(endpoint)
    return family
