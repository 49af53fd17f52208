"""
Message-copy webhooks, on SQLite and on Postgres: a real receiver (a
Twisted site here) verifies the CheckSum of every one; events arrive in
order and none is lost while the receiver is down or failing, nor across
a SIGKILL of the server; the outbox's claims keep one instance delivering
at a time; dead rows wait for an administrator.
"""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site

from imd.channels.longconn import msgtypes as T
from imd.channels.longconn.client import connect
from imd.channels.methodapi.client import connect_socket
from imd.channels.serverapi.client import ServerApiClient
from imd.core.sessions import SessionReports
from tests.processes import ProcessTestMixin, free_ports, listener_env
from tests.support import PostgresBackend, SQLiteBackend, child_env, make_config, start_server
from tests.test_serverapi import ServerApiMixin

NOW = 1_700_000_000_000
APP_KEY, APP_SECRET = "hookkey", "hooksecret"


@inlineCallbacks
def eventually(check, timeout=30.0, step=0.02):
    """Wait (bounded) until C{check()} is true; no assertion on how long it took."""
    waited = 0.0
    while not check():
        if waited >= timeout:
            raise AssertionError("condition not met in time")
        yield deferLater(reactor, step, lambda: None)
        waited += step


class Receiver(Resource):
    """A business server's endpoint: checks each webhook's signature, answers C{status}."""

    isLeaf = True

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.status = 200
        self.events: list[tuple[int, dict]] = []
        self.refused = 0
        self.forged = 0
        self.port = None
        self.number = 0

    def render_POST(self, request):
        body = request.content.read()
        md5 = (request.getHeader(b"md5") or b"").decode()
        curtime = (request.getHeader(b"curtime") or b"").decode()
        given = (request.getHeader(b"checksum") or b"").decode()
        expected = hashlib.sha1((self.secret + md5 + curtime).encode()).hexdigest()
        if md5 != hashlib.md5(body).hexdigest() or given != expected or request.getHeader(b"appkey") is None:
            self.forged += 1
            request.setResponseCode(401)
            return b"bad signature"
        if self.status != 200:
            self.refused += 1
            request.setResponseCode(self.status)
            return b"not now"
        self.events.append((int(request.getHeader(b"x-imd-event-id")), json.loads(body)))
        return b"ok"

    def listen(self):
        self.port = reactor.listenTCP(self.number, Site(self), interface="127.0.0.1")
        self.number = self.port.getHost().port
        return self.port

    def stop(self):
        return self.port.stopListening()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.number}/receiveMsg.action"

    def bodies(self, kind: str = "1") -> list[dict]:
        return [body for _, body in self.events if body["eventType"] == kind]

    def stored(self) -> list[tuple[int, dict]]:
        """The events of what is stored, each once."""
        return list({i: (i, body) for i, body in self.events if body["eventType"] in STORED}.values())


# Event types of what is stored (not of sessions starting and ending).
STORED = ("1", "7", "8", "30")


def in_order(testcase, receiver: Receiver, expected_ids: list[int]) -> None:
    """Every row of C{expected_ids} arrived, and all in outbox order (a repeat only right after itself)."""
    distinct = list(dict.fromkeys(event_id for event_id, _ in receiver.events))
    testcase.assertEqual(distinct, sorted(distinct))
    testcase.assertEqual([i for i in distinct if i in expected_ids], expected_ids)
    testcase.assertEqual(receiver.forged, 0)


class WebhookMixin(ServerApiMixin):
    def receiver(self) -> Receiver:
        receiver = Receiver(APP_SECRET)
        receiver.listen()
        self.addCleanup(lambda: receiver.port.stopListening() if receiver.port.connected else None)
        return receiver

    def start_hooked(self, receiver: Receiver, **webhooks):
        hooks = {"url": receiver.url, "retry_min_ms": 20, "retry_max_ms": 200, "poll_ms": 20}
        hooks.update(webhooks)
        server = self.start_server(serverapi={"app_key": APP_KEY, "app_secret": APP_SECRET}, webhooks=hooks)
        host, port = server.address("http")
        return server, ServerApiClient(f"http://{host}:{port}", APP_KEY, APP_SECRET)

    @inlineCallbacks
    def outbox_ids(self, server) -> list[int]:
        rows = yield server.store.outbox.undelivered()
        return [row.id for row in rows]

    def all_ids(self, server) -> list[int]:
        """The outbox rows of what is stored (not of sessions starting and ending)."""
        with server.store.db.engine.connect() as conn:
            return [row[0] for row in conn.exec_driver_sql(
                "SELECT id FROM outbox WHERE kind NOT IN ('login', 'logout') ORDER BY id")]


