# -*- test-case-name: tests.test_sessions -*-
"""
Seed 002's sessions API: ``POST /plugin/tlim/addSession``,
``modifySession`` and ``deleteSession`` (also under any ``/<project>/``
prefix).  A seed-002 *session* is an imd group whose owner sets its
members (the seed's *subscribers*) directly.

Parameters come as form fields (the reference plugin reads
``getParameter``) or as a JSON object; ``subscribers`` is a JSON array of
``{user_id}`` (with ``type: add|del`` on modify), possibly a JSON string.
A token (``token`` field, or ``Authorization: Bearer``) is required and
names the session's owner.  Answers are the seed's JSON objects:
``{"result": "ok"|"fail", "result_detail": "" | "error-00N" | code}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from twisted.internet.defer import inlineCallbacks
from twisted.web.iweb import IRequest

from imd.channels.shared.httpjson import read_body, write_json
from imd.channels.shared.jsonobj import parse_object, parse_value
from imd.channels.shared.web import Family
from imd.channels.xmpp import envelope as E
from imd.errors import BadRequest, IMError, Unauthenticated, UnknownUser

if TYPE_CHECKING:
    from imd.server import Server

SESSION_TYPES = ("0", "1", "2")


class SessionError(BadRequest):
    """A refusal the seed has a code for (C{detail}: error-00N)."""

    def __init__(self, detail: str, message: str = "") -> None:
        super().__init__(message or E.ERRORS[detail])
        self.detail = detail
        self.code = detail


def write_failure(request: IRequest, error: IMError) -> bytes:
    detail = getattr(error, "detail", None)
    if detail is None:
        detail = E.BAD_SESSION_USER if isinstance(error, UnknownUser) else error.code
    return write_json(request, {"result": "fail", "result_detail": detail, "error": error.message}, error.status)


def _params(request: IRequest, max_body: int) -> dict[str, Any]:
    """Form fields (query string and body) or a JSON object body."""
    raw = read_body(request, max_body)
    params: dict[str, Any] = {}
    for key, value in (request.args or {}).items():
        if value:
            params[key.decode("utf-8", "replace")] = value[0].decode("utf-8", "replace")
    content_type = (request.getHeader(b"content-type") or b"").decode("latin-1").lower()
    stripped = raw.strip()
    if "json" in content_type or stripped.startswith(b"{"):
        try:
            params.update(parse_object(stripped, "the body", BadRequest))
        except BadRequest as e:
            raise SessionError(E.BAD_JSON, str(e)) from None
    elif stripped and "multipart" not in content_type:
        try:
            params.update(parse_qsl(stripped.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            raise SessionError(E.EMPTY_BODY, "the body is neither JSON nor a form") from None
    return params


def _subscribers(value: Any, with_type: bool) -> list[tuple[str, str]]:
    """(user_id, type) of each subscriber."""
    if isinstance(value, str):
        try:
            value = parse_value(value, "subscribers", blank=None)
        except BadRequest as e:
            raise SessionError(E.BAD_JSON, str(e)) from None
    if value is None:
        return []
    if not isinstance(value, list):
        raise SessionError(E.BODY_NOT_ARRAY, "subscribers must be an array")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("user_id"), str) or not item["user_id"]:
            raise SessionError(E.BAD_SESSION_USER, "each subscriber is {user_id}")
        kind = item.get("type", "add")
        if with_type and kind not in ("add", "del"):
            raise SessionError(E.EMPTY_BODY, 'a subscriber\'s type is "add" or "del"')
        out.append((item["user_id"], kind))
    return out


def _text(params: dict, name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise SessionError(E.EMPTY_BODY, f"{name} must be a string")
    return value


class SessionsApi:
    def __init__(self, server: "Server") -> None:
        self.server = server

    @inlineCallbacks
    def _caller(self, request: IRequest, params: dict):
        token = _text(params, "token")
        if not token:
            header = request.getHeader(b"authorization")
            if header is not None and header.lower().startswith(b"bearer "):
                token = header[7:].decode("latin-1").strip()
        if not token:
            raise Unauthenticated("a token is required (token field or Authorization: Bearer)")
        uid = yield self.server.accounts.authenticate(token)
        # The reference plugin trusts request_user/session_user; imd only
        # accepts them when they are the token's user.
        for name in ("request_user", "session_user"):
            claimed = _text(params, name)
            if claimed not in (None, "", uid):
                raise SessionError(E.BAD_SESSION_USER, f"{name} is not the token's user")
        return uid

    def _session_id(self, params: dict) -> str:
        gid = _text(params, "session_id")
        if not gid:
            raise SessionError(E.NO_SESSION_ID)
        return gid

    @inlineCallbacks
    def add(self, request: IRequest):
        params = _params(request, self.server.config.http.max_body)
        uid = yield self._caller(request, params)
        session_type = _text(params, "session_type")
        if session_type not in SESSION_TYPES:
            raise SessionError(E.BAD_SESSION_TYPE)
        name = _text(params, "session_name")
        if name is not None and not name.strip() and "session_name" in params:
            raise SessionError(E.EMPTY_SESSION_NAME)
        subscribers = [user for user, _ in _subscribers(params.get("subscribers"), False)]
        group, members = yield self.server.groups.create_with_members(uid, subscribers, name)
        return {
            "result": "ok",
            "result_detail": "",
            "session_id": group.gid,
            "session_name": group.name,
            "session_type": session_type,
            "session_user": uid,
            "session_create_time": str(group.created_at),
            "subscribers": [{"user_id": m.uid} for m in members],
        }

    @inlineCallbacks
    def modify(self, request: IRequest):
        params = _params(request, self.server.config.http.max_body)
        uid = yield self._caller(request, params)
        gid = self._session_id(params)
        name = _text(params, "session_name")
        if name is not None and not name.strip():
            raise SessionError(E.EMPTY_SESSION_NAME)
        subscribers = _subscribers(params.get("subscribers"), True)
        add = [user for user, kind in subscribers if kind == "add"]
        remove = [user for user, kind in subscribers if kind == "del"]
        when = yield self.server.groups.change(uid, gid, name, add, remove)
        return {"result": "ok", "result_detail": "", "session_id": gid, "session_modify_time": str(when)}

    @inlineCallbacks
    def delete(self, request: IRequest):
        params = _params(request, self.server.config.http.max_body)
        uid = yield self._caller(request, params)
        gid = self._session_id(params)
        when = yield self.server.groups.delete(uid, gid)
        return {"result": "ok", "result_detail": "", "session_id": gid, "session_delete_time": str(when)}


def make_app(server: "Server") -> Family:
    family = Family("sessions", server.metrics, write_failure, prefixes=("/plugin/tlim/",))
    api = SessionsApi(server)
    for name, handler in (("addSession", api.add), ("modifySession", api.modify), ("deleteSession", api.delete)):

        def endpoint(request, project=None, handler=handler):
            d = handler(request)
            d.addCallback(lambda body: write_json(request, body))
            return d

        for prefix in ("", "/<string:project>"):
            family.app.route(f"{prefix}/plugin/tlim/{name}", methods=["POST"], endpoint=f"sessions.{name}{prefix}")(endpoint)
    return family
