"""
The in-process hub: who is online, and who gets an event; and the Redis
bridge that holds one, without Redis (its delegation) and with it.
"""

from __future__ import annotations

import json
import secrets

import txredisapi
from twisted.internet import reactor
from twisted.internet.defer import fail, inlineCallbacks, succeed
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from imd.hub.interfaces import RESYNC, Event, IHub, ISession
from imd.hub.local import LocalHub
from imd.hub import redis as redis_hub
from imd.hub.redis import RedisHub
from imd.metrics import Metrics
from tests.support import REDIS_URL


class DeliveryBroke(Exception):
    pass


@implementer(ISession)
class FakeSession:
    """
    Records what the hub gives it.  With C{hub}, a kick unregisters the
    session on the spot, as a real connection does when it closes inside
    kick; without, it stays registered-looking until someone unregisters it.
    """

    def __init__(self, uid, resource="phone", channel="longconn", hub=None):
        self.uid = uid
        self.resource = resource
        self.channel = channel
        self.show = "online"
        self.events = []
        self.kicks = []
        self._hub = hub

    def deliver(self, event):
        self.events.append(event)

    def kick(self, reason):
        self.kicks.append(reason)
        if self._hub is not None:
            self._hub.unregister(self)


class BrokenSession(FakeSession):
    def deliver(self, event):
        raise DeliveryBroke("connection went away mid-write")


