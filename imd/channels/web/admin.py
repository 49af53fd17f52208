# -*- test-case-name: tests.test_web_admin -*-
"""
The admin console's JSON API under ``/admin/api/`` (docs/web.rst).

An administrator (a user with the admin flag: ``python -m imd user admin
UID``) logs in with a password and gets a session cookie that is
``HttpOnly`` (no script reads it) and ``SameSite=Strict`` (no other site's
request carries it).  Every request needs that cookie and an admin behind
it (403 otherwise); every POST also needs the page's own ``Origin``, so
no other site can make a visitor's browser act (CSRF).  Each action is a
call on a core service or the store's outbox, as the CLI makes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import inlineCallbacks

from imd.channels.shared.httpjson import client_address, read_json, write_error, write_json
from imd.channels.shared.origin import check_origin
from imd.channels.shared.web import Family
from imd.core import fields
from imd.errors import InvalidField, Unauthenticated

if TYPE_CHECKING:
    from imd.server import Server

COOKIE = b"imd_admin"
PAGE = 100
KICK_REASON = "kicked by an administrator"


def _ids(value: Any) -> list[int] | None:
    """Outbox row ids: a list of integers, or null for all dead rows."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(type(i) is int for i in value):
        raise InvalidField("ids must be a non-empty list of row ids, or null for every dead row")
    return value


def _flag(body: dict, name: str) -> bool:
    value = body.get(name)
    if not isinstance(value, bool):
        raise InvalidField(f"{name} must be true or false")
    return value


def _user(user) -> dict:
    return {
        "uid": user.uid,
        "name": user.name,
        "telephone": user.telephone or "",
        "disabled": user.disabled,
        "admin": user.admin,
        "created_at": user.created_at,
    }


