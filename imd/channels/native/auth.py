# -*- test-case-name: tests.test_http -*-
"""
``/auth/…``: log in (a user id and password, for a token every channel
accepts), ask for an SMS code, log out, who am I.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import inlineCallbacks

from imd.errors import BadRequest
from imd.channels.shared.httpjson import bearer_token, client_address, read_json, write_json

if TYPE_CHECKING:
    from imd.server import Server


def install(app, server: "Server") -> None:
    accounts = server.accounts
    max_body = server.config.http.max_body

    def session_json(session) -> dict:
        return {"uid": session.uid, "token": session.token, "expires_in": session.expires_in}

    @app.route("/auth/login", methods=["POST"])
    @inlineCallbacks
    def login(request):
        body = read_json(request, max_body)
        if "uid" in body:
            session = yield accounts.login(body.get("uid"), body.get("password"), client_address(request))
        elif "telephone" in body:
            session = yield accounts.login_by_telephone(
                body.get("telephone"), body.get("password"), body.get("sms_code"), client_address(request)
            )
        else:
            raise BadRequest('give "uid" and "password", or "telephone" and "sms_code"')
        return write_json(request, session_json(session))

    @app.route("/auth/sms_code", methods=["POST"])
    @inlineCallbacks
    def sms_code(request):
        body = read_json(request, max_body)
        yield accounts.request_sms_code(body.get("telephone"))
        return write_json(request, {"sent": True})

    @app.route("/auth/logout", methods=["POST"])
    @inlineCallbacks
    def logout(request):
        token = bearer_token(request)
        yield accounts.authenticate(token)
        yield accounts.logout(token)
        return write_json(request, {"revoked": True})

    @app.route("/auth/whoami", methods=["GET"])
    @inlineCallbacks
    def whoami(request):
        uid = yield accounts.authenticate(bearer_token(request))
        return write_json(request, {"uid": uid})

    @app.route("/auth/password", methods=["POST"])
    @inlineCallbacks
    def password(request):
        token = bearer_token(request)
        uid = yield accounts.authenticate(token)
        body = read_json(request, max_body)
        yield accounts.change_password(uid, body.get("old"), body.get("new"), current_token=token)
        return write_json(request, {"changed": True})