class LocalHubTests(unittest.TestCase):
    def setUp(self):
        self.hub = LocalHub()
        self.presence = []
        self.hub.presence_observers.append(lambda uid, online: self.presence.append((uid, online)))

    def test_interfaces(self):
        self.assertTrue(verifyObject(IHub, self.hub))
        self.assertTrue(verifyObject(ISession, FakeSession("alice")))

    def test_start_and_stop(self):
        # Nothing to link: both return at once, and sessions stay as they are.
        phone = FakeSession("alice")
        self.hub.register(phone)
        self.assertIsNone(self.hub.start("node0"))
        self.assertTrue(self.hub.healthy)
        self.assertIsNone(self.hub.stop())
        self.assertTrue(self.hub.healthy)
        self.assertEqual(self.hub.sessions("alice"), [phone])
        self.assertEqual(self.presence, [("alice", True)])

    def test_uids(self):
        self.assertEqual(self.hub.uids(), [])
        phone = FakeSession("alice", "phone")
        self.hub.register(phone)
        self.hub.register(FakeSession("alice", "desk"))
        self.hub.register(FakeSession("bob"))
        self.assertEqual(sorted(self.hub.uids()), ["alice", "bob"])
        self.hub.uids().clear()
        self.hub.unregister(phone)
        self.assertEqual(sorted(self.hub.uids()), ["alice", "bob"])

    def test_register(self):
        self.assertFalse(self.hub.is_online("alice"))
        self.assertEqual(self.hub.sessions("alice"), [])
        phone = FakeSession("alice", "phone")
        desk = FakeSession("alice", "desk", channel="xmpp")
        self.hub.register(phone)
        self.hub.register(desk)
        self.assertTrue(self.hub.is_online("alice"))
        self.assertFalse(self.hub.is_online("bob"))
        self.assertEqual(set(self.hub.sessions("alice")), {phone, desk})
        self.assertEqual(self.hub.sessions("bob"), [])

    def test_sessions_is_a_copy(self):
        # Callers iterate it while sessions come and go.
        phone = FakeSession("alice")
        self.hub.register(phone)
        self.hub.sessions("alice").clear()
        self.assertEqual(self.hub.sessions("alice"), [phone])

    def test_deliver_to_every_session_of_every_uid(self):
        a1 = FakeSession("alice", "phone")
        a2 = FakeSession("alice", "desk")
        b1 = FakeSession("bob", "phone")
        c1 = FakeSession("carol", "phone")
        for s in (a1, a2, b1, c1):
            self.hub.register(s)
        event = Event("message", {"body": "你好"})
        self.hub.deliver(["alice", "bob", "nobody"], event)
        self.assertEqual(a1.events, [event])
        self.assertEqual(a2.events, [event])
        self.assertEqual(b1.events, [event])
        self.assertEqual(c1.events, [])

    def test_deliver_exclude(self):
        # The sender's own session already has the message; its other
        # sessions get a copy.
        a1 = FakeSession("alice", "phone")
        a2 = FakeSession("alice", "desk")
        b1 = FakeSession("bob", "phone")
        for s in (a1, a2, b1):
            self.hub.register(s)
        event = Event("message")
        self.hub.deliver(["alice", "bob"], event, exclude=a1)
        self.assertEqual(a1.events, [])
        self.assertEqual(a2.events, [event])
        self.assertEqual(b1.events, [event])

    def test_deliver_once_per_session(self):
        # A message to oneself names the same uid as sender and recipient.
        a1 = FakeSession("alice")
        self.hub.register(a1)
        event = Event("message")
        self.hub.deliver(["alice", "alice"], event)
        self.assertEqual(a1.events, [event])

    def test_deliver_accepts_any_iterable(self):
        a1 = FakeSession("alice")
        b1 = FakeSession("bob")
        self.hub.register(a1)
        self.hub.register(b1)
        event = Event("message")
        self.hub.deliver((uid for uid in ["alice", "bob"]), event)
        self.assertEqual((a1.events, b1.events), ([event], [event]))

    def test_same_resource_kicks_old(self):
        old = FakeSession("alice", "phone")
        new = FakeSession("alice", "phone")
        self.hub.register(old)
        self.hub.register(new)
        self.assertEqual(old.kicks, ["logged in elsewhere"])
        self.assertEqual(new.kicks, [])
        self.assertEqual(self.hub.sessions("alice"), [new])
        self.assertEqual(self.presence, [("alice", True)])
        self.hub.deliver(["alice"], Event("message"))
        self.assertEqual(len(new.events), 1)
        self.assertEqual(old.events, [])

    def test_kicked_session_unregistering_inside_kick(self):
        # A real connection closes and unregisters inside kick(); that must
        # neither remove the new session nor announce the user offline.
        old = FakeSession("alice", "phone", hub=self.hub)
        new = FakeSession("alice", "phone", hub=self.hub)
        self.hub.register(old)
        self.hub.register(new)
        self.assertEqual(old.kicks, ["logged in elsewhere"])
        self.assertEqual(self.hub.sessions("alice"), [new])
        self.assertTrue(self.hub.is_online("alice"))
        self.assertEqual(self.presence, [("alice", True)])
        self.assertEqual(self.hub.session_counts(), {"longconn": 1})

    def test_other_resource_does_not_kick(self):
        phone = FakeSession("alice", "phone")
        desk = FakeSession("alice", "desk")
        other_user = FakeSession("bob", "phone")
        for s in (phone, desk, other_user):
            self.hub.register(s)
        self.assertEqual((phone.kicks, desk.kicks, other_user.kicks), ([], [], []))

    def test_register_twice_is_harmless(self):
        phone = FakeSession("alice")
        self.hub.register(phone)
        self.hub.register(phone)
        self.assertEqual(phone.kicks, [])
        self.assertEqual(self.hub.sessions("alice"), [phone])
        self.assertEqual(self.hub.session_counts(), {"longconn": 1})
        self.hub.unregister(phone)
        self.assertEqual(self.hub.session_counts(), {})
        self.assertEqual(self.presence, [("alice", True), ("alice", False)])

    def test_presence_first_and_last(self):
        phone = FakeSession("alice", "phone")
        desk = FakeSession("alice", "desk")
        self.hub.register(phone)
        self.assertEqual(self.presence, [("alice", True)])
        self.hub.register(desk)
        self.hub.unregister(phone)
        self.assertEqual(self.presence, [("alice", True)])
        self.hub.unregister(desk)
        self.assertEqual(self.presence, [("alice", True), ("alice", False)])
        self.assertFalse(self.hub.is_online("alice"))
        self.hub.register(phone)
        self.assertEqual(self.presence, [("alice", True), ("alice", False), ("alice", True)])

    def test_presence_per_user(self):
        self.hub.register(FakeSession("alice"))
        self.hub.register(FakeSession("bob"))
        self.assertEqual(self.presence, [("alice", True), ("bob", True)])

    def test_unregister_idempotent(self):
        phone = FakeSession("alice")
        self.hub.register(phone)
        self.hub.unregister(phone)
        self.hub.unregister(phone)
        self.hub.unregister(FakeSession("never-registered"))
        self.assertEqual(self.presence, [("alice", True), ("alice", False)])
        self.assertEqual(self.hub.session_counts(), {})

    def test_unregister_replaced_session_ignored(self):
        old = FakeSession("alice", "phone")
        new = FakeSession("alice", "phone")
        self.hub.register(old)
        self.hub.register(new)
        # The kicked connection reports its close later.
        self.hub.unregister(old)
        self.assertEqual(self.hub.sessions("alice"), [new])
        self.assertTrue(self.hub.is_online("alice"))
        self.assertEqual(self.presence, [("alice", True)])
        self.assertEqual(self.hub.session_counts(), {"longconn": 1})

    def test_broken_session_does_not_stop_delivery(self):
        first = FakeSession("alice", "a")
        broken = BrokenSession("alice", "b")
        last = FakeSession("alice", "c")
        bob = FakeSession("bob")
        for s in (first, broken, last, bob):
            self.hub.register(s)
        event = Event("message")
        self.hub.deliver(["alice", "bob"], event)
        self.assertEqual(first.events, [event])
        self.assertEqual(last.events, [event])
        self.assertEqual(bob.events, [event])
        self.assertEqual(len(self.flushLoggedErrors(DeliveryBroke)), 1)

    def test_session_leaving_during_delivery(self):
        # A write error may close (and unregister) a connection while the
        # hub is still walking the user's sessions.
        hub = self.hub

        class Leaving(FakeSession):
            def deliver(self, event):
                super().deliver(event)
                hub.unregister(self)

        leaving = Leaving("alice", "a")
        staying = FakeSession("alice", "b")
        hub.register(leaving)
        hub.register(staying)
        hub.deliver(["alice"], Event("message"))
        self.assertEqual(len(leaving.events), 1)
        self.assertEqual(len(staying.events), 1)
        self.assertEqual(hub.sessions("alice"), [staying])

    def test_raising_presence_observer(self):
        seen = []

        def broken(uid, online):
            raise DeliveryBroke("observer bug")

        self.hub.presence_observers.insert(0, broken)
        self.hub.presence_observers.append(lambda uid, online: seen.append((uid, online)))
        phone = FakeSession("alice")
        self.hub.register(phone)
        self.hub.unregister(phone)
        self.assertEqual(seen, [("alice", True), ("alice", False)])
        self.assertEqual(self.presence, [("alice", True), ("alice", False)])
        self.assertEqual(len(self.flushLoggedErrors(DeliveryBroke)), 2)

    def test_raising_kick(self):
        # A kick that fails must still leave the new session in charge.
        class BadKick(FakeSession):
            def kick(self, reason):
                raise DeliveryBroke("transport already gone")

        old = BadKick("alice", "phone")
        new = FakeSession("alice", "phone")
        self.hub.register(old)
        self.hub.register(new)
        self.assertEqual(self.hub.sessions("alice"), [new])
        self.assertEqual(self.hub.session_counts(), {"longconn": 1})
        self.assertEqual(self.presence, [("alice", True)])
        self.assertEqual(len(self.flushLoggedErrors(DeliveryBroke)), 1)

    def test_session_counts(self):
        self.assertEqual(self.hub.session_counts(), {})
        a = FakeSession("alice", "phone", channel="longconn")
        b = FakeSession("alice", "desk", channel="xmpp")
        c = FakeSession("bob", "phone", channel="xmpp")
        d = FakeSession("carol", "phone", channel="socket")
        for s in (a, b, c, d):
            self.hub.register(s)
        self.assertEqual(self.hub.session_counts(), {"longconn": 1, "xmpp": 2, "socket": 1})
        self.hub.unregister(b)
        self.hub.unregister(d)
        self.assertEqual(self.hub.session_counts(), {"longconn": 1, "xmpp": 1})

    def test_session_counts_when_replaced_across_channels(self):
        # The same device reconnecting over another channel.
        old = FakeSession("alice", "phone", channel="longconn")
        new = FakeSession("alice", "phone", channel="socket")
        self.hub.register(old)
        self.hub.register(new)
        self.assertEqual(self.hub.session_counts(), {"socket": 1})