class FlowTestsMixin(WebhookMixin):
    @inlineCallbacks
    def test_the_seeds_third_flow(self):
        receiver = self.receiver()
        server, client = self.start_hooked(receiver)
        tokens = {}
        for uid, name in (("buyer", "Buyer"), ("seller", "Seller")):
            tokens[uid] = (yield self.ok(client, "user/create", accid=uid, name=name))["info"]["token"]
        yield self.ok(client, "friend/add", accid="buyer", faccid="seller", type="1")
        seller = yield self.connect(server)
        yield seller.auth("seller", token=tokens["seller"], res="phone")
        buyer = yield self.connect(server)
        yield buyer.auth("buyer", token=tokens["buyer"])
        yield seller.send_message("buyer", "您的订单已发货", msgid="m-1")
        yield eventually(lambda: receiver.bodies())
        [copy] = receiver.bodies()
        message = yield server.store.messages.get("seller", "m-1")
        self.assertEqual(copy, {
            "eventType": "1", "convType": "PERSON", "to": "buyer", "fromAccount": "seller",
            "fromClientType": "PC", "fromDeviceId": "phone", "fromNick": "Seller",
            "msgTimestamp": str(message.created_at), "msgType": "TEXT", "body": "您的订单已发货", "attach": "",
            "msgidClient": "m-1", "msgidServer": str(message.id), "resendFlag": "0",
        })
        counts = yield self.ok(client, "msg/unreadCount", accid="buyer", peers='["seller"]')
        self.assertEqual(counts["counts"], {"seller": 1})
        yield buyer.receipt("m-1", to="seller")
        counts = yield self.ok(client, "msg/unreadCount", accid="buyer", peers='["seller"]')
        self.assertEqual(counts["counts"], {"seller": 0})
        # A custom notification is copied too, unless its option says not to.
        yield self.ok(client, "msg/sendAttachMsg", **{"from": "seller", "msgtype": "0", "to": "buyer", "attach": "a1"})
        yield self.ok(client, "msg/sendAttachMsg", **{"from": "seller", "msgtype": "0", "to": "buyer", "attach": "a2",
                                                     "option": '{"route":false}'})
        yield self.ok(client, "msg/sendMsg", **{"from": "buyer", "ope": "0", "to": "seller", "type": "0",
                                               "body": '{"msg":"thanks"}'})
        yield eventually(lambda: len(receiver.bodies()) == 3)
        notice, api = receiver.bodies()[1:]
        self.assertEqual((notice["convType"], notice["attach"], notice["to"]), ("CUSTOM_PERSON", "a1", "buyer"))
        self.assertEqual((api["fromClientType"], api["body"], api["to"]), ("REST", "thanks", "seller"))
        in_order(self, receiver, self.all_ids(server))
        _, pushed = yield buyer.expect(T.IM_NOTIFY_SYSTEM, lambda b: b["attach"] == "a2")
        self.assertEqual(pushed["from"], "seller")

    @inlineCallbacks
    def test_recalls_and_read_receipts_are_copied(self):
        receiver = self.receiver()
        server, client = self.start_hooked(receiver)
        for uid in ("a", "b", "c"):
            yield server.accounts.register(uid, "secret1")
        a = yield self.connect(server)
        yield a.auth("a", password="secret1")
        b = yield self.connect(server)
        yield b.auth("b", password="secret1")
        yield a.send_message("b", "one", msgid="m1")
        yield b.receipt("m1", to="a", kind="delivered")
        yield b.receipt("m1", to="a")
        # A second read receipt of the same message is no news.
        yield b.receipt("m1", to="a")
        yield a.recall("m1", to="b")
        group = yield server.groups.create("a", "team")
        yield server.store.groups.add_member(group.gid, "c", 0, "", 1)
        yield a.send_message(None, "all", gid=group.gid, msgid="g1")
        yield a.recall("g1", gid=group.gid)
        yield eventually(lambda: len(receiver.stored()) == 5)
        events = receiver.stored()
        kinds = [body["eventType"] for _, body in events]
        self.assertEqual(kinds, ["1", "30", "7", "1", "8"])
        message = yield server.store.messages.get("a", "m1")
        receipt = events[1][1]
        [entry] = json.loads(receipt["objects"])
        self.assertEqual((entry["fromAccount"], entry["toAccount"], entry["msgidClient"], entry["msgidServer"]),
                         ("b", "a", "m1", str(message.id)))
        self.assertIsInstance(entry["timestamp"], int)
        recall = events[2][1]
        self.assertEqual((recall["fromAccount"], recall["to"], recall["msgidServer"], recall["msgTimestamp"]),
                         ("a", "b", str(message.id), str(message.recalled_at)))
        team_recall = events[4][1]
        self.assertEqual((team_recall["convType"], team_recall["to"], team_recall["msgidClient"]), ("TEAM", group.gid, "g1"))
        in_order(self, receiver, self.all_ids(server))

    @inlineCallbacks
    def test_logins_and_logouts_on_both_channels(self):
        receiver = self.receiver()
        server, client = self.start_hooked(receiver, batch=1)
        token = (yield self.ok(client, "user/create", accid="u1"))["info"]["token"]
        c = yield self.connect(server)
        yield c.auth("u1", token=token, res="pad")
        sock = yield self.socket(server)
        yield sock.bind("u1", token)
        yield c.close()
        yield sock.close()
        yield eventually(lambda: len(receiver.events) == 4)
        bodies = [body for _, body in receiver.events]
        self.assertEqual(sorted(b["eventType"] for b in bodies), ["2", "2", "3", "3"])
        login = next(b for b in bodies if b["eventType"] == "2" and b["deviceId"] == "pad")
        self.assertEqual((login["accid"], login["clientType"], login["clientIp"], login["code"]), ("u1", "PC", "127.0.0.1", "200"))
        self.assertIn("AOS", {b["clientType"] for b in bodies})
        # Each session's logout comes after its login.
        for device in {b["deviceId"] for b in bodies}:
            self.assertEqual([b["eventType"] for b in bodies if b["deviceId"] == device], ["2", "3"])

    @inlineCallbacks
    def test_blocking_ends_live_sessions(self):
        receiver = self.receiver()
        server, client = self.start_hooked(receiver)
        token = (yield self.ok(client, "user/create", accid="u1"))["info"]["token"]
        c = yield self.connect(server)
        yield c.auth("u1", token=token)
        yield self.ok(client, "user/block", accid="u1")
        _, kick = yield c.expect(T.IM_KICK)
        self.assertEqual(kick["reason"], "account disabled")
        yield c.closed
        yield eventually(lambda: [b["eventType"] for _, b in receiver.events] == ["2", "3"])

    @inlineCallbacks
    def test_receiver_outage_loses_nothing_and_keeps_order(self):
        receiver = self.receiver()
        receiver.status = 503
        server, client = self.start_hooked(receiver)
        for uid in ("a", "b"):
            yield server.accounts.register(uid, "secret1")
        a = yield self.connect(server)
        yield a.auth("a", password="secret1")
        for i in range(3):
            yield a.send_message("b", f"first {i}", msgid=f"f{i}")
        yield eventually(lambda: receiver.refused >= 2)
        # Now not even listening.
        yield receiver.stop()
        for i in range(3):
            yield a.send_message("b", f"then {i}", msgid=f"t{i}")
        yield self.ok(client, "msg/sendMsg", **{"from": "b", "ope": "0", "to": "a", "type": "0", "body": '{"msg":"api"}'})
        self.assertEqual(receiver.events, [])
        self.assertGreaterEqual(server.metrics.outbox_retried._value.get(), 2)
        # No session starts or ends from here on: the depth below is the stored rows'.
        receiver.status = 200
        receiver.listen()
        expected = self.all_ids(server)
        self.assertEqual(len(expected), 7)
        yield eventually(lambda: len(receiver.stored()) == 7)
        in_order(self, receiver, expected)
        self.assertEqual([b["msgidClient"] for b in receiver.bodies()][:6], ["f0", "f1", "f2", "t0", "t1", "t2"])
        yield eventually(lambda: server.metrics.outbox_depth._value.get() == 0)
        # The depth is counted at most once a second: the rows may still be
        # being marked delivered as it reads 0.
        for _ in range(1500):
            if not (yield self.outbox_ids(server)):
                break
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertEqual((yield self.outbox_ids(server)), [])
        self.assertGreaterEqual(server.metrics.outbox_delivered._value.get(), 7)
        code, text, _ = yield self.http(server, "GET", "/metrics")
        for name in ("imd_outbox_depth 0.0", "imd_outbox_dead 0.0", "imd_outbox_oldest_seconds 0.0",
                     "imd_outbox_delivered_total", "imd_outbox_retried_total"):
            self.assertIn(name.encode(), text)

    @inlineCallbacks
    def test_two_instances_deliver_one_ordered_stream(self):
        receiver = self.receiver()
        url = self.database_url()
        hooks = {"url": receiver.url, "retry_min_ms": 20, "retry_max_ms": 200, "poll_ms": 20, "batch": 3}
        servers = [
            start_server(self, make_config(url, webhooks=hooks, instance={"id": f"node{i}"},
                                           serverapi={"app_key": APP_KEY, "app_secret": APP_SECRET}))
            for i in range(2)
        ]
        for uid in ("a", "b"):
            yield servers[0].accounts.register(uid, "secret1")
        for i in range(12):
            yield servers[i % 2].messages.send("a", f"m{i}", f"n{i}", to="b")
        yield eventually(lambda: len(receiver.stored()) == 12)
        in_order(self, receiver, self.all_ids(servers[0]))
        self.assertEqual([b["msgidClient"] for _, b in receiver.stored()], [f"m{i}" for i in range(12)])
        # Counted once the receiver's answer is back, which may be just after it stored the last.
        yield eventually(lambda: sum(s.metrics.outbox_delivered._value.get() for s in servers) >= 12)

    @inlineCallbacks
    def test_dead_rows_wait_for_an_administrator(self):
        receiver = self.receiver()
        receiver.status = 500
        server, client = self.start_hooked(receiver, max_attempts=2)
        for uid in ("a", "b"):
            yield server.accounts.register(uid, "secret1")
        yield server.messages.send("a", "m1", "one", to="b")
        yield eventually(lambda: receiver.refused >= 2)
        yield eventually(lambda: server.metrics.outbox_dead._value.get() == 1)
        [dead] = yield server.store.outbox.undelivered(dead_only=True)
        self.assertIn("500", dead.last_error)
        receiver.status = 200
        # The rows after a dead one go on.
        yield server.messages.send("a", "m2", "two", to="b")
        yield eventually(lambda: [b["msgidClient"] for b in receiver.bodies()] == ["m2"])
        self.assertEqual((yield server.store.outbox.revive(None, NOW)), 1)
        yield eventually(lambda: [b["msgidClient"] for b in receiver.bodies()] == ["m2", "m1"])


