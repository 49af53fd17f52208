"""
Several instances linked by a real Redis: two servers in this process
(fast), each with its own hub, store pool and listeners, on one database.
The separate-process cluster tests are in tests.test_cluster_processes.
"""

import secrets

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from imd.channels.longconn.client import connect
from imd.channels.methodapi.client import connect_socket
from tests.support import (
    REDIS_URL,
    PostgresBackend,
    ServerTestMixin,
    SQLiteBackend,
    make_config,
    start_server,
)


def wait(seconds):
    return deferLater(reactor, seconds, lambda: None)


@inlineCallbacks
def eventually(check, timeout=10.0, step=0.05):
    """Poll C{check} until it is true (bounded: a test never hangs on it)."""
    waited = 0.0
    while not (yield check()):
        if waited >= timeout:
            raise AssertionError("condition not met in time")
        yield wait(step)
        waited += step


class ClusterTestsMixin(ServerTestMixin):
    if REDIS_URL is None:
        skip = "IMD_TEST_REDIS_URL is not set"

    def cluster(self, n=2, **sections):
        url = self.database_url()
        prefix = f"imdtest{secrets.token_hex(4)}"
        servers = []
        for i in range(n):
            config = make_config(
                url,
                longconn={"endpoint": "tcp:0:interface=127.0.0.1"},
                socket={"endpoint": "tcp:0:interface=127.0.0.1"},
                redis={"url": REDIS_URL, "prefix": prefix, "heartbeat": 1},
                instance={"id": f"node{i}"},
                **sections,
            )
            servers.append(start_server(self, config))
        return servers

    @inlineCallbacks
    def linked(self, *servers):
        yield eventually(lambda: all(s.hub.healthy for s in servers))

    @inlineCallbacks
    def client(self, server, uid, res="default", register=True):
        if register:
            yield server.accounts.register(uid, "secret1")
        host, port = server.address("longconn")
        c = yield connect(reactor, host, port)
        self.addCleanup(c.close)
        yield c.auth(uid, password="secret1", res=res)
        # Subscribing to the user's channel is asynchronous: wait until
        # Redis has it, as a client would simply be online by then.
        yield eventually(lambda: _subscribed(server, uid))
        return c

    @inlineCallbacks
    def test_messages_across_instances(self):
        a, b = self.cluster()
        yield self.linked(a, b)
        jack = yield self.client(a, "jack")
        rose = yield self.client(b, "rose")
        ack = yield jack.send_message("rose", "across", msgid="x1")
        self.assertEqual(ack["err"], "")
        _, msg = yield rose.expect(T.IM_MESSAGE)
        self.assertEqual((msg["from"], msg["body"], msg["to_res"]), ("jack", "across", "default"))
        yield rose.send_message("jack", "back", msgid="y1")
        _, msg = yield jack.expect(T.IM_MESSAGE)
        self.assertEqual(msg["body"], "back")
        # A second session of jack on b gets the copy of what jack sends on a.
        jack2 = yield self.client(b, "jack", res="desktop", register=False)
        yield jack.send_message("rose", "again", msgid="x2")
        _, copy = yield jack2.expect(T.IM_NOTIFY_MESSAGE)
        self.assertEqual(copy["msgid"], "x2")

    @inlineCallbacks
    def test_group_friend_request_and_socket(self):
        a, b = self.cluster()
        yield self.linked(a, b)
        jack = yield self.client(a, "jack")
        rose = yield self.client(b, "rose")
        yield jack.add_friend("rose", "hi")
        _, request = yield rose.expect(T.IM_ROSTER_ADD_REQ)
        yield rose.answer_friend("jack", request["msgid"], True)
        _, added = yield jack.expect(T.IM_NOTIFY_ROSTER_ADD)
        self.assertEqual(added, {"frd": "rose"})
        # tom is on the binary socket of b.
        yield b.accounts.register("tom", "secret1")
        token = yield self.login(b, "tom", "secret1")
        host, port = b.address("socket")
        tom = yield connect_socket(reactor, host, port)
        self.addCleanup(tom.close)
        yield tom.bind("tom", token)
        yield eventually(lambda: _subscribed(b, "tom"))
        group = yield a.groups.create("jack", "mixed")
        yield a.store.groups.add_member(group.gid, "rose", 0, "", 0)
        yield a.store.groups.add_member(group.gid, "tom", 0, "", 0)
        yield jack.send_message(None, "to the group", gid=group.gid)
        _, msg = yield rose.expect(T.IM_MESSAGE)
        self.assertEqual(msg["gid"], group.gid)
        push = yield tom.expect("sendmsg")
        self.assertEqual((push["to_group_id"], push["content"]), (group.gid, "to the group"))
        yield tom.sendmsg("from the socket", to_user_id="jack")
        _, msg = yield jack.expect(T.IM_MESSAGE)
        self.assertEqual((msg["from"], msg["body"]), ("tom", "from the socket"))

    @inlineCallbacks
    def test_presence_across_instances(self):
        a, b = self.cluster()
        yield self.linked(a, b)
        jack = yield self.client(a, "jack")
        rose = yield self.client(b, "rose", res="phone")
        yield jack.add_friend("rose")
        _, request = yield rose.expect(T.IM_ROSTER_ADD_REQ)
        yield rose.answer_friend("jack", request["msgid"], True)
        yield jack.expect(T.IM_NOTIFY_ROSTER_ADD)
        yield rose.presence("online", "dnd")
        yield eventually(lambda: _show(b, "rose", "phone", "dnd"))
        yield jack.presence("online", "online")
        _, seen = yield rose.expect(T.IM_PRESENCE, lambda p: p["from"] == "jack")
        self.assertEqual(seen["type"], "online")
        _, back = yield jack.expect(T.IM_PRESENCE, lambda p: p["type"] == "ack")
        self.assertEqual((back["from"], back["from_res"], back["show"]), ("rose", "phone", "dnd"))
        yield rose.request(T.IM_PRESENCE, {"type": "ack", "to": "jack", "to_res": "default", "show": "chat"})
        _, answered = yield jack.expect(T.IM_PRESENCE, lambda p: p["type"] == "ack" and p["show"] == "chat")
        self.assertEqual(answered["from"], "rose")
        yield rose.close()
        _, gone = yield jack.expect(T.IM_PRESENCE, lambda p: p["type"] == "leave")
        self.assertEqual((gone["from"], gone["show"]), ("rose", "offline"))

    @inlineCallbacks
    def test_same_resource_on_another_instance_is_kicked(self):
        a, b = self.cluster()
        yield self.linked(a, b)
        first = yield self.client(a, "jack", res="phone")
        yield self.client(b, "jack", res="phone", register=False)
        _, kick = yield first.expect(T.IM_KICK)
        self.assertEqual(kick["reason"], "logged in elsewhere")
        yield first.closed
        self.assertEqual(a.hub.sessions("jack"), [])

    @inlineCallbacks
    def test_offline_only_when_the_last_session_anywhere_leaves(self):
        a, b = self.cluster()
        yield self.linked(a, b)
        rose = yield self.client(a, "rose")
        yield rose.presence("online")
        jack_a = yield self.client(a, "jack", res="phone")
        jack_b = yield self.client(b, "jack", res="desktop", register=False)
        yield a.store.roster.add_request("r1", "jack", "rose", "", 0)
        request = yield a.store.roster.pending_from("rose", "jack")
        yield a.store.roster.answer_request(request.id, True, 0, "1", "", "1", "")
        yield jack_a.close()
        yield wait(0.3)
        self.assertEqual(rose.take(T.IM_PRESENCE), [])
        yield jack_b.close()
        _, gone = yield rose.expect(T.IM_PRESENCE, lambda p: p["type"] == "leave")
        self.assertEqual(gone["from"], "jack")

    @inlineCallbacks
    def test_each_instance_receives_only_its_users_events(self):
        a, b = self.cluster()
        yield self.linked(a, b)
        jack = yield self.client(a, "jack")
        rose = yield self.client(b, "rose")
        yield a.accounts.register("nobody_online", "secret1")
        before_a = a.metrics.redis_received._value.get()
        before_b = b.metrics.redis_received._value.get()
        for i in range(20):
            yield jack.send_message("nobody_online", "x", msgid=f"n{i}")
        yield wait(0.3)
        # Published, but no instance has that user: nobody receives them.
        self.assertEqual(a.metrics.redis_received._value.get(), before_a)
        self.assertEqual(b.metrics.redis_received._value.get(), before_b)
        yield jack.send_message("rose", "x", msgid="r1")
        yield rose.expect(T.IM_MESSAGE)
        self.assertEqual(b.metrics.redis_received._value.get(), before_b + 1)
        self.assertEqual(a.metrics.redis_received._value.get(), before_a)

    @inlineCallbacks
    def test_a_request_replayed_to_another_instance_is_refused(self):
        import json
        import time

        from imd.channels.shared.signing import sign

        a, b = self.cluster(sms={"required": False})
        yield self.linked(a, b)
        data = {"telephone": "13100000001", "password": "123456"}
        t = int(time.time())
        raw = json.dumps({"method": "com.user.register", "data": data, "_t": t, "sign": sign(data, str(t))}).encode()
        _, reply, _ = yield self.http(a, "POST", "/", raw=raw)
        self.assertEqual(reply["status"], "1111", reply)
        _, reply, _ = yield self.http(b, "POST", "/", raw=raw)
        self.assertEqual((reply["status"], reply["code"]), ("0000", "replayed_request"))

    @inlineCallbacks
    def test_healthz_names_the_instance(self):
        (a,) = self.cluster(1)
        yield self.linked(a)
        code, body, _ = yield self.http(a, "GET", "/healthz")
        self.assertEqual(code, 200)
        self.assertEqual((body["instance"], body["redis"]["status"], body["status"]), ("node0", "ok", "ok"))


def _subscribed(server, uid):
    from twisted.internet.defer import succeed

    hub = server.hub
    if hub._redis is None or not hub.healthy:
        return succeed(False)
    d = hub._redis.execute_command("PUBSUB", "NUMSUB", hub._channel(uid))
    d.addCallback(lambda reply: int(reply[1]) > 0)
    return d


def _show(server, uid, resource, show):
    import json

    d = server.hub._redis.hget(server.hub._presence_key(uid), f"{server.hub.instance}/{resource}")
    d.addCallback(lambda v: v is not None and json.loads(v).get("show") == show)
    return d


class SQLiteClusterTests(ClusterTestsMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresClusterTests(ClusterTestsMixin, PostgresBackend, unittest.TestCase):
    pass
