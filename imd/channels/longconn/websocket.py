# -*- test-case-name: tests.test_websocket -*-
"""
The long connection over a WebSocket, at ``/ws`` on the HTTP listener,
for browsers: each frame is one text message
``{"msgtype": <MsgType>, "body": {...}}``, with the MsgTypes, bodies,
authentication, acknowledgements and errors of the TCP long connection.

Only the transport differs, so L{WebSocketProtocol} is the TCP channel's
protocol fed whole messages instead of a byte stream, and writing
messages instead of length-prefixed frames.  One thing is added for
browsers, which have no offline-message store of their own: after
IM_AUTH the server pushes what the session missed (acknowledged as usual),
so a page that reconnects resumes without a query.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.web.server import NOT_DONE_YET
from twisted.web.websocket import WebSocketResource
from wsproto.utilities import LocalProtocolError

from imd.channels.longconn.framing import dumps
from imd.channels.longconn.protocol import LongConnProtocol, LongConnSession
from imd.channels.shared.framed import ChannelFactory
from imd.channels.shared.httpjson import write_error
from imd.channels.shared.jsonobj import parse_object
from imd.channels.shared.origin import check_origin
from imd.channels.shared.web import Family
from imd.errors import BadRequest, InvalidField, RateLimited

if TYPE_CHECKING:
    from imd.server import Server

# Room for a message's WebSocket headers and the next message's first
# bytes, over web.max_message, before a message still arriving is too big.
FRAME_SLACK = 1024


class WebSocketSession(LongConnSession):
    channel = "websocket"


class _Transport:
    """
    What L{FramedProtocol} writes to and pauses, for one WebSocket: writes
    become text messages on C{wire}, flow control is the TCP connection's.
    """

    def __init__(self, wire: Any, tcp: Any) -> None:
        self._wire = wire
        self._tcp = tcp

    def write(self, data: bytes) -> None:
        try:
            self._wire.sendTextMessage(data.decode("utf-8"))
        except LocalProtocolError:
            pass  # the client closed; its connectionLost is on the way

    def loseConnection(self) -> None:
        try:
            self._wire.loseConnection()
        except LocalProtocolError:
            self._tcp.loseConnection()

    def pauseProducing(self) -> None:
        self._tcp.pauseProducing()

    def resumeProducing(self) -> None:
        self._tcp.resumeProducing()

    def getPeer(self) -> Any:
        return self._tcp.getPeer()

    def setTcpNoDelay(self, enabled: bool) -> None:
        self._tcp.setTcpNoDelay(enabled)


class WebSocketProtocol(LongConnProtocol):
    """A long connection whose frames are WebSocket text messages."""

    session_class = WebSocketSession
    push_messages = True
    tcp: Any = None
    # Bytes received since the last whole message (see bound_messages).
    pending = 0

    # -- twisted.web.websocket's WebSocketProtocol --------------------------

    def negotiationStarted(self, wire: Any) -> None:
        self.makeConnection(_Transport(wire, self.tcp))

    def negotiationFinished(self) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        self.pending = 0
        self.dataReceived(message)

    def bytesMessageReceived(self, data: bytes) -> None:
        self.pending = 0
        self._fail(0, "", "send each frame as a text message")

    def pongReceived(self, payload: bytes) -> None:
        pass

    def bytes_received(self, n: int) -> bool:
        """C{n} more bytes arrived: False once a message is over the limit (the connection is closing)."""
        self.pending += n
        if self.pending <= self.server.config.web.max_message + FRAME_SLACK:
            return True
        if not self._closing:
            self._fail(0, "", f"a message is over the limit of {self.server.config.web.max_message} bytes")
        return False

    # -- frames -------------------------------------------------------------

    def frames(self, message: str) -> list | None:
        limit = self.server.config.web.max_message
        try:
            if len(message) > limit and len(message.encode("utf-8")) > limit:
                raise InvalidField(f"a message is over the limit of {limit} bytes")
            frame = parse_object(message, "the message", InvalidField)
            msgtype, body = frame.get("msgtype"), frame.get("body", {})
            if type(msgtype) is not int or not 0 <= msgtype < 1 << 32:
                raise InvalidField('the message must be {"msgtype": <MsgType>, "body": {...}}')
            if not isinstance(body, dict):
                raise InvalidField("body must be a JSON object")
        except InvalidField as e:
            if self.session is None:
                self._fail(0, "", e.message)
            else:
                self._error(0, "", e)
            return None
        return [[msgtype, body]]

    def encode_frame(self, msgtype: int, body: dict) -> bytes:
        return dumps({"msgtype": msgtype, "body": body})


class WebSocketFactory(ChannelFactory):
    protocol_class = WebSocketProtocol

    def __init__(self, server: "Server") -> None:
        super().__init__(server, server.config.longconn.idle_timeout)


class _Handshake(WebSocketResource):
    """Twisted's handshake for one request, whose protocol is already built."""

    def __init__(self, factory: WebSocketFactory, protocol: WebSocketProtocol) -> None:
        super().__init__(self)
        self._channels = factory
        self._protocol = protocol

    def buildProtocol(self, request: Any) -> WebSocketProtocol:
        return self._protocol

    def render_GET(self, request: Any) -> Any:
        result = super().render_GET(request)
        if result is not NOT_DONE_YET:
            # Refused: the connection never opened.
            self._channels.forget(self._protocol)
            return result
        channel = request.channel
        # From now on the channel's timeouts are the session's (idle sweep,
        # authentication deadline), not those of an HTTP request.
        channel.setTimeout(None)
        receive = channel.dataReceived
        protocol = self._protocol

        def bounded(data: bytes) -> None:
            # twisted.web.websocket collects a message whole, whatever its
            # size: one that grows past the limit is refused as it arrives.
            if protocol.bytes_received(len(data)):
                receive(data)

        channel.dataReceived = bounded
        return result


def _is_upgrade(request: Any) -> bool:
    upgrade = (request.getHeader(b"upgrade") or b"").lower()
    return upgrade == b"websocket" and request.getHeader(b"sec-websocket-key") is not None


def make_app(server: "Server") -> Family:
    family = Family("websocket", server.metrics, write_error)
    factory = WebSocketFactory(server)

    @family.app.route("/ws", methods=["GET"])
    def handshake(request):
        check_origin(request, server.config.web.allowed_origins)
        if not _is_upgrade(request):
            raise BadRequest("/ws takes a WebSocket handshake (Upgrade: websocket)")
        protocol = factory.buildProtocol(request.getClientAddress())
        if protocol is None:
            raise RateLimited("too many connections from your address have not authenticated yet")
        protocol.tcp = request.channel.transport
        return _Handshake(factory, protocol)

    return family
