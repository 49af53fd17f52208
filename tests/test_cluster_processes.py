"""
A cluster of real ``twistd imd`` processes on one Postgres and one Redis:
traffic across instances on both client channels, an instance killed with
SIGKILL, and Redis stopped and started under running instances.
"""

from __future__ import annotations

import os
import secrets
import shutil

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from imd.channels.longconn.client import connect
from imd.channels.methodapi.client import connect_socket
from tests.processes import ChildProcess, ProcessTestMixin, free_ports, listener_env
from tests.support import POSTGRES_URL, REDIS_URL, child_env, make_config, postgres_url

# Heartbeat of the test instances: a dead one is noticed in about 3-5 s.
HEARTBEAT = 1


def wait(seconds):
    return deferLater(reactor, seconds, lambda: None)


@inlineCallbacks
def eventually(check, timeout=30.0, step=0.1):
    waited = 0.0
    while True:
        result = yield check()
        if result:
            return result
        if waited >= timeout:
            raise AssertionError("condition not met in time")
        yield wait(step)
        waited += step


class Instance:
    def __init__(self, child, base, ports):
        self.child = child
        self.base = base
        self.http_port, self.longconn_port, self.socket_port = ports[:3]


class ClusterProcessMixin(ProcessTestMixin):
    if POSTGRES_URL is None or REDIS_URL is None:
        skip = "IMD_TEST_POSTGRES_URL and IMD_TEST_REDIS_URL must both be set"

    def setUp(self):
        self.database = postgres_url(self)
        self.prefix = f"imdtest{secrets.token_hex(4)}"
        # Accounts are made in-process on the cluster's database.
        from tests.support import start_server

        self.admin = start_server(self, make_config(self.database, http={"endpoint": ""}))

    def start_instance(self, name, redis_url=None):
        ports = free_ports(4)
        env = child_env(
            IMD_DATABASE_URL=self.database,
            IMD_REDIS_URL=redis_url or REDIS_URL,
            IMD_REDIS_PREFIX=self.prefix,
            IMD_REDIS_HEARTBEAT=str(HEARTBEAT),
            IMD_INSTANCE_ID=name,
            **listener_env(ports),
        )
        child = self.twistd(self.empty_dir(), env)
        base = f"http://127.0.0.1:{ports[0]}"
        d = self.wait_healthy(child, base)
        d.addCallback(lambda health: Instance(child, base, ports))
        return d

    @inlineCallbacks
    def longconn(self, instance, uid, res="default"):
        client = yield connect(reactor, "127.0.0.1", instance.longconn_port)
        self.addCleanup(client.close)
        yield client.auth(uid, password="secret1", res=res)
        yield self.subscribed(uid)
        return client

    @inlineCallbacks
    def socket(self, instance, uid):
        token = (yield self.admin.accounts.login(uid, "secret1")).token
        client = yield connect_socket(reactor, "127.0.0.1", instance.socket_port)
        self.addCleanup(client.close)
        yield client.bind(uid, token)
        yield self.subscribed(uid)
        return client

    def subscribed(self, uid, redis_url=None):
        """Until an instance has subscribed to C{uid}'s channel."""
        return eventually(lambda: self.redis_command(redis_url, "PUBSUB", "NUMSUB", f"{self.prefix}:u:{uid}").addCallback(lambda r: int(r[1]) > 0))

    def redis_command(self, redis_url, *args):
        import txredisapi

        from imd.hub.redis import parse_url

        params = parse_url(redis_url or REDIS_URL)
        d = txredisapi.Connection(params["host"], params["port"], dbid=params["db"], reconnect=False)

        def run(conn):
            result = conn.execute_command(*args)
            result.addBoth(lambda r: conn.disconnect().addCallback(lambda _: r))
            return result

        return d.addCallback(run)

    @inlineCallbacks
    def users(self, *uids):
        for uid in uids:
            yield self.admin.accounts.register(uid, "secret1")

    @inlineCallbacks
    def befriend(self, a, b):
        request, _ = yield self.admin.store.roster.add_request(secrets.token_hex(4), a, b, "", 0)
        yield self.admin.store.roster.answer_request(request.id, True, 0, "1", "", "1", "")


