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

from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure

from imd.channels.longconn import msgtypes as T
from imd.channels.longconn import serialize
from imd.channels.longconn.framing import FrameDecoder, decode_body, encode
from imd.channels.shared.frames import FrameError
from imd.channels.shared.framed import ChannelFactory, ChannelSession, FramedProtocol
from imd.core import events, fields
from imd.errors import IMError, InvalidField, InvalidToken
from imd.hub.interfaces import Event

if TYPE_CHECKING:
    from imd.server import Server

log = Logger()


# Events whose frame depends on the receiving session's resource only,
# not on its user: a group's message is the same frame for every member.
_SHARED = frozenset((events.MESSAGE, events.MESSAGE_COPY))
# The last such frame, as (event, resource, protocol class, bytes): the
# hub hands one event to every recipient's session in one loop, so a group
# of 1,000 encodes its message once instead of 1,000 times.
_last_frame: tuple[Event, str, type, bytes | None] | None = None


def _frame(protocol: "LongConnProtocol", event: Event) -> bytes | None:
    """C{event} encoded for C{protocol}'s session; None: not for this design."""
    global _last_frame
    uid, resource, kind = protocol.session.uid, protocol.session.resource, type(protocol)
    last = _last_frame
    if last is not None and last[0] is event and last[1] == resource and last[2] is kind:
        return last[3]
    frame = serialize.event(uid, resource, event)
    data = None if frame is None else protocol.encode_frame(*frame)
    if event.kind in _SHARED:
        _last_frame = (event, resource, kind, data)
    return data


class LongConnSession(ChannelSession):
    channel = "longconn"


class LongConnProtocol(FramedProtocol):
    session_class = LongConnSession
    # Whether what the session missed is pushed after IM_AUTH, or left to
    # the client to fetch with QID queries, as the seed's clients do.
    push_messages = False

    def __init__(self, server: "Server") -> None:
        super().__init__(server)
        self.decoder = FrameDecoder(server.config.longconn.max_frame)

    # -- bytes in ---------------------------------------------------------

    def frames(self, data: bytes) -> list | None:
        try:
            return self.decoder.feed(data)
        except FrameError as e:
            self._fail(0, "", str(e))
            return None

    def pipelined(self, frame: list) -> bool:
        msgtype = frame[0]
        if msgtype not in _PIPELINED or self.session is None or self.token_due():
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

    def encode_frame(self, msgtype: int, body: dict) -> bytes:
        return encode(msgtype, body)

    def send(self, msgtype: int, body: dict) -> None:
        self.write(self.encode_frame(msgtype, body))

    def ack(self, msgtype: int, msgid: Any, err: str = "", **extra: Any) -> None:
        body = {"type": str(msgtype), "msgid": msgid if isinstance(msgid, str) else str(msgid or ""), "err": err}
        body.update(extra)
        self.send(T.IM_MESSAGE_ACK, body)

    def _error(self, msgtype: int, msgid: Any, error: IMError) -> None:
        self.count_error(error.code)
        self.ack(msgtype, msgid, error.message, code=error.code)

    def _fail(self, msgtype: int, msgid: Any, message: str) -> None:
        """An error this connection cannot continue after: tell, then close."""
        self.count_error("protocol_error")
        self.ack(msgtype, msgid, message, code="protocol_error")
        self.close()

    def refuse_connection(self, code: str, message: str) -> None:
        self.ack(T.IM_AUTH, "", message, code=code)
        self.close()

    def kick(self, reason: str) -> None:
        self.send(T.IM_KICK, {"reason": reason})
        # The hub has already moved on to the session that replaced this one.
        self.session = None
        self.close()

    def render(self, event: Event) -> Deferred | None:
        data = _frame(self, event)
        if data is not None:
            self.write(data)
        if event.kind == events.NOTICE and event.data.get("id") is not None:
            # Seed 001 has no acknowledgement of a notification: written is received.
            d = self.server.notices.received(self.session.uid, event.data["id"])
            return d.addErrback(lambda f: log.failure("marking notice {id} received", f, id=event.data["id"]))
        return None

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
        if self.token_due():
            d = self.check_token()
            d.addCallback(lambda ok: self._dispatch(handler, msgtype, msgid, body) if ok and not self._closing else None)
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
            address = self.peer_address()
            if body.get("token"):
                owner = yield accounts.login_by_token(body["token"], address)
                if owner != uid:
                    raise InvalidToken("the token belongs to another user")
                token, expires_in = body["token"], self.server.config.auth.token_ttl
            else:
                login = yield accounts.login(uid, body.get("password"), address)
                token, expires_in = login.token, login.expires_in
        except IMError as e:
            self.count_error(e.code)
            self.ack(T.IM_AUTH, msgid, e.message, code=e.code)
            self.close()
            return
        if self._closing:
            return
        self.start_session(uid, resource, token)
        self.ack(T.IM_AUTH, msgid, token=token, expires_in=expires_in, uid=uid)
        # Friend requests and invites have no query, so they are always
        # pushed; offline messages only where push_messages says so.
        yield self.push_missed(messages=self.push_messages)

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
                return self.server.messages.acknowledge_group(self.session.uid, body["gid"], body["seq"], lazy=True)
            # The client gets no answer to an acknowledgement: it may wait
            # for the next message's commit instead of paying its own.
            return self.server.messages.acknowledge(self.session.uid, msgid, body.get("from"), lazy=True)
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
            serialize.parse_answer_names(body.get("msg")),
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


class LongConnFactory(ChannelFactory):
    protocol_class = LongConnProtocol

    def __init__(self, server: "Server") -> None:
        super().__init__(server, server.config.longconn.idle_timeout)
