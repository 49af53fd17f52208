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

from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs

from twisted.internet.defer import inlineCallbacks
from twisted.web.iweb import IRequest

from imd.channels.methodapi.signatures import SignatureGuard
from imd.channels.methodapi import serialize
from imd.channels.shared.jsonobj import parse_object, parse_value
from imd.channels.methodapi.crypto import CryptoError, decrypt
from imd.errors import BadRequest, Forbidden, IMError, InvalidField
from imd.channels.shared.httpjson import client_address, read_body, write_json
from imd.channels.shared.web import Family

if TYPE_CHECKING:
    from imd.server import Server

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
    envelope = parse_object(text, "the request", BadRequest, " (or was encrypted with another key)")
    data = envelope.get("data", {})
    if isinstance(data, str):
        data = parse_object(data, "data", InvalidField)
    elif not isinstance(data, dict):
        raise InvalidField("data must be a JSON object")
    envelope["data"] = data
    return envelope


# name -> (needs a token, handler(server, uid, data) -> Deferred of reply data)
METHODS: dict[str, tuple[bool, Callable[["Server", str | None, dict, str | None], Any]]] = {}


def method(name: str, authenticated: bool = True):
    def register(fn):
        METHODS[name] = (authenticated, inlineCallbacks(fn))
        return fn

    return register


@method("com.user.register", authenticated=False)
def register(server, uid, data, address):
    user = yield server.accounts.register_by_telephone(
        data.get("telephone"), data.get("password"), data.get("sms_code")
    )
    return {"user_id": user.uid}


@method("com.user.login", authenticated=False)
def login(server, uid, data, address):
    session = yield server.accounts.login_by_telephone(
        data.get("telephone"), data.get("password"), data.get("sms_code"), address
    )
    return {"user_id": session.uid, "token": session.token, "expires_in": session.expires_in}


@method("com.user.smsCode", authenticated=False)
def sms_code(server, uid, data, address):
    yield server.accounts.request_sms_code(data.get("telephone"))
    return SUCCESS


@method("com.user.addfriend")
def add_friend(server, uid, data, address):
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
def create_group(server, uid, data, address):
    group = yield server.groups.create(uid, data.get("name") or data.get("group_name") or "群聊")
    return {"group_id": group.gid}


@method("com.user.addGroup")
def add_group(server, uid, data, address):
    groups = server.groups
    opt = data.get("opt")
    if opt == "addMsg":
        friends = data.get("friends")
        if isinstance(friends, str):
            # Seed 004 clients send the list as a JSON string as often as not.
            friends = parse_value(friends, "friends", InvalidField)
        yield groups.invite_many(uid, data.get("group_id"), friends)
    elif opt == "browseMsg":
        yield groups.browse(uid, data.get("group_id"))
    elif opt == "repulseMsg":
        yield groups.answer(uid, data.get("group_id"), False)
    else:
        raise InvalidField("opt must be addMsg, browseMsg or repulseMsg")
    return SUCCESS


@method("com.user.getFriends")
def get_friends(server, uid, data, address):
    friends = yield server.roster.friends(uid)
    return serialize.friends(friends)


@method("com.user.findUser")
def find_user(server, uid, data, address):
    """imd's extension: who has exactly this user id or telephone (docs/methodapi.rst)."""
    cards = yield server.lookup.find(uid, data.get("keyword"))
    return serialize.cards(cards)


@method("com.user.getGroups")
def get_groups(server, uid, data, address):
    result = {}
    for group in (yield server.groups.groups_of(uid)):
        members = yield server.groups.members(uid, group.gid)
        result[group.gid] = serialize.group_members(group, members)
    return result


class MethodApi:
    def __init__(self, server: "Server") -> None:
        self.server = server
        self.key = server.config.socket.aes_key.encode("utf-8")
        self.max_body = server.config.http.max_body
        self.guard = SignatureGuard(server.config.auth.sign_window, server.reactor, server.claim_once)

    @inlineCallbacks
    def handle(self, request):
        envelope = parse_envelope(read_body(request, self.max_body), request.args or {}, self.key)
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
        result = yield handler(self.server, uid, data, client_address(request))
        return result


def write_failure(request: IRequest, error: IMError) -> bytes:
    # Seed-004 clients read the reply's status, not the HTTP one.
    return write_json(request, {"status": "0000", "info": error.message, "code": error.code})


def make_app(server: "Server") -> Family:
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
