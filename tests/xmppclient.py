"""
slixmpp, a real third-party XMPP client, driven from trial tests.

slixmpp runs on asyncio and the tests on Twisted's reactor, so each
client gets an asyncio loop in a thread of its own; L{SlixClient} hands
calls to that loop and brings results and received stanzas back to the
reactor as Deferreds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from typing import Any, Callable

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, inlineCallbacks

# slixmpp logs every failed connection attempt loudly; tests check outcomes.
logging.getLogger("slixmpp").setLevel(logging.CRITICAL)
if os.environ.get("SLIX_DEBUG"):
    logging.basicConfig(filename=os.environ["SLIX_DEBUG"], level=logging.DEBUG)


def tlim_element(location: str = "mobile"):
    from xml.etree import ElementTree

    return ElementTree.Element("{im.itonglian.com}tlim", location=location)


def envelope(msg: Any) -> dict:
    """The envelope a received message carries."""
    return json.loads(msg["body"])


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, fn: Callable[[], Any]) -> Deferred:
        """Run C{fn} (a coroutine function or a plain one) on the loop; its result on the reactor."""
        d: Deferred = Deferred()

        async def run():
            try:
                result = fn()
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    result = await result
            except BaseException as e:  # noqa: B902 - handed to the Deferred
                reactor.callFromThread(d.errback, e)
                return
            reactor.callFromThread(d.callback, result)

        asyncio.run_coroutine_threadsafe(run(), self.loop)
        return d

    def stop(self) -> None:
        async def cancel_all():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


class SlixClient:
    """
    One slixmpp ClientXMPP on its own loop.  Received messages and
    presences queue up as slixmpp stanzas (read them on the reactor).
    """

    def __init__(self, jid: str, password: str, plugins: tuple[str, ...] = (), **options: Any) -> None:
        self._loop = _Loop()
        self._stopped = False
        self.messages: DeferredQueue = DeferredQueue()
        self.presences: DeferredQueue = DeferredQueue()
        self.events: DeferredQueue = DeferredQueue()

        def build():
            # Without TLS slixmpp offers no SCRAM unless told to (imd's
            # default listener is loopback plain TCP).
            mechanisms = {"unencrypted_scram": True, "unencrypted_plain": options.get("unencrypted_plain", False)}
            client = slixmpp.ClientXMPP(
                jid,
                password,
                loop=self._loop.loop,
                sasl_mech=options.get("sasl_mech"),
                plugin_config={"feature_mechanisms": mechanisms},
            )
            # Loopback tests speak plain TCP unless a test sets up TLS.
            client.enable_starttls = options.get("starttls", False)
            client.enable_direct_tls = False
            client.enable_plaintext = not options.get("starttls", False)
            if options.get("ca_file"):
                import ssl

                client.ssl_context = ssl.create_default_context(cafile=options["ca_file"])
            for plugin in plugins:
                client.register_plugin(plugin)
            put = lambda q: lambda stanza: reactor.callFromThread(q.put, stanza)  # noqa: E731
            # Every message once, with a body or not (slixmpp's own events
            # skip receipts and markers, and report errors twice).
            client.register_handler(Callback("every message", MatchXPath("{jabber:client}message"), put(self.messages)))
            client.add_event_handler("presence", put(self.presences))
            for name in ("session_start", "failed_auth", "disconnected", "stream_error", "roster_update"):
                client.add_event_handler(name, (lambda n: lambda *a: reactor.callFromThread(self.events.put, n))(name))
            return client

        self._built = self._loop.call(build)

    @inlineCallbacks
    def start(self, host: str, port: int, presence: bool = True, tlim: bool = False):
        """
        Connect, log in and bind; with C{presence}, fetch the roster and
        send initial presence (with C{tlim}, carrying seed 002's element).
        """
        self.xmpp = yield self._built
        yield self.call(lambda: self.xmpp.connect(host, port))
        event = yield self.expect_event("session_start", "failed_auth", "disconnected")
        if event != "session_start":
            raise AssertionError(f"login failed: {event}")
        if presence:
            yield self.call(lambda: self.xmpp.get_roster())
            if tlim:

                def tlim_presence():
                    presence = self.xmpp.make_presence()
                    presence.xml.append(tlim_element())
                    presence.send()

                yield self.call(tlim_presence)
            else:
                yield self.call(lambda: self.xmpp.send_presence())
        return self

    @inlineCallbacks
    def expect_event(self, *names: str):
        while True:
            event = yield self.events.get()
            if event in names:
                return event

    def call(self, fn: Callable[[], Any]) -> Deferred:
        return self._loop.call(fn)

    def send(self, to: str, body: str, mtype: str = "chat", id: str | None = None, extra: Callable | None = None) -> Deferred:
        def go():
            msg = self.xmpp.make_message(mto=to, mbody=body, mtype=mtype)
            if id is not None:
                msg["id"] = id
            if extra is not None:
                extra(msg)
            msg.send()
            return msg["id"]

        return self.call(go)

    def send_envelope(self, to: str, doc: dict, id: str | None = None, mtype: str = "chat") -> Deferred:
        """Seed 002's envelope in a message with the tlim element."""
        body = doc if isinstance(doc, str) else json.dumps(doc)
        return self.send(to, body, mtype=mtype, id=id, extra=lambda msg: msg.xml.append(tlim_element()))

    def send_raw(self, data: str) -> Deferred:
        return self.call(lambda: self.xmpp.send_raw(data))

    @inlineCallbacks
    def next_message(self, predicate: Callable[[Any], bool] = lambda m: True):
        """The next received message C{predicate} accepts (others are dropped)."""
        while True:
            msg = yield self.messages.get()
            if predicate(msg):
                return msg

    @inlineCallbacks
    def next_bodies(self, n: int):
        """The bodies of the next C{n} messages that have one."""
        bodies = []
        for _ in range(n):
            msg = yield self.next_message(lambda m: m["body"])
            bodies.append(msg["body"])
        return bodies

    def roster(self) -> Deferred:
        keys = ("name", "subscription", "groups")

        def read():
            roster = self.xmpp.client_roster
            return {str(jid): {k: roster[jid][k] for k in keys} for jid in roster}

        return self.call(read)

    @inlineCallbacks
    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        if hasattr(self, "xmpp"):
            try:
                yield self.call(lambda: self.xmpp.disconnect(wait=0.5))
            except Exception:
                pass
        self._loop.stop()


from twisted.internet.protocol import Protocol  # noqa: E402

HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    " xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
)


class RawXmpp(Protocol):
    """Bytes to and from the server, for what no well-behaved client sends."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred = Deferred()
        self._waiting: list[tuple[bytes, Deferred]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for item in list(self._waiting):
            if item[0] in self.received:
                self._waiting.remove(item)
                item[1].callback(self.received)

    def connectionLost(self, reason: Any = None) -> None:
        for _, d in self._waiting:
            d.errback(AssertionError(f"closed before it came; got {self.received[-500:]!r}"))
        self._waiting = []
        self.closed.callback(self.received)

    def send(self, data: bytes | str) -> None:
        self.transport.write(data.encode("utf-8") if isinstance(data, str) else data)

    def until(self, fragment: bytes) -> Deferred:
        """Fires with everything received once C{fragment} is among it."""
        if fragment in self.received:
            return _fired(self.received)
        d: Deferred = Deferred()
        self._waiting.append((fragment, d))
        return d


def _fired(value: Any) -> Deferred:
    d: Deferred = Deferred()
    d.callback(value)
    return d


def connect_raw(host: str, port: int) -> Deferred:
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    return connectProtocol(TCP4ClientEndpoint(reactor, host, port), RawXmpp())