class ClusterProcessTests(ClusterProcessMixin, unittest.TestCase):
    @inlineCallbacks
    def test_traffic_across_instances_and_channels(self):
        a = yield self.start_instance("a")
        b = yield self.start_instance("b")
        yield self.users("jack", "rose", "tom")
        yield self.befriend("jack", "rose")
        jack = yield self.longconn(a, "jack")
        rose = yield self.longconn(b, "rose")
        tom = yield self.socket(b, "tom")
        # 1:1 both ways, long connection to long connection.
        yield jack.send_message("rose", "a to b", msgid="m1")
        _, msg = yield rose.expect(T.IM_MESSAGE)
        self.assertEqual((msg["from"], msg["body"]), ("jack", "a to b"))
        yield rose.send_message("jack", "b to a", msgid="m2")
        _, msg = yield jack.expect(T.IM_MESSAGE)
        self.assertEqual(msg["body"], "b to a")
        # 1:1 both ways, long connection to binary socket.
        yield jack.send_message("tom", "to the socket", msgid="m3")
        push = yield tom.expect("sendmsg")
        self.assertEqual((push["from_user_id"], push["content"]), ("jack", "to the socket"))
        yield tom.sendmsg("from the socket", to_user_id="jack")
        _, msg = yield jack.expect(T.IM_MESSAGE)
        self.assertEqual((msg["from"], msg["body"]), ("tom", "from the socket"))
        # A group with members on both instances and both channels.
        group = yield self.admin.groups.create("jack", "everyone")
        for uid in ("rose", "tom"):
            yield self.admin.store.groups.add_member(group.gid, uid, 0, "", 0)
        yield jack.send_message(None, "hello group", gid=group.gid, msgid="g1")
        _, msg = yield rose.expect(T.IM_MESSAGE)
        self.assertEqual((msg["gid"], msg["body"]), (group.gid, "hello group"))
        push = yield tom.expect("sendmsg")
        self.assertEqual((push["to_group_id"], push["content"]), (group.gid, "hello group"))
        yield tom.sendmsg("socket to group", to_group_id=group.gid)
        _, msg = yield jack.expect(T.IM_MESSAGE, lambda m: m.get("gid") == group.gid)
        self.assertEqual(msg["from"], "tom")
        # A friend request from a to b, and presence across instances.
        yield jack.add_friend("tom", "hi tom")
        push = yield tom.expect("addfriend")
        self.assertEqual(push["sender"], "jack")
        yield rose.presence("online", "dnd")
        _, seen = yield jack.expect(T.IM_PRESENCE, lambda p: p["from"] == "rose")
        self.assertEqual((seen["type"], seen["show"]), ("online", "dnd"))
        yield self.stop(a.child)
        yield self.stop(b.child)

    @inlineCallbacks
    def test_sigkill_presence_expires_and_nothing_acknowledged_is_lost(self):
        a = yield self.start_instance("a")
        b = yield self.start_instance("b")
        yield self.users("jack", "rose")
        yield self.befriend("jack", "rose")
        jack = yield self.longconn(a, "jack")
        rose = yield self.longconn(b, "rose")
        yield rose.presence("online")
        yield jack.presence("online")
        yield rose.expect(T.IM_PRESENCE, lambda p: p["from"] == "jack")
        # Acknowledged by b, then b dies before anyone reads them.
        for i in range(5):
            yield rose.send_message("jack", f"from b {i}", msgid=f"b{i}")
        # Acknowledged by a while rose is on b: rose never acks them.
        for i in range(5):
            yield jack.send_message("rose", f"from a {i}", msgid=f"a{i}")
        b.child.signal("KILL")
        yield b.child.ended()
        # Within the heartbeat's bound, jack hears that rose is gone.
        _, gone = yield jack.expect(T.IM_PRESENCE, lambda p: p["from"] == "rose" and p["type"] == "leave", timeout=30)
        self.assertEqual(gone["show"], "offline")
        got = [m["body"] for _, m in jack.take(T.IM_MESSAGE)]
        self.assertEqual(got, [f"from b {i}" for i in range(5)])
        offline = yield self.admin.messages.offline("rose")
        self.assertEqual([m.msgid for m in offline], [f"a{i}" for i in range(5)])
        # The survivor keeps serving; rose comes back on it and syncs.
        rose = yield self.longconn(a, "rose")
        offline = yield self.admin.messages.offline("rose")
        self.assertEqual(len(offline), 5)
        yield self.stop(a.child)