class FakeSubscriber:
    """Records the channels the bridge subscribes to and leaves."""

    def __init__(self):
        self.subscribed = []
        self.unsubscribed = []

    def subscribe(self, channels):
        self.subscribed.append(channels)
        return succeed(None)

    def unsubscribe(self, channels):
        self.unsubscribed.append(channels)
        return succeed(None)


class FakePublisher:
    """Records what the bridge publishes; answers every other command."""

    def __init__(self):
        self.published = []
        self.commands = 0

    def eval(self, script, keys, args):
        # The bridge's only script publishes each payload of ARGV on the channel before it.
        self.commands += 1
        self.published += [(channel, json.loads(payload)) for channel, payload in zip(args[::2], args[1::2])]
        return succeed(None)

    def __getattr__(self, name):
        return lambda *args, **kwargs: succeed(None)


class ScriptlessPublisher(FakePublisher):
    """A Redis that refuses scripts, as some managed services do."""

    def eval(self, script, keys, args):
        self.commands += 1
        return fail(txredisapi.ResponseError("NOPERM this user has no permissions to run the 'evalsha' command"))

    def publish(self, channel, payload):
        self.published.append((channel, json.loads(payload)))
        return succeed(1)


class RedisHubDelegationTests(unittest.TestCase):
    """
    The bridge, never started (so Redis is never reached), over a local hub
    the test can look into.
    """

    def setUp(self):
        self.local = LocalHub()
        self.metrics = Metrics(lambda: {})
        self.clock = MemoryReactorClock()
        self.hub = RedisHub("redis://127.0.0.1:1/0", self.clock, prefix="p", metrics=self.metrics, local=self.local)
        self.presence = []
        self.hub.presence_observers.append(lambda uid, online: self.presence.append((uid, online)))

    def test_interfaces(self):
        self.assertTrue(verifyObject(IHub, self.hub))
        self.assertFalse(self.hub.healthy)

    def test_events_wait_for_the_publisher(self):
        # Published while the publisher reconnects: held and sent, in
        # order, once it is back; a kick is not (late, it could hit a
        # newer session).
        self.hub.instance = "a"
        for n in range(3):
            self.hub.deliver(["bob", "carol"], Event("message", {"n": n}))
        self.hub.register(FakeSession("alice", "phone"))
        self.hub._redis = publisher = FakePublisher()
        self.hub._publisher_up()
        self.clock.advance(0)
        self.assertEqual(
            [(channel, m["d"]["n"]) for channel, m in publisher.published],
            [("p:u:bob", 0), ("p:u:carol", 0), ("p:u:bob", 1), ("p:u:carol", 1), ("p:u:bob", 2), ("p:u:carol", 2)],
        )
        self.assertEqual({m["op"] for _, m in publisher.published}, {"event"})

    def test_a_turns_publications_are_one_command(self):
        self.hub.instance = "a"
        self.hub._redis = publisher = FakePublisher()
        self.hub._publisher_ready = True
        self.hub.deliver(["bob", "carol"], Event("message", {"n": 1}))
        self.hub.deliver(["bob"], Event("message", {"n": 2}))
        self.assertEqual(publisher.published, [])
        self.clock.advance(0)
        self.assertEqual(publisher.commands, 1)
        self.assertEqual(
            [(channel, m["d"]["n"], m["o"]) for channel, m in publisher.published],
            [("p:u:bob", 1, "a"), ("p:u:carol", 1, "a"), ("p:u:bob", 2, "a")],
        )
        self.assertEqual(self.metrics.redis_published._value.get(), 3)

    def test_a_publisher_lost_before_the_turn_ends_holds_its_events(self):
        self.hub.instance = "a"
        self.hub._redis = publisher = FakePublisher()
        self.hub._publisher_ready = True
        self.hub.deliver(["bob"], Event("message", {"n": 1}))
        self.hub._publisher_down()
        self.clock.advance(0)
        self.assertEqual(publisher.published, [])
        self.hub._publisher_up()
        self.clock.advance(0)
        self.assertEqual([(channel, m["d"]["n"]) for channel, m in publisher.published], [("p:u:bob", 1)])

    def test_a_redis_without_scripts_gets_a_command_per_event(self):
        self.hub.instance = "a"
        self.hub._redis = publisher = ScriptlessPublisher()
        self.hub._publisher_ready = True
        for n in (1, 2):
            self.hub.deliver(["bob", "carol"], Event("message", {"n": n}))
            self.clock.advance(0)
        self.assertEqual(publisher.commands, 1)
        self.assertEqual(
            [(channel, m["d"]["n"]) for channel, m in publisher.published],
            [("p:u:bob", 1), ("p:u:carol", 1), ("p:u:bob", 2), ("p:u:carol", 2)],
        )
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_past_what_is_held_users_resync(self):
        self.patch(redis_hub, "MAX_HELD", 2)
        self.hub.instance = "a"
        for uid in ("bob", "carol", "dave", "dave", "erin"):
            self.hub.deliver([uid], Event("message", {"to": uid}))
        self.hub._redis = publisher = FakePublisher()
        self.hub._publisher_up()
        self.clock.advance(0)
        sent = [(channel, m["op"]) for channel, m in publisher.published]
        self.assertEqual(sent[:2], [("p:u:bob", "event"), ("p:u:carol", "event")])
        self.assertEqual(sorted(sent[2:]), [("p:u:dave", "resync"), ("p:u:erin", "resync")])

    def test_a_resync_from_another_instance(self):
        bob = FakeSession("bob")
        self.hub.register(bob)
        self.hub._received(b"p:u:bob", json.dumps({"op": "resync", "o": "b"}))
        self.assertEqual([e.kind for e in bob.events], [RESYNC])

    def test_sessions_are_the_local_hubs(self):
        phone = FakeSession("alice", "phone")
        desk = FakeSession("alice", "desk", channel="socket")
        self.hub.register(phone)
        self.hub.register(desk)
        self.assertEqual(set(self.local.sessions("alice")), {phone, desk})
        self.assertEqual(set(self.hub.sessions("alice")), {phone, desk})
        self.assertTrue(self.hub.is_online("alice"))
        self.assertEqual(self.hub.session_counts(), {"longconn": 1, "socket": 1})
        self.hub.unregister(phone)
        self.assertEqual(self.local.sessions("alice"), [desk])
        self.assertEqual(self.hub.session_counts(), {"socket": 1})

    def test_presence_observers_are_the_bridges(self):
        # Presence listens to the bridge, which alone may say a user is
        # offline everywhere; the local hub tells only the bridge.
        self.assertEqual(len(self.local.presence_observers), 1)
        phone = FakeSession("alice")
        self.hub.register(phone)
        self.assertEqual(self.presence, [("alice", True)])
        # Redis unreachable: the last session here is the last one known.
        self.hub.unregister(phone)
        self.assertEqual(self.presence, [("alice", True), ("alice", False)])

    def test_deliver_locally_while_redis_is_away(self):
        a1 = FakeSession("alice", "phone")
        a2 = FakeSession("alice", "desk")
        b1 = FakeSession("bob")
        for s in (a1, a2, b1):
            self.hub.register(s)
        skipped = self.metrics.redis_skipped._value.get()
        event = Event("message", {"body": "hi"})
        self.hub.deliver(["alice", "bob", "alice"], event, exclude=a1)
        self.assertEqual((a1.events, a2.events, b1.events), ([], [event], [event]))
        self.hub.deliver(["alice"], event, resource="phone")
        self.assertEqual((a1.events, a2.events), ([event], [event]))
        # One publication a user: alice and bob, then alice.
        self.assertEqual(self.metrics.redis_skipped._value.get() - skipped, 3)

    @inlineCallbacks
    def test_show_and_presence(self):
        phone = FakeSession("alice", "phone")
        desk = FakeSession("alice", "desk")
        self.hub.register(phone)
        self.hub.register(desk)
        self.hub.set_show(phone, "dnd")
        self.hub.set_show(desk, None)
        self.assertEqual(phone.show, "dnd")
        seen = yield self.hub.presence(["alice", "bob"])
        self.assertEqual(seen, [("alice", "phone", "dnd")])

    def test_subscriptions_and_resync_follow_the_local_hub(self):
        a1 = FakeSession("alice", "phone")
        b1 = FakeSession("bob")
        self.hub.register(a1)
        self.hub.register(b1)
        subscriber = FakeSubscriber()
        self.hub._subscriber_up(subscriber)
        self.assertEqual([sorted(c) for c in subscriber.subscribed], [["p:u:alice", "p:u:bob"]])
        self.assertEqual((a1.events, b1.events), ([], []))
        # A second session of alice needs no new subscription; carol does.
        self.hub.register(FakeSession("alice", "desk"))
        carol = FakeSession("carol")
        self.hub.register(carol)
        self.assertEqual(subscriber.subscribed[1:], ["p:u:carol"])
        self.hub.unregister(carol)
        self.assertEqual(subscriber.unsubscribed, ["p:u:carol"])
        self.hub._subscriber_down(subscriber)
        self.hub._subscriber_up(subscriber)
        self.assertEqual((a1.events, b1.events), ([Event(RESYNC, {})], [Event(RESYNC, {})]))
        self.assertEqual(carol.events, [])

    def test_event_from_another_instance(self):
        phone = FakeSession("alice", "phone")
        desk = FakeSession("alice", "desk")
        self.hub.register(phone)
        self.hub.register(desk)
        self.hub._received(b"p:u:alice", json.dumps({"op": "event", "k": "message", "d": {"body": "hi"}, "res": "desk", "o": "other"}))
        self.assertEqual((phone.events, desk.events), ([], [Event("message", {"body": "hi"})]))
        self.assertEqual(self.metrics.redis_received._value.get(), 1)

    def test_kick_from_another_instance(self):
        phone = FakeSession("alice", "phone", hub=self.hub)
        desk = FakeSession("alice", "desk", hub=self.hub)
        self.hub.register(phone)
        self.hub.register(desk)
        self.hub._received("p:u:alice", json.dumps({"op": "kick", "res": "phone", "o": "other"}))
        self.assertEqual((phone.kicks, desk.kicks), (["logged in elsewhere"], []))
        self.assertEqual(self.local.sessions("alice"), [desk])
        self.hub._received("p:u:alice", json.dumps({"op": "kick", "res": "desk", "o": "other"}))
        self.assertEqual(self.local.sessions("alice"), [])
        self.assertEqual(self.presence, [("alice", True), ("alice", False)])


