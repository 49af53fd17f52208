# -*- test-case-name: tests.test_hub,tests.test_cluster -*-
"""
The hub of one instance among several, linked by Redis pub/sub.

- Delivery: every event for a user is published on that user's channel
  (``<prefix>:u:<uid>``), and an instance subscribes to the channels of
  the users with sessions on it, so it receives only what concerns its own
  users: adding instances adds capacity.  Subscriptions are made again
  after every reconnect.
- Presence and location: ``<prefix>:p:<uid>`` maps ``<instance>/<resource>``
  to the session's channel and show state.  Each instance refreshes
  ``<prefix>:i:<instance>`` every heartbeat; when one stops (a crash, no
  goodbye), a survivor notices its key has expired, removes its sessions
  and tells their friends they went offline.
- Sessions of this instance are kept by a L{LocalHub} the bridge holds:
  it registers and delivers locally, the bridge adds what crosses
  instances and decides when a user is offline everywhere.
- Redis down: messages are committed and acknowledged as ever and local
  sessions get them live; publishing stops (nothing piles up) and
  ``/healthz`` says "degraded".  When the subscriber is back, each local
  session is asked to resync (fetch what it missed from the store).
"""

from __future__ import annotations

import json
import socket
from typing import Any, Callable, Iterable
from urllib.parse import urlparse

import txredisapi
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from imd.hub.counters import RedisCounters
from imd.hub.interfaces import RESYNC, Event, IHub, ISession
from imd.hub.local import LocalHub, tell_observers

log = Logger()
# Channels per SUBSCRIBE command when restoring subscriptions.
SUBSCRIBE_BATCH = 500
# Publications held while the publisher reconnects, to be sent in order
# when it is back; past this, a user who missed one is told to resync.
MAX_HELD = 10_000
# Publications per command: one reactor turn's, in order.
PUBLISH_BATCH = 1000
# Channels are not keys: each (channel, payload) pair goes in ARGV.
_PUBLISH_ALL = "for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end"


def parse_url(url: str) -> dict[str, Any]:
    parsed = urlparse(url)
    db = parsed.path.strip("/")
    return {
        "unix": parsed.path if parsed.scheme == "unix" else None,
        "host": parsed.hostname or "127.0.0.1",
        "port": parsed.port or 6379,
        "db": int(db) if db.isdigit() and parsed.scheme != "unix" else None,
        "password": parsed.password,
    }


class _Subscriber(txredisapi.SubscriberProtocol):
    """Only parses and dispatches; the bridge decides what to do."""

    @defer.inlineCallbacks
    def connectionMade(self):
        yield txredisapi.SubscriberProtocol.connectionMade(self)
        self.factory.bridge._subscriber_up(self)

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.factory.bridge._received(channel, message)

    def connectionLost(self, why: Any) -> None:
        self.factory.bridge._subscriber_down(self)
        txredisapi.SubscriberProtocol.connectionLost(self, why)


class _Publisher(txredisapi.RedisProtocol):
    """Tells the bridge when commands can (and cannot) be sent."""

    @defer.inlineCallbacks
    def connectionMade(self):
        yield txredisapi.RedisProtocol.connectionMade(self)
        self.factory.bridge._publisher_up()

    def connectionLost(self, why: Any) -> None:
        self.factory.bridge._publisher_down()
        txredisapi.RedisProtocol.connectionLost(self, why)


