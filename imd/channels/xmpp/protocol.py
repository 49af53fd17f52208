# -*- test-case-name: tests.test_xmpp -*-
"""
The XMPP c2s channel (RFC 6120/6121): a stream's header and features,
STARTTLS, SASL (SCRAM-SHA-1, SCRAM-SHA-256, PLAIN), resource binding,
then stanzas, each mapped onto one core service and answered in the
stream's order.  What the hub sends a session is written through
L{imd.channels.xmpp.serialize}.

Stanzas are handled one after another (L{FramedProtocol}), so a client's
messages are committed in the order it sent them.
"""

from __future__ import annotations

import secrets
import uuid
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.xish import domish

from imd.channels.shared.framed import ChannelFactory, ChannelSession, FramedProtocol
from imd.channels.xmpp import envelope, sasl, serialize
from imd.channels.xmpp.streams import Resumable, StreamState
from imd.channels.xmpp.codec import StreamEnd, StreamError, StreamParser, StreamStart
from imd.channels.xmpp.stanzas import (
    NS_BIND,
    NS_CARBONS,
    NS_CLIENT,
    NS_DISCO_INFO,
    NS_MARKERS,
    NS_PING,
    NS_RECEIPTS,
    NS_RETRACT,
    NS_ROSTER,
    NS_SASL,
    NS_SEARCH,
    NS_SESSION,
    NS_SM,
    NS_STANZA_ERRORS,
    NS_STREAM_ERRORS,
    NS_TLIM,
    NS_TLS,
    Jid,
    element,
    first_child,
    stanza_error,
    text_of,
)
from imd.core import events
from imd.errors import Conflict, Forbidden, IMError, InvalidField, NotFound, RateLimited, Unauthenticated
from imd.hub.interfaces import Event

if TYPE_CHECKING:
    from imd.server import Server

log = Logger()
# SASL attempts one stream may make before it is closed.
MAX_SASL_FAILURES = 3
MAX_RESOURCE = 64
# Features this server answers disco#info with.
FEATURES = (NS_DISCO_INFO, NS_PING, NS_RECEIPTS, NS_MARKERS, NS_RETRACT, NS_SM, NS_CARBONS, NS_TLIM, NS_SEARCH)
STANZAS = ("message", "presence", "iq")
# Core errors as stanza error conditions.
CONDITIONS = (
    (NotFound, "item-not-found"),
    (Forbidden, "forbidden"),
    (Conflict, "conflict"),
    (Unauthenticated, "not-authorized"),
    (InvalidField, "bad-request"),
    (RateLimited, "policy-violation"),
)


def condition_of(error: IMError) -> str:
    for cls, condition in CONDITIONS:
        if isinstance(error, cls):
            return condition
    return "internal-server-error"


class XmppSession(ChannelSession):
    channel = "xmpp"
    # Whether the client speaks seed 002's envelope (it sent the tlim element).
    tlim = False
    # Whether it asked for carbons (XEP-0280).
    carbons = False