def wait(seconds):
    return deferLater(reactor, seconds, lambda: None)


class RedisHubTests(unittest.TestCase):
    """Two bridges on a real Redis, under a key prefix of their own."""

    if REDIS_URL is None:
        skip = "IMD_TEST_REDIS_URL is not set"

    @inlineCallbacks
    def bridges(self, n=2):
        prefix = f"imdtest{secrets.token_hex(4)}"
        hubs = []
        for i in range(n):
            hub = RedisHub(REDIS_URL, reactor, prefix=prefix, heartbeat=1)
            hub.start(f"hub{i}")
            self.addCleanup(hub.stop)
            hubs.append(hub)
        yield self.until(lambda: succeed(all(hub.healthy for hub in hubs)))
        return hubs

    @inlineCallbacks
    def until(self, check, timeout=10.0, step=0.05):
        waited = 0.0
        while not (yield check()):
            if waited >= timeout:
                self.fail("condition not met in time")
            yield wait(step)
            waited += step

    def subscribed(self, hub, uid):
        d = hub._redis.execute_command("PUBSUB", "NUMSUB", hub._channel(uid))
        return d.addCallback(lambda reply: int(reply[1]) > 0)

    @inlineCallbacks
    def test_counters_shared_by_instances(self):
        a, b = yield self.bridges()
        self.assertEqual((yield a.counters.incr("k", 60)), 1)
        self.assertEqual((yield b.counters.incr("k", 60)), 2)
        self.assertEqual((yield a.counters.count("k")), 2)
        yield b.counters.lock("lock:k", 5)
        wait = yield a.counters.locked(["lock:none", "lock:k"])
        self.assertTrue(4 <= wait <= 5, wait)
        yield a.counters.forget(["k", "lock:k"])
        self.assertEqual((yield b.counters.count("k")), 0)
        self.assertEqual((yield b.counters.locked(["lock:k"])), 0)
        # Redis away: this instance counts on in memory.
        yield a.stop()
        self.assertEqual((yield a.counters.incr("k", 60)), 1)
        self.assertEqual((yield a.counters.incr("k", 60)), 2)

    @inlineCallbacks
    def test_linked(self):
        a, b = yield self.bridges()
        self.assertTrue(verifyObject(IHub, a))
        alice = FakeSession("alice", "phone")
        a.register(alice)
        yield self.until(lambda: self.subscribed(a, "alice"))
        b.deliver(["alice"], Event("message", {"body": "across"}))
        yield self.until(lambda: succeed(alice.events))
        self.assertEqual(alice.events, [Event("message", {"body": "across"})])
        self.assertEqual(b.sessions("alice"), [])
        yield a.stop()
        self.assertFalse(a.healthy)

    @inlineCallbacks
    def test_offline_only_when_the_last_session_anywhere_leaves(self):
        a, b = yield self.bridges()
        seen_a, seen_b = [], []
        a.presence_observers.append(lambda uid, online: seen_a.append((uid, online)))
        b.presence_observers.append(lambda uid, online: seen_b.append((uid, online)))
        phone = FakeSession("alice", "phone")
        desk = FakeSession("alice", "desk")
        a.register(phone)
        b.register(desk)
        yield self.until(lambda: a.remote_sessions("alice").addCallback(lambda r: r == [("desk", "online")]))
        a.unregister(phone)
        yield wait(0.3)
        self.assertEqual(seen_a, [("alice", True)])
        b.unregister(desk)
        yield self.until(lambda: succeed(len(seen_b) == 2))
        self.assertEqual(seen_b, [("alice", True), ("alice", False)])
        self.assertEqual(seen_a, [("alice", True)])