def make_app(server: "Server") -> Family:
    family = Family("admin", server.metrics, write_error, prefixes=("/admin/api/",))
    app = family.app
    accounts = server.accounts
    max_body = server.config.http.max_body
    origins = server.config.web.allowed_origins

    def now() -> int:
        return int(server.reactor.seconds() * 1000)

    @inlineCallbacks
    def admin(request):
        """The administrator behind this request, after the checks every route makes."""
        if request.method != b"GET":
            check_origin(request, origins, required=True)
        token = request.getCookie(COOKIE)
        if not token:
            raise Unauthenticated("log in to the admin console first")
        uid = yield accounts.authenticate_admin(token.decode("latin-1"))
        return uid

    def set_cookie(request, value: str, max_age: int) -> None:
        request.addCookie(
            COOKIE, value.encode("latin-1"), path=b"/admin/", max_age=str(max_age).encode(),
            httpOnly=True, sameSite="strict", secure=request.isSecure(),
        )

    @app.route("/admin/api/login", methods=["POST"])
    @inlineCallbacks
    def login(request):
        check_origin(request, origins, required=True)
        body = read_json(request, max_body)
        session = yield accounts.login(body.get("uid"), body.get("password"), client_address(request))
        try:
            yield accounts.authenticate_admin(session.token)
        except Exception:
            yield accounts.logout(session.token)
            raise
        set_cookie(request, session.token, session.expires_in)
        return write_json(request, {"uid": session.uid})

    @app.route("/admin/api/logout", methods=["POST"])
    @inlineCallbacks
    def logout(request):
        yield admin(request)
        yield accounts.logout(request.getCookie(COOKIE).decode("latin-1"))
        set_cookie(request, "", 0)
        return write_json(request, {"revoked": True})

    @app.route("/admin/api/me", methods=["GET"])
    @inlineCallbacks
    def me(request):
        uid = yield admin(request)
        return write_json(request, {"uid": uid, "instance": server.instance_id})

    # -- sessions -----------------------------------------------------------

    @app.route("/admin/api/sessions", methods=["GET"])
    @inlineCallbacks
    def sessions(request):
        yield admin(request)
        hub = server.hub
        rows = [
            {"uid": s.uid, "channel": s.channel, "resource": s.resource, "show": s.show}
            for uid in sorted(hub.uids())
            for s in hub.sessions(uid)
        ]
        return write_json(request, {"counts": hub.session_counts(), "sessions": rows})

    @app.route("/admin/api/sessions/kick", methods=["POST"])
    @inlineCallbacks
    def kick(request):
        yield admin(request)
        body = read_json(request, max_body)
        uid = fields.uid("uid", body.get("uid"))
        channel = fields.text("channel", body.get("channel"), 32, required=False, default="")
        resource = fields.text("resource", body.get("resource"), 64, required=False, default="")
        if channel and resource:
            ended = accounts.kick(uid, channel, resource, KICK_REASON)
        else:
            # Every session of the user, on every instance (counted here).
            ended = len(server.hub.sessions(uid))
            accounts.end_sessions(uid, KICK_REASON)
        return write_json(request, {"kicked": ended})

    # -- users --------------------------------------------------------------

    @app.route("/admin/api/users", methods=["GET"])
    @inlineCallbacks
    def users(request):
        yield admin(request)
        after = (request.args.get(b"after") or [b""])[0].decode("utf-8", "replace")
        page = yield accounts.list_users(after=after, limit=PAGE)
        return write_json(request, {"users": [_user(u) for u in page], "more": len(page) == PAGE})

    @app.route("/admin/api/users", methods=["POST"])
    @inlineCallbacks
    def create_user(request):
        yield admin(request)
        body = read_json(request, max_body)
        user = yield accounts.register(body.get("uid"), body.get("password"), name=body.get("name") or "")
        if body.get("admin") is True:
            yield accounts.set_admin(user.uid, True)
        user = yield accounts.get_user(user.uid)
        return write_json(request, _user(user), 201)

    @app.route("/admin/api/users/<string:uid>/disabled", methods=["POST"])
    @inlineCallbacks
    def disable(request, uid):
        me = yield admin(request)
        disabled = _flag(read_json(request, max_body), "disabled")
        if disabled and uid == me:
            raise InvalidField("an administrator cannot disable their own account here")
        yield accounts.set_disabled(fields.uid("uid", uid), disabled)
        return write_json(request, {"uid": uid, "disabled": disabled})

    @app.route("/admin/api/users/<string:uid>/password", methods=["POST"])
    @inlineCallbacks
    def reset_password(request, uid):
        yield admin(request)
        body = read_json(request, max_body)
        yield accounts.set_password(fields.uid("uid", uid), body.get("password"))
        return write_json(request, {"uid": uid, "tokens_revoked": True})

    # -- groups and apps ----------------------------------------------------

    @app.route("/admin/api/groups", methods=["GET"])
    @inlineCallbacks
    def groups(request):
        yield admin(request)
        after = (request.args.get(b"after") or [b""])[0].decode("utf-8", "replace")
        page = yield server.groups.listing(after, PAGE)
        rows = [
            {"gid": g.gid, "name": g.name, "creator": g.creator, "members": n, "created_at": g.created_at}
            for g, n in page
        ]
        return write_json(request, {"groups": rows, "more": len(page) == PAGE})

    @app.route("/admin/api/apps", methods=["GET"])
    @inlineCallbacks
    def apps(request):
        yield admin(request)
        rows = yield server.apps.list()
        return write_json(request, {"apps": [{"name": a.name, "app_key": a.app_key, "created_at": a.created_at} for a in rows]})

    @app.route("/admin/api/apps", methods=["POST"])
    @inlineCallbacks
    def create_app(request):
        yield admin(request)
        made = yield server.apps.create(read_json(request, max_body).get("name"))
        # The secret is shown this once, as by python -m imd app add.
        return write_json(request, {"name": made.name, "app_key": made.app_key, "app_secret": made.secret}, 201)

    @app.route("/admin/api/apps/<string:name>/remove", methods=["POST"])
    @inlineCallbacks
    def remove_app(request, name):
        yield admin(request)
        yield server.apps.remove(name)
        return write_json(request, {"removed": name})

    # -- the webhook outbox -------------------------------------------------

    @app.route("/admin/api/outbox", methods=["GET"])
    @inlineCallbacks
    def outbox(request):
        yield admin(request)
        depth, oldest, dead = yield server.store.outbox.stats()
        rows = yield server.store.outbox.undelivered(limit=PAGE)
        return write_json(request, {
            "depth": depth,
            "oldest": oldest,
            "dead": dead,
            "rows": [
                {"id": r.id, "kind": r.kind, "created_at": r.created_at, "attempts": r.attempts,
                 "last_error": r.last_error or "", "dead": r.dead_at is not None}
                for r in rows
            ],
        })

    @app.route("/admin/api/outbox/retry", methods=["POST"])
    @inlineCallbacks
    def outbox_retry(request):
        yield admin(request)
        n = yield server.store.outbox.revive(_ids(read_json(request, max_body).get("ids")), now())
        return write_json(request, {"retried": n})

    @app.route("/admin/api/outbox/drop", methods=["POST"])
    @inlineCallbacks
    def outbox_drop(request):
        yield admin(request)
        n = yield server.store.outbox.drop(_ids(read_json(request, max_body).get("ids")))
        return write_json(request, {"dropped": n})

    # -- the log ------------------------------------------------------------

    @app.route("/admin/api/log", methods=["GET"])
    @inlineCallbacks
    def log_tail(request):
        yield admin(request)
        return write_json(request, {"lines": server.log_tail.lines(200)})

    return family