@implementer(IHub)
class RedisHub:
    def __init__(
        self,
        url: str,
        reactor: Any,
        prefix: str = "imd",
        heartbeat: float = 10,
        metrics: Any = None,
        local: LocalHub | None = None,
    ) -> None:
        self._local = local if local is not None else LocalHub(reactor)
        self.counters = RedisCounters(self, reactor)
        # The local hub's word on a user's last session is checked against
        # the other instances before it reaches these observers.
        self._local.presence_observers.append(self._local_presence)
        self.presence_observers: list[Callable[[str, bool], None]] = []
        self.url = url
        self.instance = ""
        self.prefix = prefix
        self.heartbeat = heartbeat
        self._reactor = reactor
        self._metrics = metrics
        self._subscriber: _Subscriber | None = None
        self._redis: Any = None
        self._publisher_ready = False
        self._held: list[tuple[str, dict]] = []
        self._outgoing: list[tuple[str, dict]] = []
        self._flush_call: Any = None
        # Whether Redis runs the publishing script (see _script_refused).
        self._scripts = True
        self._overflowed: set[str] = set()
        self._had_subscriber = False
        self._loops: list[LoopingCall] = []
        self._factories: list[Any] = []

    # -- keys -------------------------------------------------------------

    def _channel(self, uid: str) -> str:
        return f"{self.prefix}:u:{uid}"

    def _presence_key(self, uid: str) -> str:
        return f"{self.prefix}:p:{uid}"

    def _alive_key(self, instance: str) -> str:
        return f"{self.prefix}:i:{instance}"

    def _users_key(self, instance: str) -> str:
        return f"{self.prefix}:iu:{instance}"

    @property
    def _instances_key(self) -> str:
        return f"{self.prefix}:instances"

    @property
    def ttl(self) -> int:
        return max(3, int(self.heartbeat * 3))

    # -- life ---------------------------------------------------------------

    def start(self, instance: str) -> None:
        self.instance = instance
        self._local.start(instance)
        params = parse_url(self.url)
        if params["unix"]:
            endpoint = UNIXClientEndpoint(self._reactor, params["unix"], timeout=5)
        else:
            endpoint = TCP4ClientEndpoint(self._reactor, params["host"], params["port"], timeout=5)

        publisher = txredisapi.RedisFactory(
            self.url, params["db"], 1, isLazy=True, password=params["password"], replyTimeout=5
        )
        publisher.protocol = _Publisher
        publisher.bridge = self
        publisher.startConnecting(endpoint)
        self._redis = publisher.handler

        subscriber = txredisapi.SubscriberFactory(isLazy=True)
        subscriber.protocol = _Subscriber
        subscriber.password = params["password"]
        subscriber.bridge = self
        subscriber.startConnecting(endpoint)
        self._factories = [publisher, subscriber]

        for interval, fn in ((self.heartbeat, self._beat), (self.heartbeat, self._reap)):
            loop = LoopingCall(fn)
            loop.clock = self._reactor
            loop.start(interval, now=False).addErrback(lambda f: log.failure("hub timer", f))
            self._loops.append(loop)
        log.info("hub: instance {instance} linked through Redis at {url}", instance=self.instance, url=_safe(self.url))

    @defer.inlineCallbacks
    def stop(self):
        for loop in self._loops:
            if loop.running:
                loop.stop()
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush()
        if self._publisher_ready:
            try:
                # A clean goodbye: our sessions are gone at once, not after the TTL.
                yield self._forget_instance(self.instance)
            except Exception:
                log.failure("hub: removing this instance's sessions from Redis")
        for factory in self._factories:
            try:
                yield factory.disconnect()
            except Exception:
                pass
        yield self._local.stop()

    def redis_commands(self) -> Any:
        """The connection for commands, while it is up; else None."""
        return self._redis if self._publisher_ready else None

    @property
    def healthy(self) -> bool:
        return self._publisher_ready and self._subscriber is not None

    # -- connection state -------------------------------------------------

    def _publisher_up(self) -> None:
        self._publisher_ready = True
        log.info("hub: Redis publisher connected")
        self._beat()
        held, self._held = self._held, []
        overflowed, self._overflowed = self._overflowed, set()
        if held or overflowed:
            log.info("hub: publishing {n} events held while Redis was away; {m} users to resync",
                     n=len(held), m=len(overflowed))
        for uid, message in held:
            self._publish(uid, message)
        for uid in overflowed:
            # What they missed is in the store; their sessions fetch it.
            self._publish(uid, {"op": "resync"})
        # Sessions registered while Redis was away are written now.
        for uid in self._local.uids():
            for session in self._local.sessions(uid):
                self._write_presence(session)

    def _publisher_down(self) -> None:
        if self._publisher_ready:
            log.warn("hub: Redis publisher disconnected; delivery to other instances paused")
        self._publisher_ready = False

    def _subscriber_up(self, subscriber: _Subscriber) -> None:
        self._subscriber = subscriber
        channels = [self._channel(uid) for uid in self._local.uids()]
        for i in range(0, len(channels), SUBSCRIBE_BATCH):
            subscriber.subscribe(channels[i : i + SUBSCRIBE_BATCH]).addErrback(
                lambda f: log.failure("hub: restoring subscriptions", f)
            )
        log.info("hub: Redis subscriber connected; {n} user channels subscribed", n=len(channels))
        if self._had_subscriber:
            # What others published while we could not hear is in the store.
            self._local.deliver(self._local.uids(), Event(RESYNC, {}))
        self._had_subscriber = True

    def _subscriber_down(self, subscriber: _Subscriber) -> None:
        if self._subscriber is subscriber:
            self._subscriber = None
            log.warn("hub: Redis subscriber disconnected; events from other instances paused")

    # -- sessions -----------------------------------------------------------

    def register(self, session: ISession) -> None:
        first = not self._local.is_online(session.uid)
        self._local.register(session)
        if first and self._subscriber is not None:
            self._subscriber.subscribe(self._channel(session.uid)).addErrback(
                lambda f: log.failure("hub: subscribing {uid}", f, uid=session.uid)
            )
        self._write_presence(session)
        # Another instance may hold a session with this resource: it goes.
        self._publish(session.uid, {"op": "kick", "res": session.resource})

    def unregister(self, session: ISession) -> None:
        here = self._local.sessions(session.uid)
        known = any(s is session for s in here)
        last = known and len(here) == 1
        self._local.unregister(session)
        if not known:
            return
        if last and self._subscriber is not None:
            self._subscriber.unsubscribe(self._channel(session.uid)).addErrback(lambda f: None)
        if self._publisher_ready:
            d = self._redis.hdel(self._presence_key(session.uid), self._field(session))
            d.addErrback(lambda f: log.failure("hub: removing presence", f))

    def sessions(self, uid: str) -> list[ISession]:
        return self._local.sessions(uid)

    def is_online(self, uid: str) -> bool:
        """Whether C{uid} has a live session on this instance."""
        return self._local.is_online(uid)

    def uids(self) -> list[str]:
        return self._local.uids()

    def session_counts(self) -> dict[str, int]:
        return self._local.session_counts()

    def claim_once(self, key: str, ttl: int) -> "defer.Deferred[bool]":
        """
        C{SET NX EX} in Redis: True only for the first instance to claim
        C{key}.  While Redis is away every claim is granted, and each
        instance's own memory still refuses what it has seen itself.
        """
        if not self._publisher_ready:
            return defer.succeed(True)
        d = self._redis.set(f"{self.prefix}:once:{key}", self.instance, expire=ttl, only_if_not_exists=True)
        d.addCallback(bool)

        def unreachable(failure) -> bool:
            log.failure("hub: claiming {key}", failure, key=key)
            return True

        return d.addErrback(unreachable)

    def set_show(self, session: ISession, show: str | None) -> None:
        self._local.set_show(session, show)
        self._write_presence(session)

    def _field(self, session: ISession) -> str:
        return f"{self.instance}/{session.resource}"

    def _write_presence(self, session: ISession) -> None:
        if not self._publisher_ready:
            return
        key = self._presence_key(session.uid)
        value = json.dumps({"channel": session.channel, "show": getattr(session, "show", None)})
        d = self._redis.hset(key, self._field(session), value)
        d.addCallback(lambda _: self._redis.expire(key, self.ttl))
        d.addCallback(lambda _: self._redis.sadd(self._users_key(self.instance), session.uid))
        d.addErrback(lambda f: log.failure("hub: writing presence", f))

    def _notify(self, uid: str, online: bool) -> None:
        tell_observers(self.presence_observers, uid, online)

    def _local_presence(self, uid: str, online: bool) -> None:
        if online or not self._publisher_ready:
            self._notify(uid, online)
            return
        # The last session here is gone; the user is offline only if no
        # other instance holds one.
        d = self.remote_sessions(uid)

        def unknown(failure) -> list:
            # Cannot tell: better to say offline than to stay silent.
            log.failure("hub: presence of {uid}", failure, uid=uid)
            return []

        def tell(remote: list) -> None:
            if not remote:
                self._notify(uid, False)

        d.addErrback(unknown)
        d.addCallback(tell)

    # -- presence across instances ----------------------------------------

    @defer.inlineCallbacks
    def remote_sessions(self, uid: str):
        """(resource, show) of C{uid}'s live sessions on other instances."""
        if not self._publisher_ready:
            return []
        fields = yield self._redis.hgetall(self._presence_key(uid))
        alive = yield self._alive_instances({f.split("/", 1)[0] for f in fields})
        sessions = []
        for field, value in fields.items():
            instance, _, resource = field.partition("/")
            if instance == self.instance or instance not in alive:
                continue
            try:
                show = json.loads(value).get("show")
            except ValueError:
                continue
            sessions.append((resource, show))
        return sessions

    @defer.inlineCallbacks
    def _alive_instances(self, instances: set[str]):
        alive = set()
        for instance in instances:
            if instance == self.instance:
                alive.add(instance)
            elif (yield self._redis.exists(self._alive_key(instance))):
                alive.add(instance)
        return alive

    @defer.inlineCallbacks
    def presence(self, uids: Iterable[str]):
        """
        (uid, resource, show) of every session with a show state of the
        users C{uids}, on every instance.
        """
        result = []
        for uid in uids:
            result.extend((yield self._local.presence([uid])))
            try:
                remote = yield self.remote_sessions(uid)
            except Exception:
                log.failure("hub: presence of {uid}", uid=uid)
                remote = []
            result.extend((uid, resource, show) for resource, show in remote if show)
        return result

    # -- delivery -----------------------------------------------------------

    def deliver(
        self,
        uids: Iterable[str],
        event: Event,
        exclude: ISession | None = None,
        resource: str | None = None,
    ) -> None:
        uids = list(dict.fromkeys(uids))
        self._local.deliver(uids, event, exclude=exclude, resource=resource)
        message = {"op": "event", "k": event.kind, "d": event.data}
        if resource is not None:
            message["res"] = resource
        for uid in uids:
            self._publish(uid, message)

    def _publish(self, uid: str, message: dict) -> None:
        if not self._publisher_ready:
            self._hold(uid, message)
            return
        self._outgoing.append((uid, message))
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)

    def _hold(self, uid: str, message: dict) -> None:
        # An event is held, not dropped: the other instances would never
        # know they missed it (their subscribers may never have gone
        # away).  A kick is not: sent late, it could hit a session that
        # logged in after it.
        if message.get("op") != "event":
            pass
        elif len(self._held) < MAX_HELD:
            self._held.append((uid, message))
        else:
            self._overflowed.add(uid)
        if self._metrics is not None:
            self._metrics.redis_skipped.inc()

    def _flush(self) -> None:
        """
        What this reactor turn published, in order, as one command (a
        script of PUBLISHes): one each, through txredisapi, cost a
        Deferred, a reply timer and a trip through its connection pool,
        36 % of the reactor's time at p2p max (docs/benchmarks.rst, round 5).
        """
        self._flush_call = None
        outgoing, self._outgoing = self._outgoing, []
        if not self._publisher_ready:
            for uid, message in outgoing:
                self._hold(uid, message)
            return
        for i in range(0, len(outgoing), PUBLISH_BATCH):
            chunk = outgoing[i : i + PUBLISH_BATCH]
            # An event for many users (a group's message) is one dict: encoded once.
            encoded: dict[int, str] = {}
            args: list[str] = []
            for uid, message in chunk:
                payload = encoded.get(id(message))
                if payload is None:
                    message["o"] = self.instance
                    payload = encoded[id(message)] = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
                args += (self._channel(uid), payload)
            if self._scripts:
                d = self._redis.eval(_PUBLISH_ALL, [], args)
                d.addErrback(self._script_refused, args)
            else:
                d = self._publish_each(args)
            d.addErrback(lambda f, n=len(chunk): log.failure("hub: publishing {n} events", f, n=n))
        if self._metrics is not None:
            self._metrics.redis_published.inc(len(outgoing))

    def _script_refused(self, failure: Any, args: list[str]) -> Any:
        """
        A Redis that runs no scripts (some managed services refuse them)
        refuses the script before it publishes anything: these events,
        and every later one, go one command each.
        """
        failure.trap(txredisapi.ResponseError)
        if self._scripts:
            self._scripts = False
            log.warn("hub: Redis refused the publishing script ({error}); publishing one command per event",
                     error=failure.getErrorMessage())
        return self._publish_each(args)

    def _publish_each(self, args: list[str]) -> defer.Deferred:
        return defer.gatherResults(
            [self._redis.publish(args[i], args[i + 1]) for i in range(0, len(args), 2)], consumeErrors=True
        )

    def _received(self, channel: Any, payload: Any) -> None:
        try:
            channel = channel.decode() if isinstance(channel, bytes) else channel
            uid = channel[len(self.prefix) + 3 :]
            message = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            log.warn("hub: unreadable message on {channel}", channel=channel)
            return
        if message.get("o") == self.instance:
            # Our own publication to a user we also hold: delivered already.
            return
        if self._metrics is not None:
            self._metrics.redis_received.inc()
        op = message.get("op")
        if op == "event":
            self._local.deliver([uid], Event(message.get("k", ""), message.get("d") or {}), resource=message.get("res"))
        elif op == "resync":
            self._local.deliver([uid], Event(RESYNC, {}))
        elif op == "kick":
            for session in self._local.sessions(uid):
                if session.resource == message.get("res"):
                    self._local.unregister(session)
                    session.kick("logged in elsewhere")

    # -- heartbeat and the reaper -------------------------------------------

    @defer.inlineCallbacks
    def _beat(self):
        if not self._publisher_ready:
            return
        try:
            yield self._redis.set(self._alive_key(self.instance), "1", expire=self.ttl)
            yield self._redis.sadd(self._instances_key, self.instance)
            for uid in self._local.uids():
                yield self._redis.expire(self._presence_key(uid), self.ttl)
        except Exception:
            log.failure("hub: heartbeat")

    @defer.inlineCallbacks
    def _reap(self):
        """Remove the sessions of instances whose heartbeat stopped."""
        if not self._publisher_ready:
            return
        try:
            instances = yield self._redis.smembers(self._instances_key)
            for instance in instances:
                if instance == self.instance:
                    continue
                if (yield self._redis.exists(self._alive_key(instance))):
                    continue
                # One survivor reaps; the others see the lock and move on.
                mine = yield self._redis.set(f"{self.prefix}:reap:{instance}", self.instance, expire=60, only_if_not_exists=True)
                if not mine:
                    continue
                log.warn("hub: instance {dead} stopped beating; removing its sessions", dead=instance)
                gone = yield self._forget_instance(instance)
                for uid in gone:
                    if not self._local.is_online(uid):
                        self._notify(uid, False)
        except Exception:
            log.failure("hub: reaping dead instances")

    @defer.inlineCallbacks
    def _forget_instance(self, instance: str):
        """Drop C{instance}'s sessions; the users left with none anywhere."""
        users = yield self._redis.smembers(self._users_key(instance))
        offline = []
        for uid in users:
            key = self._presence_key(uid)
            fields = yield self._redis.hkeys(key)
            dead = [f for f in fields if f.startswith(instance + "/")]
            if dead:
                yield self._redis.hdel(key, dead)
            if len(dead) == len(fields):
                offline.append(uid)
        yield self._redis.delete(self._users_key(instance))
        yield self._redis.srem(self._instances_key, instance)
        return offline


def _safe(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def default_instance_id(port: int | None) -> str:
    host = socket.gethostname()
    return f"{host}:{port}" if port else host
