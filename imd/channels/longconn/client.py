# -*- test-case-name: tests.test_longconn -*-
"""
A client of imd's long connection (seed 001 over imd's uint32 framing),
for applications, tests and the benchmark tool.

    client = yield connect(reactor, "127.0.0.1", 8283)
    yield client.auth("alice", password="s3cret!", res="phone")
    yield client.send_message("bob", "hello")        # fires on the server's ack
    msgtype, body = yield client.expect(IM_MESSAGE)  # the next push of that type

Pushes that nobody waits for are kept, in order, until C{expect} takes
them; C{on_push}, when set, sees every push first.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, inlineCallbacks, returnValue, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from imd.channels.longconn.framing import FrameDecoder, decode_body, encode
from imd.channels.shared.frames import FrameError
from imd.channels.longconn.msgtypes import (
    IM_AUTH,
    IM_CHATROOM,
    IM_MESSAGE,
    IM_MESSAGE_ACK,
    IM_PING,
    IM_PRESENCE,
    IM_RECALL,
    IM_RECEIPT,
    IM_ROSTER_ADD_REQ,
    IM_ROSTER_ADD_RESP,
    IM_ROSTER_DEL_REQ,
)

DEFAULT_TIMEOUT = 10.0


class ServerError(Exception):
    """The server acknowledged a frame with an error."""

    def __init__(self, ack: dict) -> None:
        super().__init__(ack.get("err", ""))
        self.ack = ack
        self.code = ack.get("code", "")


class ConnectionClosed(Exception):
    """The connection closed while a request or an expectation was open."""


def new_msgid() -> str:
    return uuid.uuid4().hex


class LongConnClient(Protocol):
    def __init__(self, reactor: Any = None, max_frame: int = 1 << 24) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.decoder = FrameDecoder(max_frame)
        self.pushes: list[tuple[int, dict]] = []
        self.on_push: Callable[[int, dict], bool | None] | None = None
        self.closed = Deferred()
        self.token: str | None = None
        self.uid: str | None = None
        self._acks: dict[tuple[str, str], Deferred] = {}
        self._waiters: list[tuple[Callable[[int, dict], bool], Deferred]] = []
        self._lost = False

    # -- wire ---------------------------------------------------------------

    def send_frame(self, msgtype: int, body: dict) -> None:
        self.transport.write(encode(msgtype, body))

    def send_raw(self, data: bytes) -> None:
        self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except FrameError:
            self.transport.loseConnection()
            return
        for msgtype, payload in frames:
            try:
                body = decode_body(payload)
            except ValueError:
                continue
            self._frame(msgtype, body)

    def _frame(self, msgtype: int, body: dict) -> None:
        if msgtype == IM_MESSAGE_ACK:
            key = (str(body.get("type", "")), str(body.get("msgid", "")))
            d = self._acks.pop(key, None)
            if d is not None:
                if body.get("err"):
                    d.errback(ServerError(body))
                else:
                    d.callback(body)
                return
        if self.on_push is not None and self.on_push(msgtype, body):
            return
        for i, (predicate, d) in enumerate(self._waiters):
            if predicate(msgtype, body):
                del self._waiters[i]
                d.callback((msgtype, body))
                return
        self.pushes.append((msgtype, body))

    def connectionLost(self, reason: Any = None) -> None:
        self._lost = True
        pending = list(self._acks.values()) + [d for _, d in self._waiters]
        self._acks.clear()
        self._waiters.clear()
        for d in pending:
            d.errback(ConnectionClosed(str(reason.value if reason else "")))
        self.closed.callback(None)

    # -- requests -----------------------------------------------------------

    def request(self, msgtype: int, body: dict, timeout: float | None = DEFAULT_TIMEOUT) -> Deferred:
        """Send a frame with a msgid and fire with its IM_MESSAGE_ACK (or fail with ServerError)."""
        if self._lost:
            return fail(ConnectionClosed("the connection is closed"))
        body = dict(body)
        body.setdefault("msgid", new_msgid())
        d = Deferred(lambda _: self._acks.pop((str(msgtype), str(body["msgid"])), None))
        self._acks[(str(msgtype), str(body["msgid"]))] = d
        if timeout is not None:
            d.addTimeout(timeout, self.reactor)
        self.send_frame(msgtype, body)
        return d

    def expect(
        self,
        msgtype: int | None = None,
        match: Callable[[dict], bool] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> Deferred:
        """The next push (of C{msgtype}, for which C{match} holds) as (msgtype, body)."""

        def predicate(t: int, body: dict) -> bool:
            return (msgtype is None or t == msgtype) and (match is None or match(body))

        for i, (t, body) in enumerate(self.pushes):
            if predicate(t, body):
                del self.pushes[i]
                return succeed((t, body))
        if self._lost:
            return fail(ConnectionClosed("the connection is closed"))
        entry: list = []
        d = Deferred(lambda _: self._waiters.remove(entry[0]) if entry[0] in self._waiters else None)
        entry.append((predicate, d))
        self._waiters.append(entry[0])
        if timeout is not None:
            d.addTimeout(timeout, self.reactor)
        return d

    def take(self, msgtype: int | None = None) -> list[tuple[int, dict]]:
        """Every push received and not yet taken (of C{msgtype})."""
        taken = [p for p in self.pushes if msgtype is None or p[0] == msgtype]
        self.pushes = [p for p in self.pushes if not (msgtype is None or p[0] == msgtype)]
        return taken

    # -- the operations -----------------------------------------------------

    @inlineCallbacks
    def auth(self, uid: str, token: str | None = None, password: str | None = None, res: str = "default"):
        body = {"uid": uid, "res": res}
        if token is not None:
            body["token"] = token
        if password is not None:
            body["password"] = password
        ack = yield self.request(IM_AUTH, body)
        self.uid = uid
        self.token = ack.get("token")
        returnValue(ack)

    def ping(self) -> Deferred:
        self.send_frame(IM_PING, {})
        return self.expect(IM_PING)

    def send_message(self, to: str, body: str, gid: str | None = None, msgid: str | None = None, **extra: Any) -> Deferred:
        frame = {"to": gid or to, "type": "1" if gid else "0", "body": body, **extra}
        if gid:
            frame["gid"] = gid
        if msgid is not None:
            frame["msgid"] = msgid
        return self.request(IM_MESSAGE, frame)

    def ack_message(self, msgid: str, sender: str | None = None, gid: str | None = None, seq: int | None = None) -> None:
        """Tell the server this client has message C{msgid} (no answer comes)."""
        body: dict[str, Any] = {"type": IM_MESSAGE, "msgid": msgid}
        if sender is not None:
            body["from"] = sender
        if gid is not None:
            body.update(gid=gid, seq=seq)
        self.send_frame(IM_MESSAGE_ACK, body)

    def ack_push(self, msgtype: int, msgid: str) -> None:
        self.send_frame(IM_MESSAGE_ACK, {"type": msgtype, "msgid": msgid})

    def presence(self, type: str = "online", show: str | None = None, **extra: Any) -> Deferred:
        if show is None:
            show = "offline" if type == "leave" else "online"
        return self.request(IM_PRESENCE, {"type": type, "show": show, **extra})

    def add_friend(self, to: str, msg: str = "") -> Deferred:
        return self.request(IM_ROSTER_ADD_REQ, {"to": to, "msg": msg})

    def answer_friend(self, requester: str, msgid: str, accept: bool, **names: str) -> Deferred:
        return self.request(
            IM_ROSTER_ADD_RESP,
            {"msgid": msgid, "to": requester, "accept": accept, "msg": json.dumps(names, ensure_ascii=False)},
        )

    def delete_friend(self, to: str) -> Deferred:
        return self.request(IM_ROSTER_DEL_REQ, {"to": to})

    def invite(self, gid: str, to: str) -> Deferred:
        return self.request(IM_CHATROOM, {"type": "0", "gid": gid, "to": to})

    def answer_invite(self, gid: str, accept: bool, fname: str = "") -> Deferred:
        return self.request(IM_CHATROOM, {"type": "1", "gid": gid, "accept": accept, "fname": fname})

    def leave_group(self, gid: str) -> Deferred:
        return self.request(IM_CHATROOM, {"type": "2", "rid": gid})

    def receipt(self, msgid: str, to: str | None = None, gid: str | None = None, kind: str = "read") -> Deferred:
        body = {"msgid": msgid, "kind": kind}
        body.update({"gid": gid} if gid else {"to": to})
        return self.request(IM_RECEIPT, body)

    def recall(self, msgid: str, to: str | None = None, gid: str | None = None) -> Deferred:
        return self.request(IM_RECALL, {"msgid": msgid, **({"gid": gid} if gid else {"to": to})})

    def close(self) -> Deferred:
        if not self._lost:
            self.transport.loseConnection()
        return self.closed


def connect(reactor: Any, host: str, port: int, timeout: float = 10) -> "Deferred[LongConnClient]":
    """Open a long connection to C{host}:C{port}."""
    endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    return connectProtocol(endpoint, LongConnClient(reactor))


class WebSocketClient(LongConnClient):
    """The same client over C{/ws}: each frame a text message C{{"msgtype", "body"}}."""

    def negotiationStarted(self, transport: Any) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        pass

    def send_frame(self, msgtype: int, body: dict) -> None:
        self.send_text(json.dumps({"msgtype": msgtype, "body": body}))

    def send_text(self, text: str) -> None:
        self.transport.sendTextMessage(text)

    def textMessageReceived(self, text: str) -> None:
        message = json.loads(text)
        self._frame(message["msgtype"], message["body"])

    def bytesMessageReceived(self, data: bytes) -> None:
        pass

    def pongReceived(self, payload: bytes) -> None:
        pass


def connect_websocket(reactor: Any, url: str) -> "Deferred[WebSocketClient]":
    """Open a long connection over the WebSocket at C{url} (C{ws://host:port/ws})."""
    from twisted.web.websocket import WebSocketClientEndpoint

    class Factory:
        def buildProtocol(self, url: str) -> WebSocketClient:
            return WebSocketClient(reactor)

    return Deferred.fromCoroutine(WebSocketClientEndpoint.new(reactor, url).connect(Factory()))
