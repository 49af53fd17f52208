# -*- test-case-name: tests.test_longconn -*-
"""
The long-connection channel: parses frames, calls one core service per
frame, answers with IM_MESSAGE_ACK and renders hub events as frames.

Frames of one connection are handled and answered in order, so a
client's messages are committed, acknowledged and delivered in the order
it sent them.  1:1 messages and their acknowledgements are pipelined: the
message service commits them in the order of the calls, so a connection
hands it the next one without waiting for the commit of the last.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure

from imd.channels.shared.framed import ChannelFactory, ChannelSession, FramedProtocol
from imd.channels.longconn import msgtypes as T
from imd.channels.longconn.framing import FrameDecoder, FrameError, decode_body, encode
from imd.core import events, fields
from imd.core.accounts import LiveToken
from imd.core.groups import invite_data
from imd.core.messages import message_data
from imd.core.roster import request_data
from imd.errors import IMError, InvalidField, InvalidToken
from imd.hub.interfaces import RESYNC, Event
from imd.channels.longconn.wiretime import format_time

log = Logger()



class LongConnSession(ChannelSession):
    channel = "longconn"


class LongConnProtocol(FramedProtocol):
    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self.decoder = FrameDecoder(server.config.longconn.max_frame)
        self.token: LiveToken | None = None

    # -- bytes in ---------------------------------------------------------

    def frames(self, data: bytes) -> list | None:
        try:
            return self.decoder.feed(data)
        except FrameError as e:
            self._fail(0, "", str(e))
            return None

    def pipelined(self, frame: list) -> bool:
        msgtype = frame[0]
        if msgtype not in _PIPELINED or self.session is None or self.token.due():
            return False
        body = frame[1]
        if not isinstance(body, dict):
            try:
                # Kept for handle(): a frame is decoded once.
                body = frame[1] = decode_body(body)
            except ValueError:
                return False
        if msgtype == T.IM_MESSAGE_ACK:
            return str(body.get("type", "")) == str(T.IM_MESSAGE)
        return self.server.messages.direct_in_order and not _is_group(body)

    def connectionLost(self, reason: Any = None) -> None:
        if self.session is not None:
            log.info("{uid}/{res} disconnected", uid=self.session.uid, res=self.session.resource)
        super().connectionLost(reason)

    # -- frames out -------------------------------------------------------

    def send(self, msgtype: int, body: dict) -> None:
        self.write(encode(msgtype, body))

    def ack(self, msgtype: int, msgid: Any, err: str = "", **extra: Any) -> None:
        body = {"type": str(msgtype), "msgid": msgid if isinstance(msgid, str) else str(msgid or ""), "err": err}
        body.update(extra)
        self.send(T.IM_MESSAGE_ACK, body)

    def _error(self, msgtype: int, msgid: Any, error: IMError) -> None:
        self.server.metrics.errors.labels("longconn", error.code).inc()
        self.ack(msgtype, msgid, error.message, code=error.code)

    def _fail(self, msgtype: int, msgid: Any, message: str) -> None:
        """An error this connection cannot continue after: tell, then close."""
        self.server.metrics.errors.labels("longconn", "protocol_error").inc()
        self.ack(msgtype, msgid, message, code="protocol_error")
        self.close()

    def kick(self, reason: str) -> None:
        self.send(T.IM_KICK, {"reason": reason})
        # The hub has already moved on to the session that replaced this one.
        self.session = None
        self.close()

    def render(self, event: Event) -> None:
        if event.kind == RESYNC and self.session is not None:
            self._resync().addErrback(lambda f: log.failure("long connection: resync", f))
            return
        renderer = _RENDERERS.get(event.kind)
        if renderer is not None and self.session is not None:
            msgtype, body = renderer(self.session, event.data)
            self.send(msgtype, body)

    @inlineCallbacks
    def _resync(self):
        """
        Events from other instances were missed (Redis was away): write
        again what this user has not acknowledged.  A client keeps the
        sender and msgid of what it has, so one it had already is dropped.
        """
        uid = self.session.uid
        for message in (yield self.server.messages.offline(uid)):
            self.render(Event(events.MESSAGE, message_data(message)))
        for message in (yield self.server.messages.group_offline(uid)):
            self.render(Event(events.MESSAGE, message_data(message)))

    # -- dispatch ---------------------------------------------------------

    def handle(self, frame: list) -> Deferred | None:
        """Handle one frame; a Deferred when it waits on a service, else None."""
        msgtype, payload = frame
        try:
            body = payload if isinstance(payload, dict) else decode_body(payload)
        except ValueError as e:
            self._error(msgtype, "", InvalidField(str(e)))
            if self.session is None:
                self.close()
            return None
        msgid = body.get("msgid", "")
        if self.session is None:
            if msgtype != T.IM_AUTH:
                self._fail(msgtype, msgid, "the first frame must be IM_AUTH (65537)")
                return None
            return self._auth(body)
        if msgtype == T.IM_AUTH:
            self._error(msgtype, msgid, InvalidField(f"already authenticated as {self.session.uid}"))
            return None
        handler: Callable | None = self._handlers.get(msgtype)
        if handler is None:
            self._error(msgtype, msgid, InvalidField(f"unknown MsgType {msgtype}"))
            return None
        if self.token.due():
            d = self._check_token()
            d.addCallback(lambda _: None if self._closing else self._dispatch(handler, msgtype, msgid, body))
            return d
        return self._dispatch(handler, msgtype, msgid, body)

    def _dispatch(self, handler: Callable, msgtype: int, msgid: Any, body: dict) -> Deferred | None:
        try:
            d = self.in_order(handler(self, body))
        except Exception:
            d = self.in_order(fail())
        if d is None:
            self._answered(None, msgtype, msgid)
            return None
        d.addCallbacks(self._answered, self._failed, (msgtype, msgid), None, (msgtype, msgid))
        return d

    def _answered(self, _: Any, msgtype: int, msgid: Any) -> None:
        if msgid and msgtype not in (T.IM_MESSAGE_ACK, T.IM_PING):
            self.ack(msgtype, msgid)

    def _failed(self, failure: Failure, msgtype: int, msgid: Any) -> None:
        if failure.check(IMError):
            self._error(msgtype, msgid, failure.value)
            return
        # Still exactly one answer: the client must not wait forever.
        log.failure(
            "long connection: MsgType {msgtype} from {uid}",
            failure,
            msgtype=msgtype,
            uid=self.session.uid if self.session else None,
        )
        self._error(msgtype, msgid, IMError("internal error; try again"))

    @inlineCallbacks
    def _auth(self, body: dict):
        accounts = self.server.accounts
        msgid = body.get("msgid", "")
        try:
            uid = fields.uid("uid", body.get("uid"))
            resource = fields.text("res", body.get("res"), 64, required=False, default="default")
            if body.get("token"):
                owner = yield accounts.authenticate(body["token"])
                if owner != uid:
                    raise InvalidToken("the token belongs to another user")
                token, expires_in = body["token"], self.server.config.auth.token_ttl
            else:
                login = yield accounts.login(uid, body.get("password"))
                token, expires_in = login.token, login.expires_in
        except IMError as e:
            self.server.metrics.errors.labels("longconn", e.code).inc()
            self.ack(T.IM_AUTH, msgid, e.message, code=e.code)
            self.close()
            return
        if self._closing:
            return
        self.token = LiveToken(accounts, token, self.server.reactor)
        self.session = LongConnSession(self, uid, resource)
        self.server.hub.register(self.session)
        log.info("{uid}/{res} authenticated on the long connection", uid=uid, res=resource)
        self.ack(T.IM_AUTH, msgid, token=token, expires_in=expires_in, uid=uid)
        yield self._push_pending()

    @inlineCallbacks
    def _push_pending(self):
        """Friend requests and invites not yet received: there is no query for them."""
        uid = self.session.uid
        requests = yield self.server.roster.pending_requests(uid)
        for request in requests:
            self.render(Event(events.ROSTER_REQUEST, request_data(request)))
        invites = yield self.server.groups.pending_invites(uid)
        for invite in invites:
            self.render(Event(events.GROUP_INVITE, invite_data(invite)))

    @inlineCallbacks
    def _check_token(self):
        if not (yield self.token.valid()):
            self.server.hub.unregister(self.session)
            self.kick("token revoked or expired")

    # -- handlers: each returns extra ack fields, or None -------------------

    def _on_ping(self, body: dict) -> None:
        self.send(T.IM_PING, {})

    def _on_client_ack(self, body: dict) -> Deferred:
        kind = str(body.get("type", ""))
        msgid = body.get("msgid")
        if kind == str(T.IM_MESSAGE):
            if body.get("gid"):
                if body.get("seq") in (None, ""):
                    raise InvalidField("a group message is acknowledged with its gid and seq")
                # Only a member's own cursor moves, and only within its
                # groups' messages: no membership check on this hot path.
                return self.server.messages.acknowledge_group(self.session.uid, body["gid"], body["seq"])
            return self.server.messages.acknowledge(self.session.uid, msgid, body.get("from"))
        if kind == str(T.IM_ROSTER_ADD_REQ):
            return self.server.roster.request_received(self.session.uid, msgid)
        if kind in (str(T.IM_CHATROOM_INVENT), str(T.IM_CHATROOM)):
            return self.server.groups.invite_received(self.session.uid, msgid)
        raise InvalidField(f"cannot acknowledge type {kind!r}")

    def _on_message(self, body: dict) -> Deferred:
        session = self.session
        group = _is_group(body)
        kwargs = dict(
            msgid=body.get("msgid"),
            body=body.get("body", ""),
            kind=body.get("kind") or "text",
            client_time=body.get("time", ""),
            sender_res=session.resource,
            origin=session,
        )
        if group:
            return self.server.messages.send(session.uid, gid=body.get("gid") or body.get("to"), **kwargs)
        return self.server.messages.send(session.uid, to=body.get("to"), **kwargs)

    @inlineCallbacks
    def _on_presence(self, body: dict):
        presence = self.server.presence
        kind = body.get("type")
        if kind == "online":
            yield presence.online(self.session, body.get("show"))
        elif kind in ("update", "leave"):
            yield presence.update(self.session, kind, body.get("show"))
        elif kind == "ack":
            presence.ack(self.session, body.get("to"), body.get("to_res"), body.get("show"))
        else:
            raise InvalidField("type must be online, update, leave or ack")

    def _on_roster_add(self, body: dict):
        return self.server.roster.request(
            self.session.uid, body.get("to"), body.get("msgid"), body.get("msg", ""), origin=self.session
        )

    def _on_roster_answer(self, body: dict):
        return self.server.roster.answer(
            self.session.uid,
            body.get("to"),
            body.get("msgid"),
            body.get("accept"),
            body.get("msg"),
            origin=self.session,
        )

    def _on_roster_delete(self, body: dict):
        return self.server.roster.remove(self.session.uid, body.get("to"), origin=self.session)

    @inlineCallbacks
    def _on_chatroom(self, body: dict):
        groups = self.server.groups
        uid = self.session.uid
        kind = str(body.get("type", ""))
        if kind == "0":
            yield groups.invite(uid, body.get("gid"), body.get("to"), body.get("msgid"), origin=self.session)
        elif kind == "1":
            yield groups.answer(
                uid, body.get("gid"), body.get("accept"), body.get("fname", ""), body.get("msgid"), origin=self.session
            )
        elif kind == "2":
            yield groups.leave(uid, body.get("rid") or body.get("gid"), body.get("msgid"), origin=self.session)
        else:
            raise InvalidField('type must be "0" (invite), "1" (answer) or "2" (leave)')

    def _on_receipt(self, body: dict):
        return self.server.messages.receipt(
            self.session.uid,
            body.get("msgid"),
            to=body.get("to"),
            gid=body.get("gid"),
            kind=body.get("kind", "read"),
            origin=self.session,
        )

    def _on_recall(self, body: dict):
        return self.server.messages.recall(
            self.session.uid, body.get("msgid"), to=body.get("to"), gid=body.get("gid"), origin=self.session
        )

    # Each takes the frame's body and returns None (done) or a Deferred
    # whose result is ignored: the ack says only success or the error.
    _handlers = {
        T.IM_PING: _on_ping,
        T.IM_MESSAGE_ACK: _on_client_ack,
        T.IM_MESSAGE: _on_message,
        T.IM_PRESENCE: _on_presence,
        T.IM_ROSTER_ADD_REQ: _on_roster_add,
        T.IM_ROSTER_ADD_RESP: _on_roster_answer,
        T.IM_ROSTER_DEL_REQ: _on_roster_delete,
        T.IM_CHATROOM: _on_chatroom,
        T.IM_RECEIPT: _on_receipt,
        T.IM_RECALL: _on_recall,
    }


def _is_group(body: dict) -> bool:
    return str(body.get("type", "0")) == "1" or bool(body.get("gid"))


# Committed by the message service in the order of the calls (a group
# message first checks membership, so only its 1:1 kind qualifies).
_PIPELINED = frozenset((T.IM_MESSAGE, T.IM_MESSAGE_ACK))


def _render_message(session: LongConnSession, data: dict) -> dict:
    group = "gid" in data
    body = {
        "msgid": data["msgid"],
        "from": data["from"],
        "from_res": data["from_res"],
        "to": data["gid"] if group else data["to"],
        "to_res": session.resource,
        "time": data["client_time"] or format_time(data["time"]),
        "stime": data["time"],
        "type": "1" if group else "0",
        "kind": data["kind"],
        "body": data["body"],
    }
    if group:
        body["gid"] = data["gid"]
        body["seq"] = data["seq"]
    return body


def _render_request(session, data):
    return T.IM_ROSTER_ADD_REQ, {
        "msgid": data["msgid"],
        "from": data["from"],
        "from_res": "",
        "to": data["to"],
        "to_res": session.resource,
        "time": format_time(data["time"]),
        "msg": data["msg"],
    }


def _render_presence(session, data):
    body = {
        "type": data["type"],
        "from": data["from"],
        "from_res": data["from_res"],
        "to": session.uid,
        "to_res": session.resource,
        "show": data["show"],
    }
    return T.IM_PRESENCE, body


def _render_invite(session, data):
    return T.IM_CHATROOM, {
        "msgid": data["msgid"],
        "type": "0",
        "from": data["from"],
        "from_res": "",
        "to": data["to"],
        "to_res": session.resource,
        "gid": data["gid"],
        "gname": data["gname"],
    }


def _render_group_data(session, data):
    body = dict(data, time=format_time(data["time"]))
    body["peers"] = [dict(p, join_time=format_time(p["join_time"])) for p in data["peers"]]
    return T.IM_NOTIFY_GROUP_DATA, body


def _render_peer_add(session, data):
    return T.IM_NOTIFY_GROUP_PEER_ADD, dict(data, join_time=format_time(data["join_time"]))


def _render_leave(session, data):
    return T.IM_CHATROOM, {
        "msgid": data["msgid"],
        "type": "2",
        "from": data["from"],
        "from_res": "",
        "to": session.uid,
        "to_res": session.resource,
        "rid": data["gid"],
    }


_RENDERERS: dict[str, Callable[[LongConnSession, dict], tuple[int, dict]]] = {
    events.MESSAGE: lambda s, d: (T.IM_MESSAGE, _render_message(s, d)),
    events.MESSAGE_COPY: lambda s, d: (T.IM_NOTIFY_MESSAGE, _render_message(s, d)),
    events.ROSTER_REQUEST: _render_request,
    events.ROSTER_ANSWER: lambda s, d: (T.IM_ROSTER_ADD_RESP, dict(d)),
    events.ROSTER_ADDED: lambda s, d: (T.IM_NOTIFY_ROSTER_ADD, dict(d)),
    events.ROSTER_DELETED: lambda s, d: (T.IM_NOTIFY_ROSTER_DEL, dict(d)),
    events.PRESENCE: _render_presence,
    events.GROUP_INVITE: _render_invite,
    events.GROUP_DATA: _render_group_data,
    events.GROUP_PEER_ADD: _render_peer_add,
    events.GROUP_LEAVE: _render_leave,
    events.RECEIPT: lambda s, d: (T.IM_NOTIFY_RECEIPT, dict(d)),
    events.RECALL: lambda s, d: (T.IM_NOTIFY_RECALL, dict(d)),
}


class LongConnFactory(ChannelFactory):
    protocol_class = LongConnProtocol

    def __init__(self, server: Any) -> None:
        super().__init__(server, server.config.longconn.idle_timeout)