class SQLiteFlowTests(FlowTestsMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresFlowTests(FlowTestsMixin, PostgresBackend, unittest.TestCase):
    pass


class SigkillMixin(ProcessTestMixin):
    """Rows in the outbox when the server is killed are delivered by the next one."""

    def database_env(self) -> dict:
        raise NotImplementedError()

    @inlineCallbacks
    def test_rows_survive_sigkill(self):
        receiver = Receiver(APP_SECRET)
        receiver.listen()
        self.addCleanup(lambda: receiver.port.stopListening() if receiver.port.connected else None)
        receiver.status = 503
        cwd = self.empty_dir()
        env = child_env(
            IMD_SERVERAPI_APP_KEY=APP_KEY,
            IMD_SERVERAPI_APP_SECRET=APP_SECRET,
            IMD_WEBHOOKS_URL=receiver.url,
            IMD_WEBHOOKS_RETRY_MIN_MS="20",
            IMD_WEBHOOKS_RETRY_MAX_MS="100",
            IMD_WEBHOOKS_POLL_MS="20",
            # The killed instance's claim must run out for the next one.
            IMD_WEBHOOKS_LEASE="3",
            IMD_WEBHOOKS_TIMEOUT="1",
            **self.database_env(),
        )
        child, base, _ = yield self.start_imd(cwd, env)
        client = ServerApiClient(base, APP_KEY, APP_SECRET)
        for uid in ("buyer", "seller"):
            code, reply = yield client.call("user/create", {"accid": uid})
            self.assertEqual(reply["code"], 200, reply)
        sent = []
        for i in range(5):
            code, reply = yield client.call(
                "msg/sendMsg", {"from": "seller", "ope": "0", "to": "buyer", "type": "0", "body": json.dumps({"msg": f"m{i}"})}
            )
            self.assertEqual(reply["code"], 200, reply)
            sent.append(str(reply["data"]["msgid"]))
        yield eventually(lambda: receiver.refused >= 1)
        child.signal("KILL")
        yield child.ended()
        self.assertEqual(receiver.events, [])
        receiver.status = 200
        child, base, _ = yield self.start_imd(cwd, env)
        yield eventually(lambda: len({i for i, _ in receiver.events}) == 5)
        self.assertEqual(list(dict.fromkeys(b["msgidServer"] for _, b in receiver.events)), sent)
        self.assertEqual([b["body"] for b in receiver.bodies()][:5], [f"m{i}" for i in range(5)])
        self.assertEqual(receiver.forged, 0)
        yield self.stop(child)


class SeedFlowsMixin(ProcessTestMixin):
    """Seed 003's three flows against a fresh twistd imd, as its business server runs them."""

    def database_env(self) -> dict:
        raise NotImplementedError()

    @inlineCallbacks
    def test_the_three_flows(self):
        receiver = Receiver("")
        receiver.listen()
        self.addCleanup(lambda: receiver.port.stopListening() if receiver.port.connected else None)
        cwd = self.empty_dir()
        env = child_env(IMD_WEBHOOKS_URL=receiver.url, IMD_WEBHOOKS_POLL_MS="50", **self.database_env())
        yield self.cli(cwd, env, "db", "upgrade")
        out = yield self.cli(cwd, env, "app", "add", "shop")
        key, secret = (line.split(": ")[1] for line in out.splitlines()[:2])
        receiver.secret = secret
        ports = free_ports(4)
        child = self.twistd(cwd, {**env, **listener_env(ports)})
        base = f"http://127.0.0.1:{ports[0]}"
        yield self.wait_healthy(child, base)
        shop = ServerApiClient(base, key, secret)

        # 1. Accounts with tokens, made friends.
        tokens = {}
        for accid in ("Buyer1", "seller1"):
            code, reply = yield shop.call("user/create", {"accid": accid, "name": accid.title()})
            self.assertEqual(reply["code"], 200, reply)
            tokens[reply["info"]["accid"]] = reply["info"]["token"]
        self.assertEqual(sorted(tokens), ["buyer1", "seller1"])
        code, reply = yield shop.call("friend/add", {"accid": "buyer1", "faccid": "seller1", "type": "1"})
        self.assertEqual(reply["code"], 200, reply)

        # 2. A shipping notice: live on the long connection, after bind on the socket.
        buyer = yield connect(reactor, "127.0.0.1", ports[1])
        self.addCleanup(buyer.close)
        yield buyer.auth("buyer1", token=tokens["buyer1"])
        notice = '{"type":"shipped","order":"A-1"}'
        for to in ("buyer1", "seller1"):
            code, reply = yield shop.call("msg/sendAttachMsg", {"from": "seller1", "msgtype": "0", "to": to, "attach": notice})
            self.assertEqual(reply["code"], 200, reply)
        _, pushed = yield buyer.expect(T.IM_NOTIFY_SYSTEM)
        self.assertEqual(pushed["attach"], notice)
        sock = yield connect_socket(reactor, "127.0.0.1", ports[2])
        self.addCleanup(sock.close)
        yield sock.bind("seller1", tokens["seller1"])
        self.assertEqual((yield sock.expect("notify"))["content"], notice)

        # 3. A message reaches the webhook signed; a read receipt zeroes the count.
        seller = yield connect(reactor, "127.0.0.1", ports[1])
        self.addCleanup(seller.close)
        yield seller.auth("seller1", password=tokens["seller1"], res="pc")
        yield seller.send_message("buyer1", "已发货,请查收", msgid="ship-1")
        yield eventually(lambda: any(b.get("msgidClient") == "ship-1" for b in receiver.bodies()))
        copy = next(b for b in receiver.bodies() if b.get("msgidClient") == "ship-1")
        self.assertEqual((copy["fromAccount"], copy["to"], copy["body"]), ("seller1", "buyer1", "已发货,请查收"))
        code, reply = yield shop.call("msg/unreadCount", {"accid": "buyer1", "peers": '["seller1"]'})
        self.assertEqual(reply["counts"], {"seller1": 1})
        yield buyer.receipt("ship-1", to="seller1")
        code, reply = yield shop.call("msg/unreadCount", {"accid": "buyer1", "peers": '["seller1"]'})
        self.assertEqual(reply["counts"], {"seller1": 0})
        yield eventually(lambda: receiver.bodies("30"))
        self.assertEqual(receiver.forged, 0)
        yield buyer.close()
        yield seller.close()
        yield sock.close()
        yield self.stop(child)


class SQLiteSeedFlowsTests(SeedFlowsMixin, unittest.TestCase):
    def database_env(self) -> dict:
        return {}


class PostgresSeedFlowsTests(SeedFlowsMixin, PostgresBackend, unittest.TestCase):
    def database_env(self) -> dict:
        return {"IMD_DATABASE_URL": self.database_url()}

class SQLiteSigkillTests(SigkillMixin, unittest.TestCase):
    def database_env(self) -> dict:
        return {}


class PostgresSigkillTests(SigkillMixin, PostgresBackend, unittest.TestCase):
    def database_env(self) -> dict:
        return {"IMD_DATABASE_URL": self.database_url()}


class SessionReportOrderTests(unittest.TestCase):
    """A session's logout row is written after its login row, whichever commits first."""

    def setUp(self):
        self.writes, self.added = [], []

        def add(kind, data, now):
            d = Deferred()
            self.writes.append((kind, d))
            d.addCallback(lambda _: self.added.append((kind, data["resource"])))
            return d

        store = SimpleNamespace(outbox=SimpleNamespace(add=add))
        self.reports = SessionReports(store, Clock(), enabled=True)
        self.session = SimpleNamespace(uid="u1", resource="pad", channel="longconn")

    def test_logout_waits_for_its_login(self):
        self.reports.started(self.session, "127.0.0.1")
        self.reports.ended(self.session, "127.0.0.1")
        self.assertEqual([kind for kind, _ in self.writes], ["login"])
        self.writes[0][1].callback(None)
        self.assertEqual([kind for kind, _ in self.writes], ["login", "logout"])
        self.writes[1][1].callback(None)
        self.assertEqual(self.added, [("login", "pad"), ("logout", "pad")])

    def test_a_written_login_holds_nothing_back(self):
        self.reports.started(self.session, "127.0.0.1")
        self.writes[0][1].callback(None)
        self.reports.ended(self.session, "127.0.0.1")
        self.assertEqual([kind for kind, _ in self.writes], ["login", "logout"])
        self.assertEqual(self.reports._logins, {})
