"""The in-process hub: who is online, and who gets an event."""

from __future__ import annotations

from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from imd.hub.interfaces import Event, IHub, ISession
from imd.hub.local import LocalHub


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