class XmppProtocol(FramedProtocol):
    session_class = XmppSession

    def __init__(self, server: "Server") -> None:
        super().__init__(server)
        self.config = server.config.xmpp
        self.domain = self.config.domain
        self.parser = StreamParser(self.config.max_stanza)
        # Set once the server's stream header is written (each restart anew).
        self.stream_id: str | None = None
        self.tls = False
        # The user SASL authenticated, and the token it was given.
        self.uid: str | None = None
        self.login_token: str | None = None
        self.exchange: sasl.ScramExchange | None = None
        self.sasl_failures = 0
        self.available = False
        # A message written counts as received until the client can say
        # so itself (stream management, or the envelope's MTC-000).
        self.received_on_write = True
        # XEP-0198, once the client enables it.
        self.sm: StreamState | None = None
        self.show = "online"

    # -- bytes in -----------------------------------------------------------

    def frames(self, data: bytes) -> list | None:
        try:
            return self.parser.feed(data)
        except StreamError as e:
            self.stream_error(e.condition, e.text)
            return None

    def handle(self, frame: Any) -> Deferred | None:
        if isinstance(frame, StreamStart):
            self._open(frame.attrs)
            return None
        if isinstance(frame, StreamEnd):
            self.write(b"</stream:stream>")
            self.close()
            return None
        if self.uid is None:
            return self._before_auth(frame)
        if self.session is None:
            return self._before_bind(frame)
        if self.token_due():
            d = self.check_token()
            d.addCallback(lambda ok: self._stanza(frame) if ok and not self._closing else None)
            return d
        return self._stanza(frame)

    # -- the stream -----------------------------------------------------------

    def send(self, el: domish.Element, message: dict | None = None) -> None:
        """Write C{el}; a stanza is counted for stream management (C{message}: the one it carries)."""
        self.write(el.toXml().encode("utf-8"))
        if self.sm is not None and el.uri == NS_CLIENT and el.name in STANZAS and not self._closing:
            self.sm.wrote(message)

    def _header(self) -> None:
        self.stream_id = uuid.uuid4().hex
        self.write(
            (
                "<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
                " xmlns:stream='http://etherx.jabber.org/streams'"
                f" id='{self.stream_id}' from='{self.domain}' version='1.0' xml:lang='en'>"
            ).encode("utf-8")
        )

    def _open(self, attrs: dict[str, str]) -> None:
        self._header()
        to = attrs.get("to", "")
        if to and to.lower() != self.domain:
            self.stream_error("host-unknown", f"this server is {self.domain}")
            return
        if attrs.get("version", "") != "1.0":
            self.stream_error("unsupported-version", "XMPP 1.0 streams only")
            return
        features = []
        if self.uid is None:
            if self.factory.tls_options is not None and not self.tls:
                starttls = element("starttls", NS_TLS)
                if self.config.require_tls:
                    starttls.addElement("required")
                features.append(starttls)
            if self.tls or not self.config.require_tls:
                mechanisms = element("mechanisms", NS_SASL)
                for name in self._mechanisms():
                    mechanisms.addElement("mechanism", content=name)
                features.append(mechanisms)
        else:
            features.append(element("bind", NS_BIND))
            element_session = element("session", NS_SESSION)
            element_session.addElement("optional")
            features.append(element_session)
            features.append(element("sm", NS_SM))
        self.write(b"<stream:features>" + b"".join(f.toXml().encode("utf-8") for f in features) + b"</stream:features>")

    def _mechanisms(self) -> list[str]:
        names = list(sasl.SCRAM_MECHANISMS)
        if self.tls or self.config.plain_without_tls:
            names.append("PLAIN")
        return names

    def _restart(self) -> None:
        """The client opens a new stream next (after STARTTLS or SASL); nothing before counts."""
        self.parser.reset()
        self.stream_id = None
        # Whatever came after the last element in the same read belongs to
        # no stream (RFC 6120 5.4.3.3, the STARTTLS command injection).
        self._queue.clear()

    def stream_error(self, condition: str, text: str = "") -> None:
        """End the stream with a stream error (RFC 6120 4.9): this connection only."""
        if self._closing:
            return
        log.info("xmpp stream error {condition}: {text}", condition=condition, text=text)
        self.count_error(condition)
        if self.stream_id is None:
            self._header()
        error = element("error", "http://etherx.jabber.org/streams")
        error.addElement((NS_STREAM_ERRORS, condition))
        if text:
            error.addElement((NS_STREAM_ERRORS, "text"), content=text)
        xml = error.toXml(prefixes={"http://etherx.jabber.org/streams": "stream"})
        self.write(xml.encode("utf-8") + b"</stream:stream>")
        self.close()

    def kick(self, reason: str) -> None:
        # The hub has already moved on to the session that replaced this one.
        self.session = None
        if "elsewhere" in reason:
            self.stream_error("conflict", reason)
        elif "token" in reason:
            self.stream_error("not-authorized", reason)
        else:
            self.stream_error("system-shutdown", reason)

    def timeoutConnection(self) -> None:
        self.stream_error("connection-timeout", f"nothing received for {self.factory.idle.timeout} s")

    def connectionLost(self, reason: Any = None) -> None:
        if self.session is not None:
            log.info("{uid}/{res} disconnected", uid=self.session.uid, res=self.session.resource)
            if self.sm is not None and self.sm.resumable:
                # Its unacknowledged messages are still offline in the
                # store; a resume (or the next login) writes them again.
                self.sm.tlim, self.sm.available, self.sm.show = self.session.tlim, self.available, self.show
                self.factory.resumable.keep(self.sm, lambda state: log.info("stream {id} of {uid} expired", id=state.id, uid=state.uid))
        super().connectionLost(reason)

    # -- before authentication -------------------------------------------------

    def _before_auth(self, el: domish.Element) -> Deferred | None:
        if (el.uri, el.name) == (NS_TLS, "starttls"):
            return self._starttls()
        if el.uri == NS_SASL:
            if el.name == "auth":
                return self._guard_sasl(self._auth, el)
            if el.name == "response":
                return self._guard_sasl(self._response, el)
            if el.name == "abort":
                self._sasl_failure("aborted")
                return None
        self.stream_error("not-authorized", "authenticate first")
        return None

    def _starttls(self) -> None:
        if self.factory.tls_options is None or self.tls:
            self.write(element("failure", NS_TLS).toXml().encode("utf-8") + b"</stream:stream>")
            self.close()
            return
        self.send(element("proceed", NS_TLS))
        self._restart()
        self.transport.startTLS(self.factory.tls_options)
        self.tls = True

    def _guard_sasl(self, handler: Callable, el: domish.Element) -> Deferred | None:
        if self.config.require_tls and not self.tls:
            self._sasl_failure("encryption-required")
            return None
        d = maybeDeferred(handler, el)
        d.addErrback(self._sasl_failed)
        return d

    def _sasl_failed(self, failure: Failure) -> None:
        if failure.check(sasl.SaslFailure):
            self._sasl_failure(failure.value.condition, failure.value.text)
        elif failure.check(RateLimited):
            self._sasl_failure("temporary-auth-failure", failure.value.message)
        elif failure.check(IMError):
            self._sasl_failure("not-authorized")
        else:
            log.failure("xmpp: SASL", failure)
            self._sasl_failure("temporary-auth-failure")

    def _sasl_failure(self, condition: str, text: str = "") -> None:
        self.exchange = None
        self.sasl_failures += 1
        self.count_error(condition)
        failure = element("failure", NS_SASL)
        failure.addElement(condition)
        if text:
            failure.addElement("text", content=text)
        self.send(failure)
        if self.sasl_failures >= MAX_SASL_FAILURES:
            self.write(b"</stream:stream>")
            self.close()

    @inlineCallbacks
    def _auth(self, el: domish.Element):
        mechanism = el.getAttribute("mechanism", "")
        data = sasl.decode64(str(el))
        if mechanism == "PLAIN" and mechanism in self._mechanisms():
            yield self._plain(data)
            return
        if mechanism not in sasl.SCRAM_MECHANISMS:
            raise sasl.SaslFailure("invalid-mechanism")
        exchange = sasl.ScramExchange(mechanism, self.factory.secret)
        if not data:
            raise sasl.SaslFailure("malformed-request", "SCRAM starts with the client-first message")
        username = exchange.first(data)
        yield self.server.accounts.login_allowed(username, self.peer_address(), "scram")
        keys = yield self.server.accounts.scram_keys(username, mechanism)
        challenge = exchange.challenge(keys, self.config.scram_iterations)
        self.exchange = exchange
        self.send(_sasl_el("challenge", challenge))

    @inlineCallbacks
    def _response(self, el: domish.Element):
        exchange, self.exchange = self.exchange, None
        if exchange is None:
            raise sasl.SaslFailure("malformed-request", "no SASL exchange under way")
        uid = exchange.username
        try:
            final = exchange.final(sasl.decode64(str(el)))
        except sasl.SaslFailure as e:
            if e.condition == "not-authorized":
                yield self.server.accounts.login_failed(uid, self.peer_address(), "scram")
            raise
        yield self.server.accounts.login_succeeded(uid, self.peer_address(), "scram")
        if exchange.authzid not in ("", uid, f"{uid}@{self.domain}"):
            raise sasl.SaslFailure("invalid-authzid")
        login = yield self.server.accounts.issue_token(uid)
        self._authenticated(uid, login.token, final)

    @inlineCallbacks
    def _plain(self, data: bytes):
        authzid, authcid, password = sasl.parse_plain(data)
        accounts = self.server.accounts
        if authzid not in ("", authcid, f"{authcid}@{self.domain}"):
            raise sasl.SaslFailure("invalid-authzid")
        # A live token of the user works as the password too.  It is tried
        # first: a token is no password guess, and trying it as a password
        # first counted each such login as a failed one of its address,
        # which after limits.login_address_failures refused them all.
        try:
            owner = yield accounts.authenticate(password)
        except Unauthenticated:
            owner = None
        if owner == authcid:
            token = password
            # Counted as the long connection counts its token logins.
            yield accounts.login_succeeded("token", self.peer_address(), "token")
        else:
            login = yield accounts.login(authcid, password, self.peer_address())
            token = login.token
        self._authenticated(authcid, token, b"")

    def _authenticated(self, uid: str, token: str, final: bytes) -> None:
        if self._closing:
            return
        self.uid, self.login_token = uid, token
        self.send(_sasl_el("success", final))
        self._restart()
        log.info("{uid} authenticated on xmpp", uid=uid)

    # -- after authentication ----------------------------------------------------

    def _before_bind(self, el: domish.Element) -> Deferred | None:
        if (el.uri, el.name) == (NS_SM, "resume"):
            return self._resume(el)
        if el.uri == NS_SM and el.name == "enable":
            self._sm_failed("unexpected-request")
            return None
        if (el.uri, el.name) == (NS_CLIENT, "iq") and el.getAttribute("type") == "set":
            bind = first_child(el, NS_BIND, "bind")
            if bind is not None:
                return self._bind(el, bind)
        self.stream_error("not-authorized", "bind a resource first")
        return None

    def _bind(self, iq: domish.Element, bind: domish.Element) -> None:
        resource = text_of(first_child(bind, NS_BIND, "resource")).strip()
        if len(resource) > MAX_RESOURCE or any(ord(c) < 32 for c in resource):
            self.send(stanza_error(iq, "bad-request", f"a resource is at most {MAX_RESOURCE} printable characters"))
            return
        if not resource:
            resource = f"imd-{secrets.token_hex(4)}"
        self.start_session(self.uid, resource, self.login_token)
        answer = element("iq", type="result", id=iq.getAttribute("id"))
        answer.addElement((NS_BIND, "bind")).addElement("jid", content=str(Jid(self.uid, self.domain, resource)))
        self.send(answer)

    def _stanza(self, el: domish.Element) -> Deferred | None:
        if el.uri == NS_SM:
            return self._stream_management(el)
        handler = self._stanzas.get((el.uri, el.name))
        if handler is None:
            self.stream_error("unsupported-stanza-type", f"<{el.name}> in {el.uri}")
            return None
        d = maybeDeferred(handler, self, el)
        d.addErrback(self._stanza_failed, el)
        # Counted once handled, which for a message means committed: an
        # <a h> never covers a message the server could still lose.
        d.addCallback(self._handled)
        return d

    def _handled(self, _: Any) -> None:
        if self.sm is not None:
            self.sm.handled_one()

    # -- XEP-0198 stream management ---------------------------------------------

    def _stream_management(self, el: domish.Element) -> Deferred | None:
        if el.name == "enable":
            if self.sm is not None:
                self._sm_failed("unexpected-request")
                return
            self.sm = StreamState(self.uid, self.session.resource)
            self.sm.tlim, self.sm.available = self.session.tlim, self.available
            # From now on the client says what it has.
            self.received_on_write = False
            enabled = element("enabled", NS_SM, id=self.sm.id)
            if el.getAttribute("resume") in ("true", "1"):
                self.sm.resumable = True
                enabled["resume"] = "true"
                enabled["max"] = str(self.config.resume_timeout)
            self.send(enabled)
        elif self.sm is None:
            self._sm_failed("unexpected-request")
        elif el.name == "r":
            self.send(element("a", NS_SM, h=str(self.sm.handled)))
        elif el.name == "a":
            return self._acked(el)
        elif el.name == "resume":
            self._sm_failed("unexpected-request")
        return None

    def _acked(self, el: domish.Element) -> Deferred | None:
        try:
            h = int(el.getAttribute("h", ""))
        except ValueError:
            h = -1
        messages = self.sm.acked(h)
        if messages is None:
            self.stream_error("undefined-condition", "h acknowledges more stanzas than were sent")
            return None
        if not messages:
            return None
        # The next stanza (an <r/> say) is answered once these are recorded.
        return gatherResults([self._written(data) for data in messages])

    def _sm_failed(self, condition: str) -> None:
        failed = element("failed", NS_SM)
        failed.addElement((NS_STANZA_ERRORS, condition))
        self.send(failed)

    @inlineCallbacks
    def _resume(self, el: domish.Element):
        state = self.factory.resumable.take(el.getAttribute("previd", ""), self.uid)
        try:
            h = int(el.getAttribute("h", ""))
        except ValueError:
            h = -1
        messages = state.acked(h) if state is not None else None
        if messages is None:
            # The client binds a new resource instead.
            self._sm_failed("item-not-found")
            return
        # What the client confirmed leaves offline; the rest is written
        # again below, from the store, numbered on from its h.
        for data in messages:
            yield self._written(data)
        state.sent, state.unacked = h, []
        self.sm = state
        self.received_on_write = False
        self.start_session(self.uid, state.resource, self.login_token)
        self.session.tlim = state.tlim
        self.write(element("resumed", NS_SM, previd=state.id, h=str(state.handled)).toXml().encode("utf-8"))
        log.info("{uid}/{res} resumed its stream", uid=self.uid, res=state.resource)
        if state.available:
            self.available, self.show = True, state.show
            yield self.server.presence.online(self.session, state.show)
            yield self.push_missed()

    def _stanza_failed(self, failure: Failure, el: domish.Element) -> None:
        if failure.check(envelope.EnvelopeError):
            error = failure.value
            self.count_error(error.code)
            answer = stanza_error(el, "bad-request", error.detail)
            answer.addElement("body", content=error.code)
            answer.addChild(serialize.tlim_element())
            self.send(answer)
            return
        if failure.check(IMError):
            self.count_error(failure.value.code)
            if el.getAttribute("type") != "error":
                self.send(stanza_error(el, condition_of(failure.value), failure.value.message))
            return
        log.failure("xmpp: <{name}> from {uid}", failure, name=el.name, uid=self.uid)
        self.count_error("internal_error")
        self.send(stanza_error(el, "internal-server-error"))

    def _peer(self, el: domish.Element) -> Jid:
        """The addressee of a stanza: a user or group of this domain."""
        jid = Jid.parse(el.getAttribute("to", ""))
        if jid is None or not jid.local:
            raise InvalidField("the stanza needs a to of the form user@domain")
        if jid.domain != self.domain:
            raise NotFound(f"this server serves {self.domain} only")
        return jid

    # -- iq ------------------------------------------------------------------------

    def _on_iq(self, iq: domish.Element) -> Deferred | None:
        kind = iq.getAttribute("type")
        if kind in ("result", "error"):
            return None
        children = list(iq.elements())
        if kind not in ("get", "set") or not iq.getAttribute("id") or len(children) != 1:
            raise InvalidField("an iq is get or set, with an id and one child")
        to = iq.getAttribute("to")
        own = (self.domain, f"{self.uid}@{self.domain}", str(Jid(self.uid, self.domain, self.session.resource)))
        if to and to not in own:
            self.send(stanza_error(iq, "service-unavailable"))
            return None
        child = children[0]
        handler = self._iqs.get((child.uri, child.name, kind))
        if handler is None:
            self.send(stanza_error(iq, "service-unavailable"))
            return None
        return handler(self, iq, child)

    def _result(self, iq: domish.Element) -> domish.Element:
        answer = element("iq", type="result", id=iq["id"])
        if iq.hasAttribute("to"):
            answer["from"] = iq["to"]
        return answer

    @inlineCallbacks
    def _roster_get(self, iq: domish.Element, query: domish.Element):
        friends = yield self.server.roster.friends(self.uid)
        groups = yield self.server.roster.friend_groups(self.uid)
        names = {g.gid: g.name for g in groups}
        answer = self._result(iq)
        result = answer.addElement((NS_ROSTER, "query"))
        for friend in friends:
            serialize.roster_item(result, self.domain, friend, names)
        self.send(answer)

    @inlineCallbacks
    def _roster_set(self, iq: domish.Element, query: domish.Element):
        items = [c for c in query.elements() if c.name == "item"]
        jid = Jid.parse(items[0].getAttribute("jid", "")) if len(items) == 1 else None
        if jid is None or not jid.local or jid.domain != self.domain:
            raise InvalidField("a roster set holds one item of this domain")
        if items[0].getAttribute("subscription") == "remove":
            yield self._unfriend(jid.local)
        elif items[0].hasAttribute("name"):
            # A remark for a friend; adding someone is a subscription request.
            friends = yield self.server.roster.friend_ids(self.uid)
            if jid.local in friends:
                yield self.server.roster.set_remark(self.uid, jid.local, items[0]["name"])
        self.send(self._result(iq))

    def _disco_info(self, iq: domish.Element, query: domish.Element) -> None:
        answer = self._result(iq)
        result = answer.addElement((NS_DISCO_INFO, "query"))
        identity = result.addElement("identity")
        identity["category"], identity["type"], identity["name"] = "server", "im", "imd"
        for feature in FEATURES:
            result.addElement("feature")["var"] = feature
        self.send(answer)

    def _search_form(self, iq: domish.Element, query: domish.Element) -> None:
        answer = self._result(iq)
        serialize.search_form(answer.addElement((NS_SEARCH, "query")))
        self.send(answer)

    @inlineCallbacks
    def _search(self, iq: domish.Element, query: domish.Element):
        wanted, as_form = serialize.searched(query)
        cards = yield self.server.lookup.find(self.uid, wanted)
        answer = self._result(iq)
        serialize.search_result(answer.addElement((NS_SEARCH, "query")), self.domain, cards, as_form)
        self.send(answer)

    def _empty_result(self, iq: domish.Element, child: domish.Element) -> None:
        self.send(self._result(iq))

    def _carbons(self, iq: domish.Element, child: domish.Element) -> None:
        self.session.carbons = child.name == "enable"
        self.send(self._result(iq))

    _iqs = {
        (NS_ROSTER, "query", "get"): _roster_get,
        (NS_ROSTER, "query", "set"): _roster_set,
        (NS_DISCO_INFO, "query", "get"): _disco_info,
        (NS_SEARCH, "query", "get"): _search_form,
        (NS_SEARCH, "query", "set"): _search,
        (NS_PING, "ping", "get"): _empty_result,
        (NS_SESSION, "session", "set"): _empty_result,
        (NS_CARBONS, "enable", "set"): _carbons,
        (NS_CARBONS, "disable", "set"): _carbons,
    }

    # -- presence ------------------------------------------------------------------

    @inlineCallbacks
    def _on_presence(self, el: domish.Element):
        if first_child(el, NS_TLIM, "tlim") is not None:
            self._speaks_tlim()
        kind = el.getAttribute("type")
        if el.hasAttribute("to"):
            if kind in _SUBSCRIPTIONS:
                yield _SUBSCRIPTIONS[kind](self, self._peer(el).local, el)
            # Other directed presence goes nowhere: presence reaches friends.
            return
        presence = self.server.presence
        if kind is None:
            show = text_of(first_child(el, NS_CLIENT, "show")).strip()
            show = show if show in serialize.SHOWS else "online"
            self.show = show
            if not self.available:
                self.available = True
                yield presence.online(self.session, show)
                # RFC 6121: what waited for the user goes out after its
                # initial presence.
                yield self.push_missed()
            else:
                yield presence.update(self.session, "update", show)
        elif kind == "unavailable" and self.available:
            self.available = False
            yield presence.update(self.session, "leave", "offline")

    # Subscriptions (RFC 6121 section 3) are the core's friend requests: a
    # friendship is a mutual subscription.

    @inlineCallbacks
    def _subscribe(self, peer: str, el: domish.Element):
        roster = self.server.roster
        friends = yield roster.friend_ids(self.uid)
        if peer in friends:
            # Subscribed already (RFC 6121 3.1.3): nothing to ask.
            return
        note = text_of(first_child(el, NS_CLIENT, "status"))
        yield roster.request(self.uid, peer, el.getAttribute("id") or uuid.uuid4().hex, note, origin=self.session)

    @inlineCallbacks
    def _asked_by(self, peer: str):
        pending = yield self.server.roster.pending_requests(self.uid, False)
        return any(r.msgfrom == peer for r in pending)

    @inlineCallbacks
    def _subscribed(self, peer: str, el: domish.Element):
        # Without a pending request there is nothing to approve (RFC 6121
        # 3.1.5: ignored; clients send it again when they resync).
        if (yield self._asked_by(peer)):
            yield self.server.roster.answer_from(self.uid, peer, True, origin=self.session)

    @inlineCallbacks
    def _unsubscribed(self, peer: str, el: domish.Element):
        if (yield self._asked_by(peer)):
            yield self.server.roster.answer_from(self.uid, peer, False, origin=self.session)
        else:
            yield self._unfriend(peer)

    @inlineCallbacks
    def _unfriend(self, peer: str):
        friends = yield self.server.roster.friend_ids(self.uid)
        if peer in friends:
            yield self.server.roster.remove(self.uid, peer, origin=self.session)

    def _unsubscribe(self, peer: str, el: domish.Element):
        return self._unfriend(peer)

    def _speaks_tlim(self) -> None:
        if not self.session.tlim:
            self.session.tlim = True
            # The seed's clients confirm each message with MTC-000.
            self.received_on_write = False

    # -- messages ----------------------------------------------------------------

    def _on_message(self, el: domish.Element) -> Deferred | None:
        if el.getAttribute("type") == "error":
            return None
        if first_child(el, NS_TLIM, "tlim") is not None:
            self._speaks_tlim()
            return self._envelope(el)
        peer = self._peer(el)
        group = el.getAttribute("type") == "groupchat"
        target = dict(gid=peer.local) if group else dict(to=peer.local)
        received = first_child(el, NS_RECEIPTS, "received")
        if received is not None:
            return self._receipt(received.getAttribute("id"), "delivered", **target)
        displayed = first_child(el, NS_MARKERS, "displayed")
        if displayed is not None:
            return self._receipt(displayed.getAttribute("id"), "read", **target)
        retract = first_child(el, NS_RETRACT, "retract")
        if retract is not None:
            return self.server.messages.recall(self.uid, retract.getAttribute("id"), origin=self.session, **target)
        body = first_child(el, NS_CLIENT, "body")
        if body is None:
            # Chat states and the like: nothing to keep.
            return None
        msgid = el.getAttribute("id") or uuid.uuid4().hex
        return self._send(msgid, str(body), "text", "", **target)

    def _send(self, msgid: str, body: str, kind: str, client_time: str, **target: Any) -> Deferred:
        return self.server.messages.send(
            self.uid,
            msgid=msgid,
            body=body,
            kind=kind,
            client_time=client_time,
            sender_res=self.session.resource,
            origin=self.session,
            **target,
        )

    @inlineCallbacks
    def _receipt(self, msgid: Any, kind: str, to: str | None = None, gid: str | None = None):
        messages = self.server.messages
        # A receipt also says the client has the message: it leaves offline
        # before the sender hears of it.
        if not gid:
            yield messages.acknowledge(self.uid, msgid, to)
        message = yield messages.receipt(self.uid, msgid, to=to, gid=gid, kind=kind, origin=self.session)
        if message.gid is not None:
            yield messages.acknowledge_group(self.uid, message.gid, message.group_seq)

    def _envelope(self, el: domish.Element) -> Deferred | None:
        peer = Jid.parse(el.getAttribute("to", ""))
        default_to = peer.local if peer is not None and peer.local and peer.domain == self.domain else None
        request = envelope.parse(str(first_child(el, NS_CLIENT, "body") or ""), default_to)
        if request.action == "send":
            target = dict(gid=request.gid) if request.gid else dict(to=request.to)
            d = self._send(request.msgid, request.content, request.kind, request.client_time, **target)
        elif request.action == "recall":
            d = self.server.messages.recall(self.uid, request.msgid, to=request.to, gid=request.gid, origin=self.session)
        else:
            d = self._receipt(request.msgid, request.action, to=request.to, gid=request.gid)
        return d

    _stanzas = {
        (NS_CLIENT, "iq"): _on_iq,
        (NS_CLIENT, "presence"): _on_presence,
        (NS_CLIENT, "message"): _on_message,
    }

    # -- events out ----------------------------------------------------------------

    def render(self, event: Event) -> Deferred | None:
        session = self.session
        target = serialize.Target(
            self.domain,
            session.uid,
            session.resource,
            session.tlim,
            int(self.server.reactor.seconds() * 1000),
            session.carbons,
            self.config.download_url,
        )
        stanza = serialize.event(target, event)
        if stanza is None:
            return None
        message = event.data if event.kind == events.MESSAGE else None
        self.send(stanza, message)
        if message is not None and self.sm is not None:
            # Ask at once: the message leaves offline when the answer comes.
            self.write(b"<r xmlns='urn:xmpp:sm:3'/>")
        if event.kind == events.MESSAGE and self.received_on_write:
            return self._written(event.data)
        return None

    def _written(self, data: dict) -> Deferred:
        """The client has C{data}'s message (written to a client that cannot confirm, or confirmed)."""
        d = self.server.messages.received(self.uid, data)
        return d.addErrback(lambda f: log.failure("xmpp: marking {msgid} received", f, msgid=data["msgid"]))


def _sasl_el(name: str, data: bytes) -> domish.Element:
    el = element(name, NS_SASL)
    if data:
        el.addContent(sasl.encode64(data))
    return el


_SUBSCRIPTIONS = {
    "subscribe": XmppProtocol._subscribe,
    "subscribed": XmppProtocol._subscribed,
    "unsubscribed": XmppProtocol._unsubscribed,
    "unsubscribe": XmppProtocol._unsubscribe,
}


class XmppFactory(ChannelFactory):
    protocol_class = XmppProtocol

    def __init__(self, server: "Server") -> None:
        super().__init__(server, server.config.xmpp.idle_timeout)
        self.secret = sasl.new_secret()
        self.tls_options = _tls_options(server.config.xmpp)
        self.resumable = Resumable(server.reactor, server.config.xmpp.resume_timeout)

    def stopFactory(self) -> None:
        self.resumable.clear()


def _tls_options(config: Any) -> Any:
    if not config.tls_cert:
        return None
    from twisted.internet import ssl

    with open(config.tls_cert, "rb") as f:
        cert = f.read()
    with open(config.tls_key, "rb") as f:
        key = f.read()
    return ssl.PrivateCertificate.loadPEM(cert + b"\n" + key).options()
