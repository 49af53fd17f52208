# -*- test-case-name: tests.test_xmpp_client -*-
"""
A small XMPP client of imd, for the benchmark tool and tests: SCRAM-SHA-1
(or PLAIN) login, resource binding, stream management (each message is confirmed by
the server's ``<a h>``, which counts it once committed), plain-body chat.

    client = yield connect_xmpp(reactor, "127.0.0.1", 5222, "localhost")
    yield client.login("alice", "s3cret!", "phone")
    yield client.send_message("bob", "hello")     # fires once committed
    client.on_message = lambda sender, msgid, body: ...

Stock XMPP clients (slixmpp and others) are what users run; this one
loads nothing of the server (only the family's stream parser).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from typing import Any, Callable
from xml.sax.saxutils import escape, quoteattr

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from imd.channels.xmpp.codec import StreamEnd, StreamError, StreamParser, StreamStart

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_SM = "urn:xmpp:sm:3"
HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    " xmlns:stream='http://etherx.jabber.org/streams' to={domain} version='1.0'>"
)


class XmppError(Exception):
    """The server refused: a SASL failure, a stream error or an error stanza."""


class XmppClient(Protocol):
    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.parser = StreamParser(1 << 24)
        self.closed: Deferred = Deferred()
        # (sender uid, msgid, body) of each message received.
        self.on_message: Callable[[str, str, str], None] | None = None
        self.on_error: Callable[[str, str], None] | None = None
        self._next: list[tuple[Callable[[Any], bool], Deferred]] = []
        # Stream management: stanzas sent and not yet confirmed, by number.
        self._sent = 0
        self._pending: dict[int, Deferred] = {}
        self._handled = 0
        self._lost = False

    # -- wire -------------------------------------------------------------

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.write(HEADER.format(domain=quoteattr(self.domain)))

    def write(self, text: str) -> None:
        self.transport.write(text.encode("utf-8"))

    def dataReceived(self, data: bytes) -> None:
        try:
            items = self.parser.feed(data)
        except StreamError as e:
            self.transport.loseConnection()
            self._fail(XmppError(f"bad XML from the server: {e.condition}"))
            return
        for item in items:
            self._item(item)

    def _item(self, item: Any) -> None:
        if isinstance(item, (StreamStart, StreamEnd)):
            return
        if item.uri == NS_SM:
            if item.name == "r":
                self.write(f"<a xmlns='{NS_SM}' h='{self._handled}'/>")
            elif item.name == "a":
                self._confirmed(int(item.getAttribute("h", "0")))
            else:
                if item.name == "enabled":
                    # XEP-0198 counts the stanzas handled from here on, not
                    # the bind (or registration) result before.
                    self._handled = 0
                self._offer(item)
            return
        if item.name in ("message", "presence", "iq"):
            self._handled += 1
        if item.name == "message":
            body = next((c for c in item.elements() if c.name == "body"), None)
            if item.getAttribute("type") == "error":
                if self.on_error is not None:
                    self.on_error(item.getAttribute("id", ""), str(body or ""))
                return
            if body is not None and self.on_message is not None:
                sender = item.getAttribute("from", "").partition("@")[0]
                self.on_message(sender, item.getAttribute("id", ""), str(body))
                return
        self._offer(item)

    def _offer(self, item: Any) -> None:
        for entry in list(self._next):
            if entry[0](item):
                self._next.remove(entry)
                entry[1].callback(item)
                return

    def _expect(self, predicate: Callable[[Any], bool]) -> Deferred:
        d: Deferred = Deferred()
        self._next.append((predicate, d))
        return d

    def _confirmed(self, h: int) -> None:
        for number in [n for n in self._pending if n <= h]:
            self._pending.pop(number).callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        self._lost = True
        self._fail(XmppError("the connection closed"))
        self.closed.callback(None)

    def _fail(self, error: Exception) -> None:
        waiting, self._next = self._next, []
        pending, self._pending = self._pending, {}
        for _, d in waiting:
            d.errback(error)
        for d in pending.values():
            d.errback(error)

    # -- requests -----------------------------------------------------------

    def _stanza(self, text: str) -> Deferred:
        """Send a stanza; fires once the server counts it (stream management on)."""
        self._sent += 1
        d: Deferred = Deferred()
        self._pending[self._sent] = d
        self.write(text + f"<r xmlns='{NS_SM}'/>")
        return d

    async def _login(self, uid: str, password: str, resource: str, plain: bool, register: bool) -> None:
        await self._expect(lambda el: el.name == "features")
        if register:
            await self._register(uid, password)
        if plain:
            self.write(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{_b64(chr(0) + uid + chr(0) + password)}</auth>")
            answer = await self._expect(lambda el: el.uri == NS_SASL)
            if answer.name != "success":
                raise XmppError(f"SASL: login refused ({answer.name})")
        else:
            await self._scram(uid, password)
        self.parser.reset()
        self.write(HEADER.format(domain=quoteattr(self.domain)))
        await self._expect(lambda el: el.name == "features")
        self.write(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{escape(resource)}</resource></bind></iq>"
        )
        await self._expect(lambda el: el.name == "iq" and el.getAttribute("id") == "bind")
        self.write(f"<enable xmlns='{NS_SM}'/>")
        answer = await self._expect(lambda el: el.uri == NS_SM)
        if answer.name != "enabled":
            raise XmppError("the server did not enable stream management")
        await self._stanza("<presence/>")

    async def _register(self, uid: str, password: str) -> None:
        # In-band registration (XEP-0077) before authenticating, on the same stream.
        self.write(
            "<iq type='set' id='register'><query xmlns='jabber:iq:register'>"
            f"<username>{escape(uid)}</username><password>{escape(password)}</password></query></iq>"
        )
        answer = await self._expect(lambda el: el.name == "iq" and el.getAttribute("id") == "register")
        if answer.getAttribute("type") != "result":
            error = next((c for c in answer.elements() if c.name == "error"), None)
            condition = next((c.name for c in error.elements()), "error") if error is not None else "error"
            raise XmppError(f"registration refused ({condition})")

    async def _scram(self, uid: str, password: str) -> None:
        nonce = secrets.token_urlsafe(18)
        first_bare = f"n={uid.replace('=', '=3D').replace(',', '=2C')},r={nonce}"
        self.write(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-1'>{_b64('n,,' + first_bare)}</auth>")
        answer = await self._expect(lambda el: el.uri == NS_SASL)
        if answer.name != "challenge":
            raise XmppError(f"SASL: {answer.firstChildElement().name if answer.firstChildElement() else answer.name}")
        server_first = base64.b64decode(str(answer)).decode()
        attrs = dict(part.split("=", 1) for part in server_first.split(","))
        if not attrs["r"].startswith(nonce):
            raise XmppError("SASL: the server changed the nonce")
        salted = hashlib.pbkdf2_hmac("sha1", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha1")
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{first_bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(hashlib.sha1(client_key).digest(), auth_message, "sha1")
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
        self.write(f"<response xmlns='{NS_SASL}'>{_b64(f'{without_proof},p={proof}')}</response>")
        answer = await self._expect(lambda el: el.uri == NS_SASL)
        expected = b"v=" + base64.b64encode(hmac.digest(hmac.digest(salted, b"Server Key", "sha1"), auth_message, "sha1"))
        if answer.name != "success" or base64.b64decode(str(answer)) != expected:
            raise XmppError(f"SASL: login refused ({answer.name})")

    def login(self, uid: str, password: str, resource: str = "bench", plain: bool = False, register: bool = False) -> Deferred:
        """
        SCRAM-SHA-1 (or, with C{plain}, PLAIN, where the server offers it:
        it takes a token as the password) as C{uid}, bind C{resource},
        stream management, initial presence.  With C{register}, first
        create the account by in-band registration, where the server
        allows it (imd does not; the benchmark's ejabberd does).
        """
        return Deferred.fromCoroutine(self._login(uid, password, resource, plain, register))

    def send_message(self, to: str, body: str, msgid: str | None = None) -> Deferred:
        """A chat message to user C{to}; fires once the server has committed it."""
        msgid = msgid or uuid.uuid4().hex
        return self._stanza(
            f"<message type='chat' to={quoteattr(f'{to}@{self.domain}')} id={quoteattr(msgid)}>"
            f"<body>{escape(body)}</body></message>"
        )

    def close(self) -> Deferred:
        if not self._lost:
            self.write("</stream:stream>")
            self.transport.loseConnection()
        return self.closed


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def connect_xmpp(reactor: Any, host: str, port: int, domain: str = "localhost", timeout: float = 10) -> Deferred:
    return connectProtocol(TCP4ClientEndpoint(reactor, host, port, timeout=timeout), XmppClient(domain))
