# -*- test-case-name: tests.test_socket -*-
"""
Seed 004's binary socket: ``uint16`` big-endian length, then a body of
``base64(AES-128-ECB(key, json))`` (plain JSON with ``socket.encrypt =
false``).  The server greets with ``connect`` and a ``client_id``; a
client ``bind``s to its user with a token before anything else.

Seed 004 has no acknowledgement from the client: a message is taken as
received once it is written to a bound connection, and what arrived
while the user was away is written on ``bind``.  1:1 ``sendmsg`` requests
are pipelined: each goes to the store while earlier ones commit, and the
replies keep the order of the requests.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure

from imd.channels.methodapi import serialize
from imd.channels.methodapi.codec import Codec, FrameDecoder, FrameTooLarge
from imd.channels.shared.framed import ChannelFactory, ChannelSession, FramedProtocol
from imd.core import events
from imd.errors import Forbidden, IMError, InvalidField, Unauthenticated
from imd.hub.interfaces import Event

if TYPE_CHECKING:
    from imd.server import Server

log = Logger()


class SocketSession(ChannelSession):
    channel = "socket"


class SocketProtocol(FramedProtocol):
    session_class = SocketSession

    def __init__(self, server: "Server") -> None:
        super().__init__(server)
        config = server.config.socket
        self.decoder = FrameDecoder(config.max_frame)
        self.codec = Codec(config.aes_key.encode("utf-8"), config.encrypt)
        self.client_id = uuid.uuid4().hex
        # (frame, its request): see _decode.
        self._decoded: tuple[bytes, dict] | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.send({"action": "connect", "client_id": self.client_id})

    def frames(self, data: bytes) -> list | None:
        try:
            return self.decoder.feed(data)
        except FrameTooLarge as e:
            self.count_error("too_large")
            self.send({"action": "", "status": "0000", "info": str(e), "code": "too_large"})
            self.close()
            return None

    def send(self, obj: dict[str, Any]) -> None:
        self.write(self.codec.encode(obj))

    def reply(self, data: Any, action: Any) -> None:
        self.send({"action": action, "status": "1111", "data": data})

    def refuse(self, action: Any, error: IMError) -> None:
        self.count_error(error.code)
        self.send({"action": action if isinstance(action, str) else "", "status": "0000", "info": error.message, "code": error.code})

    def refuse_connection(self, code: str, message: str) -> None:
        self.send({"action": "", "status": "0000", "info": message, "code": code})
        self.close()

    def kick(self, reason: str) -> None:
        self.send({"action": "kick", "info": reason})
        self.session = None
        self.close()

    def _decode(self, body: bytes) -> dict:
        """C{body}'s request, decoded (and decrypted) once though pipelined() and handle() both ask."""
        if self._decoded is not None and self._decoded[0] is body:
            return self._decoded[1]
        request = self.codec.decode(body)
        self._decoded = (body, request)
        return request

    def pipelined(self, body: bytes) -> bool:
        # A 1:1 sendmsg goes to the store while earlier ones commit, as the
        # long connection's IM_MESSAGE does; the replies keep their order.
        if self.session is None or self.token_due() or not self.server.messages.direct_in_order:
            return False
        try:
            request = self._decode(body)
        except IMError:
            return False
        return request.get("action") == "sendmsg" and request.get("sendto", "user") == "user"

    def handle(self, body: bytes) -> Deferred | None:
        action = ""
        try:
            request = self._decode(body)
            self._decoded = None
            action = request.get("action", "")
            if action == "ping":
                self.send({"action": "pong"})
                return None
            handler = self._handlers.get(action) if isinstance(action, str) else None
            if handler is None:
                raise InvalidField(f"unknown action {action!r}")
            if self.session is None and action != "bind":
                raise Unauthenticated("bind to a user first")
        except Exception:
            self._refused(Failure(), action)
            return None
        if action == "bind" or self.token_due():
            return self._handle_waiting(action, handler, request)
        try:
            d = self.in_order(handler(self, request))
        except Exception:
            d = self.in_order(fail())
        d.addCallbacks(self.reply, self._refused, (action,), None, (action,))
        return d

    @inlineCallbacks
    def _handle_waiting(self, action: str, handler: Callable, request: dict):
        """A bind, or any action while the token is due its check: not pipelined."""
        try:
            if self.token_due():
                ok = yield self.check_token()
                if not ok or self._closing:
                    return
            data = yield handler(self, request)
            self.reply(data, action)
            if action == "bind" and request.get("bindto", "user") == "user":
                # What waited comes after the reply: the client sees it is
                # bound before the backlog arrives.
                yield self.push_missed()
        except Exception:
            self._refused(Failure(), action)

    def _refused(self, failure: Failure, action: str) -> None:
        if failure.check(IMError):
            self.refuse(action, failure.value)
            return
        log.failure("binary socket: action {action}", failure, action=action)
        self.refuse(action, IMError("internal error; try again"))

    def _check_user(self, request: dict) -> None:
        claimed = request.get("user_id")
        if claimed not in (None, "") and str(claimed) != self.session.uid:
            raise Forbidden("user_id is not the bound user")

    @inlineCallbacks
    def _on_bind(self, request: dict):
        bindto = request.get("bindto", "user")
        if bindto == "user":
            if self.session is not None:
                raise InvalidField(f"already bound to {self.session.uid}")
            uid = yield self.server.accounts.login_by_token(request.get("token"), self.peer_address())
            claimed = request.get("user_id")
            if claimed not in (None, "") and str(claimed) != uid:
                raise Forbidden("user_id is not the token's user")
            # Each connection is its own resource: one user may bind several.
            self.start_session(uid, f"socket-{self.client_id}", request.get("token"), "online")
            return {"client_id": self.client_id, "user_id": uid}
        if bindto == "group":
            if self.session is None:
                raise Unauthenticated("bind to a user first")
            self._check_user(request)
            gid = request.get("group_id") or request.get("to_group_id")
            yield self.server.groups.answer(self.session.uid, gid, True)
            return {"group_id": gid}
        raise InvalidField('bindto must be "user" or "group"')

    def _on_sendmsg(self, request: dict) -> Deferred:
        self._check_user(request)
        sendto = request.get("sendto", "user")
        kwargs = dict(
            msgid=request.get("msgid") or uuid.uuid4().hex,
            body=request.get("content", ""),
            kind=request.get("kind") or "text",
            sender_res=self.session.resource,
            origin=self.session,
        )
        if sendto == "user":
            d = self.server.messages.send(self.session.uid, to=_id(request.get("to_user_id")), **kwargs)
        elif sendto == "group":
            d = self.server.messages.send(self.session.uid, gid=_id(request.get("to_group_id")), **kwargs)
        else:
            raise InvalidField('sendto must be "user" or "group"')
        return d.addCallback(lambda message: {"msgid": message.msgid})

    _handlers: dict[str, Callable] = {"bind": _on_bind, "sendmsg": _on_sendmsg}

    def render(self, event: Event) -> Deferred | None:
        push = serialize.event(event)
        if push is None:
            return None
        try:
            frame = self.codec.encode(push)
        except FrameTooLarge:
            # Longer than a uint16 frame can carry once encrypted: the
            # client gets the message's place, and the long connection or
            # QID history have the text.
            push.update(content="", truncated=True)
            frame = self.codec.encode(push)
        self.write(frame)
        if event.kind == events.MESSAGE:
            return self._received(event.data)
        if event.kind == events.NOTICE and event.data.get("id") is not None:
            d = self.server.notices.received(self.session.uid, event.data["id"])
            return d.addErrback(lambda f: log.failure("marking notice {id} received", f, id=event.data["id"]))
        return None

    def _received(self, data: dict) -> Deferred:
        """Written to a bound connection counts as received: seed 004 has no ack."""
        d = self.server.messages.received(self.session.uid, data)
        return d.addErrback(lambda f: log.failure("marking {msgid} received", f, msgid=data["msgid"]))


def _id(value: Any) -> Any:
    # Seed 004's ids are often numbers in JSON.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class SocketFactory(ChannelFactory):
    protocol_class = SocketProtocol

    def __init__(self, server: "Server") -> None:
        super().__init__(server, server.config.socket.idle_timeout)
