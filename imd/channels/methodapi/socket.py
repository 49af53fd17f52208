# -*- test-case-name: tests.test_socket -*-
"""
Seed 004's binary socket: ``uint16`` big-endian length, then a body of
``base64(AES-128-ECB(key, json))`` (plain JSON with ``socket.encrypt =
false``).  The server greets with ``connect`` and a ``client_id``; a
client ``bind``s to its user with a token before anything else.

Seed 004 has no acknowledgement from the client: a message is taken as
received once it is written to a bound connection, and what arrived
while the user was away is written on ``bind``.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

from twisted.internet.defer import inlineCallbacks, succeed
from twisted.logger import Logger

from imd.channels.shared.framed import ChannelFactory, ChannelSession, FramedProtocol
from imd.core import events
from imd.core.accounts import LiveToken
from imd.core.groups import invite_data
from imd.core.messages import message_data
from imd.core.roster import request_data
from imd.channels.methodapi.codec import Codec, FrameDecoder, FrameTooLarge
from imd.errors import Forbidden, IMError, InvalidField, Unauthenticated
from imd.hub.interfaces import RESYNC, Event

log = Logger()
BACKLOG_PAGE = 500
MAX_BACKLOG_PAGES = 100


class SocketSession(ChannelSession):
    channel = "socket"


class SocketProtocol(FramedProtocol):
    def __init__(self, server: Any) -> None:
        super().__init__(server)
        config = server.config.socket
        self.decoder = FrameDecoder(config.max_frame)
        self.codec = Codec(config.aes_key.encode("utf-8"), config.encrypt)
        self.client_id = uuid.uuid4().hex
        self._held: list[Event] | None = None
        self._last_received = succeed(None)
        self._token: LiveToken | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.send({"action": "connect", "client_id": self.client_id})

    def frames(self, data: bytes) -> list | None:
        try:
            return self.decoder.feed(data)
        except FrameTooLarge as e:
            self.server.metrics.errors.labels("socket", "too_large").inc()
            self.send({"action": "", "status": "0000", "info": str(e), "code": "too_large"})
            self.close()
            return None

    def send(self, obj: dict[str, Any]) -> None:
        self.write(self.codec.encode(obj))

    def reply(self, action: Any, data: Any) -> None:
        self.send({"action": action, "status": "1111", "data": data})

    def refuse(self, action: Any, error: IMError) -> None:
        self.server.metrics.errors.labels("socket", error.code).inc()
        self.send({"action": action if isinstance(action, str) else "", "status": "0000", "info": error.message, "code": error.code})

    def kick(self, reason: str) -> None:
        self.send({"action": "kick", "info": reason})
        self.session = None
        self.close()

    @inlineCallbacks
    def handle(self, body: bytes):
        action = ""
        try:
            request = self.codec.decode(body)
            action = request.get("action", "")
            if action == "ping":
                self.send({"action": "pong"})
                return
            handler = self._handlers.get(action) if isinstance(action, str) else None
            if handler is None:
                raise InvalidField(f"unknown action {action!r}")
            if self.session is None and action != "bind":
                raise Unauthenticated("bind to a user first")
            if self.session is not None and self._token.due():
                yield self._check_token()
                if self._closing:
                    return
            data = yield handler(self, request)
            self.reply(action, data)
            if action == "bind" and request.get("bindto", "user") == "user":
                # What waited comes after the reply: the client sees it is
                # bound before the backlog arrives.
                yield self._push_pending()
        except IMError as e:
            self.refuse(action, e)
        except Exception:
            log.failure("binary socket: action {action}", action=action)
            self.refuse(action, IMError("internal error; try again"))

    @inlineCallbacks
    def _check_token(self):
        if not (yield self._token.valid()):
            self.server.hub.unregister(self.session)
            self.kick("token revoked or expired")

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
            uid = yield self.server.accounts.authenticate(request.get("token"))
            claimed = request.get("user_id")
            if claimed not in (None, "") and str(claimed) != uid:
                raise Forbidden("user_id is not the token's user")
            self._token = LiveToken(self.server.accounts, request.get("token"), self.server.reactor)
            # Each connection is its own resource: one user may bind several.
            self.session = SocketSession(self, uid, f"socket-{self.client_id}", "online")
            self.server.hub.register(self.session)
            log.info("{uid} bound on the binary socket", uid=uid)
            return {"client_id": self.client_id, "user_id": uid}
        if bindto == "group":
            if self.session is None:
                raise Unauthenticated("bind to a user first")
            self._check_user(request)
            gid = request.get("group_id") or request.get("to_group_id")
            yield self.server.groups.answer(self.session.uid, gid, True)
            return {"group_id": gid}
        raise InvalidField('bindto must be "user" or "group"')

    @inlineCallbacks
    def _push_pending(self):
        """Write what waited for this user, then the live events held meanwhile."""
        uid = self.session.uid
        messages = self.server.messages
        seen: set[tuple[str, str]] = set()
        self._held = []
        try:
            for fetch in (messages.offline, messages.group_offline):
                # Pages until a short one: what is written is marked
                # received, so the next page starts after it.
                for _ in range(MAX_BACKLOG_PAGES):
                    page = yield fetch(uid, limit=BACKLOG_PAGE)
                    fresh = [m for m in page if (m.sender, m.msgid) not in seen]
                    for message in fresh:
                        seen.add((message.sender, message.msgid))
                        yield self._write_now(Event(events.MESSAGE, message_data(message)))
                    if len(page) < BACKLOG_PAGE or not fresh:
                        break
            for request in (yield self.server.roster.pending_requests(uid)):
                yield self._write_now(Event(events.ROSTER_REQUEST, request_data(request)))
            for invite in (yield self.server.groups.pending_invites(uid)):
                yield self._write_now(Event(events.GROUP_INVITE, invite_data(invite)))
        finally:
            held, self._held = self._held, None
            for event in held:
                if event.kind == events.MESSAGE and (event.data["from"], event.data["msgid"]) in seen:
                    continue
                self.render(event)

    def _write_now(self, event: Event):
        """Render past the hold; for a message, wait until it is marked received."""
        held, self._held = self._held, None
        try:
            self.render(event)
        finally:
            self._held = held
        return self._last_received if event.kind == events.MESSAGE else succeed(None)

    @inlineCallbacks
    def _on_sendmsg(self, request: dict):
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
            message = yield self.server.messages.send(self.session.uid, to=_id(request.get("to_user_id")), **kwargs)
        elif sendto == "group":
            message = yield self.server.messages.send(self.session.uid, gid=_id(request.get("to_group_id")), **kwargs)
        else:
            raise InvalidField('sendto must be "user" or "group"')
        return {"msgid": message.msgid}

    _handlers: dict[str, Callable] = {"bind": _on_bind, "sendmsg": _on_sendmsg}

    def render(self, event: Event) -> None:
        if event.kind == RESYNC and self.session is not None and self._held is None:
            # Missed events (Redis was away) are in the store, as at bind.
            self._push_pending().addErrback(lambda f: log.failure("binary socket: resync", f))
            return
        renderer = _RENDERERS.get(event.kind)
        if renderer is None or self.session is None:
            return
        if self._held is not None:
            # The backlog is being written: live events wait behind it, so
            # group cursors move in order and nothing is skipped.
            self._held.append(event)
            return
        push = renderer(event.data)
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
            self._received(event.data)

    def _received(self, data: dict) -> None:
        """Written to a bound connection counts as received: seed 004 has no ack."""
        messages = self.server.messages
        if "gid" in data:
            d = messages.acknowledge_group(self.session.uid, data["gid"], data["seq"])
        else:
            d = messages.acknowledge(self.session.uid, data["msgid"], data["from"])
        d.addErrback(lambda f: log.failure("marking {msgid} received", f, msgid=data["msgid"]))
        self._last_received = d


def _id(value: Any) -> Any:
    # Seed 004's ids are often numbers in JSON.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _render_message(data: dict) -> dict:
    push = {
        "action": "sendmsg",
        "from_user_id": data["from"],
        "msgid": data["msgid"],
        # A recalled message keeps its place, not its words.
        "content": "" if data["recalled"] else data["body"],
        "kind": data["kind"],
        "time": data["time"] // 1000,
    }
    if data["recalled"]:
        push["recalled"] = True
    if "gid" in data:
        push.update(sendto="group", to_group_id=data["gid"])
    else:
        push.update(sendto="user", to_user_id=data["to"])
    return push


_RENDERERS: dict[str, Callable[[dict], dict]] = {
    events.MESSAGE: _render_message,
    events.ROSTER_REQUEST: lambda d: {
        "action": "addfriend",
        "opt": "addMsg",
        "from_user_id": d["from"],
        "sender": d["from"],
        "msg": d["msg"],
    },
    events.ROSTER_ANSWER: lambda d: {
        "action": "addfriend",
        "opt": "agreeMsg" if d["accept"] else "repulseMsg",
        "from_user_id": d["from"],
        "sender": d["from"],
    },
    events.GROUP_INVITE: lambda d: {
        "action": "addGroup",
        "opt": "addMsg",
        "from_user_id": d["from"],
        "sender": d["from"],
        "group_id": d["gid"],
        "group_name": d["gname"],
    },
    events.RECALL: lambda d: {
        "action": "recall",
        "from_user_id": d["from"],
        "msgid": d["msgid"],
        **({"sendto": "group", "to_group_id": d["gid"]} if "gid" in d else {"sendto": "user", "to_user_id": d["to"]}),
    },
}


class SocketFactory(ChannelFactory):
    protocol_class = SocketProtocol

    def __init__(self, server: Any) -> None:
        super().__init__(server, server.config.socket.idle_timeout)