class ClusterBenchmarkTests(ClusterProcessMixin, unittest.TestCase):
    @inlineCallbacks
    def test_smoke(self):
        """The cluster benchmark runs end to end (its figures are not judged here)."""
        import argparse

        from imd.bench.cluster import run

        args = argparse.Namespace(instances=2, users=6, duration=0.5, database=POSTGRES_URL, redis=REDIS_URL)
        result = yield run(reactor, args)
        self.assertEqual([row["users"] for row in result["per_instance"]], [3, 3])
        self.assertGreater(result["messages"], 0)
        self.assertGreater(sum(row["received"] for row in result["per_instance"]), 0)


class RedisOutageTests(ClusterProcessMixin, unittest.TestCase):
    def setUp(self):
        super().setUp()
        if shutil.which("redis-server") is None:
            raise unittest.SkipTest("no redis-server binary to start a private Redis")
        # A private Redis: stopping the machine's would hurt every other test.
        self.redis_port = free_ports(1)[0]
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.redis_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.redis_dir)
        return self.start_redis()

    @inlineCallbacks
    def start_redis(self):
        self.redis = ChildProcess()
        reactor.spawnProcess(
            self.redis,
            shutil.which("redis-server"),
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.redis_dir],
            env={},
            path=self.redis_dir,
        )
        self.addCleanup(self._kill_redis, self.redis)
        yield eventually(self._redis_up)

    def _kill_redis(self, child):
        if child.running:
            child.signal("KILL")
        return child.ended()

    def _redis_up(self):
        d = self.redis_command(self.redis_url, "PING")
        d.addCallbacks(lambda r: True, lambda f: False)
        return d

    @inlineCallbacks
    def test_redis_stopped_and_started(self):
        a = yield self.start_instance("a", self.redis_url)
        b = yield self.start_instance("b", self.redis_url)
        yield self.users("jack", "rose")
        jack = yield self.longconn_on(a, "jack")
        jack2 = yield self.longconn_on(a, "jack", res="desktop")
        rose = yield self.longconn_on(b, "rose")
        yield jack.send_message("rose", "before", msgid="m0")
        yield rose.expect(T.IM_MESSAGE)
        rose.ack_message("m0")
        # Answered once the acknowledgement before it is committed.
        yield rose.ping()

        self.redis.signal("KILL")
        yield self.redis.ended()
        # Degraded, not down: still committing and serving local users.
        code, health = yield eventually(lambda: self.http(a.base, "GET", "/healthz").addCallback(lambda r: r if r[1].get("redis", {}).get("status") == "degraded" else None))
        self.assertEqual((code, health["status"]), (200, "degraded"))
        for i in range(3):
            ack = yield jack.send_message("rose", f"during {i}", msgid=f"d{i}")
            self.assertEqual(ack["err"], "")
        # Local sessions still get everything live.
        _, copy = yield jack2.expect(T.IM_NOTIFY_MESSAGE, lambda m: m["msgid"] == "d2")
        self.assertEqual(copy["body"], "during 2")
        offline = yield self.admin.messages.offline("rose")
        self.assertEqual([m.msgid for m in offline], ["d0", "d1", "d2"])

        yield self.start_redis()
        # No restart of imd: it reconnects, and rose gets what she missed.
        got = []
        for _ in range(3):
            _, msg = yield rose.expect(T.IM_MESSAGE, timeout=60)
            got.append(msg["msgid"])
        self.assertEqual(sorted(got), ["d0", "d1", "d2"])
        yield eventually(lambda: self.http(a.base, "GET", "/healthz").addCallback(lambda r: r[1].get("status") == "ok"))
        yield self.subscribed("rose", self.redis_url)
        yield jack.send_message("rose", "after", msgid="m9")
        _, msg = yield rose.expect(T.IM_MESSAGE, lambda m: m["msgid"] == "m9", timeout=30)
        self.assertEqual(msg["body"], "after")
        yield self.stop(a.child)
        yield self.stop(b.child)

    @inlineCallbacks
    def longconn_on(self, instance, uid, res="default"):
        client = yield connect(reactor, "127.0.0.1", instance.longconn_port)
        self.addCleanup(client.close)
        yield client.auth(uid, password="secret1", res=res)
        yield self.subscribed(uid, self.redis_url)
        return client
