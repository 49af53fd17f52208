"""
Seed 003's server API over real sockets, on SQLite and on Postgres: the
CheckSum and every way a call is refused, accounts whose token logs in on
every channel, friends, custom notifications reaching seed-001 and
seed-004 clients, and unread counts.
"""

from __future__ import annotations

import hashlib
import random
import time

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from imd.channels.longconn.client import ServerError
from imd.channels.methodapi.client import connect_socket
from imd.channels.serverapi.checksum import checksum
from imd.channels.serverapi.client import ServerApiClient, sign
from imd.channels.serverapi.form import Form
from imd.core import events
from imd.errors import InvalidField
from tests.support import LongConnTestMixin, PostgresBackend, SQLiteBackend


class CheckSumTests(unittest.TestCase):
    def test_the_documented_example(self):
        # sha1("" + nonce + curtime) computed independently of imd's code.
        self.assertEqual(checksum("secret", "nonce", "1443592222"),
                         hashlib.sha1(b"secretnonce1443592222").hexdigest())
        self.assertEqual(sign("secret", "nonce", "1443592222"), checksum("secret", "nonce", "1443592222"))

    def test_form_accid(self):
        self.assertEqual(Form({"accid": "Buyer.1@Shop"}).accid(), "buyer.1@shop")
        for bad in ("x" * 33, "has space", "ünï", ""):
            self.assertRaises(InvalidField, Form({"accid": bad}).accid)

    def test_form_integer_and_lists(self):
        self.assertEqual(Form({"type": "3"}).integer("type", (1, 2, 3, 4)), 3)
        for bad in ("5", "-1", "x", "", "²"):
            self.assertRaises(InvalidField, Form({"type": bad}).integer, "type", (1, 2, 3, 4))
        self.assertEqual(Form({}).integer("save", (1, 2), default=2), 2)
        self.assertEqual(Form({"peers": '["A","b"]'}).accid_list("peers", 5), ["a", "b"])
        for bad in ('{"a":1}', "[1]", "not json", '["a","b","c"]'):
            self.assertRaises(InvalidField, Form({"peers": bad}).accid_list, "peers", 2)


class ServerApiMixin(LongConnTestMixin):
    def start_server(self, **sections):
        sections.setdefault("socket", {"endpoint": "tcp:0:interface=127.0.0.1", "encrypt": False})
        return LongConnTestMixin.start_server(self, **sections)

    @inlineCallbacks
    def api(self, server, name="shop"):
        """A started server's API client, signed by a new app."""
        app = yield server.apps.create(name)
        host, port = server.address("http")
        return ServerApiClient(f"http://{host}:{port}", app.app_key, app.secret)

    @inlineCallbacks
    def ok(self, client, path, **params):
        code, reply = yield client.call(path, params)
        self.assertEqual((code, reply.get("code")), (200, 200), reply)
        return reply

    @inlineCallbacks
    def refused(self, client, path, expected, params=None, **kwargs):
        code, reply = yield client.call(path, params or {}, **kwargs)
        self.assertEqual(code, 200, reply)
        self.assertEqual(reply["code"], expected, reply)
        self.assertIsInstance(reply["desc"], str)
        return reply

    @inlineCallbacks
    def socket(self, server):
        host, port = server.address("socket")
        client = yield connect_socket(reactor, host, port, encrypted=False)
        self.addCleanup(client.close)
        return client


class AuthTestsMixin(ServerApiMixin):
    @inlineCallbacks
    def test_no_app_says_how_to_make_one(self):
        server = self.start_server()
        host, port = server.address("http")
        client = ServerApiClient(f"http://{host}:{port}", "nokey", "nosecret")
        reply = yield self.refused(client, "user/create", 403, {"accid": "a"})
        self.assertIn("python -m imd app add", reply["desc"])

    @inlineCallbacks
    def signed(self):
        """A server with one app, and that app's client."""
        server = self.start_server()
        client = yield self.api(server)
        return server, client

    @inlineCallbacks
    def assertRefusedAndUndone(self, code, **kwargs):
        server, client = yield self.signed()
        yield self.refused(client, "user/create", code, {"accid": "alice"}, **kwargs)
        self.assertIsNone((yield server.accounts.get_user("alice")))
        # The same call, signed right, goes through: only the fault was refused.
        yield self.ok(client, "user/create", accid="alice")

    def test_unknown_app_key_is_403(self):
        return self.assertRefusedAndUndone(403, headers={"AppKey": "unknown"})

    def test_bad_checksum_is_414(self):
        return self.assertRefusedAndUndone(414, headers={"CheckSum": "0" * 40})

    @inlineCallbacks
    def test_wrong_checksums_back_off_with_416(self):
        server = self.start_server(limits={"login_failures": 3})
        client = yield self.api(server)
        forged = ServerApiClient(client.base, client.app_key, "not the secret")
        for _ in range(3):
            yield self.refused(forged, "user/create", 414, {"accid": "alice"})
        # Even signed right, this address waits now.
        yield self.refused(client, "user/create", 416, {"accid": "alice"})
        self.assertIsNone((yield server.accounts.get_user("alice")))
        self.assertEqual(server.metrics.logins_refused.labels("serverapi")._value.get(), 1)

    @inlineCallbacks
    def test_checksum_of_another_secret_is_414(self):
        server, client = yield self.signed()
        forged = ServerApiClient(client.base, client.app_key, "not the secret")
        yield self.refused(forged, "user/create", 414, {"accid": "alice"})
        self.assertIsNone((yield server.accounts.get_user("alice")))

    @inlineCallbacks
    def test_stale_curtime_is_414(self):
        server, client = yield self.signed()
        for curtime in (int(time.time()) - 3600, int(time.time()) + 3600):
            yield self.refused(client, "user/create", 414, {"accid": "alice"}, headers=client.headers(curtime=str(curtime)))
        self.assertIsNone((yield server.accounts.get_user("alice")))

    @inlineCallbacks
    def test_missing_headers_are_414(self):
        server, client = yield self.signed()
        for header in ("AppKey", "Nonce", "CurTime", "CheckSum"):
            yield self.refused(client, "user/create", 414, {"accid": "alice"}, headers={header: None})
        self.assertIsNone((yield server.accounts.get_user("alice")))

    @inlineCallbacks
    def test_malformed_nonce_and_curtime_are_414(self):
        server, client = yield self.signed()
        yield self.refused(client, "user/create", 414, {"accid": "alice"}, headers=client.headers(nonce="n" * 129))
        yield self.refused(client, "user/create", 414, {"accid": "alice"}, headers=client.headers(curtime="soon"))
        self.assertIsNone((yield server.accounts.get_user("alice")))

    @inlineCallbacks
    def test_replayed_nonce_is_431(self):
        server, client = yield self.signed()
        replayed = client.headers(nonce="once")
        code, reply = yield client.call("user/create", {"accid": "bob"}, headers=replayed)
        self.assertEqual(reply["code"], 200, reply)
        yield self.refused(client, "user/create", 431, {"accid": "carol"}, headers=replayed)
        self.assertIsNone((yield server.accounts.get_user("carol")))
        # Another app may use the same Nonce.
        other = yield self.api(server, "other")
        code, reply = yield other.call("user/create", {"accid": "dave"}, headers=other.headers(nonce="once"))
        self.assertEqual(reply["code"], 200, reply)

    @inlineCallbacks
    def test_missing_oversized_and_garbage_parameters(self):
        server = self.start_server(serverapi={"max_body": 8192})
        client = yield self.api(server)
        yield self.refused(client, "user/create", 414, {})
        yield self.refused(client, "user/create", 414, {"accid": "x" * 33})
        yield self.refused(client, "user/create", 414, {"accid": "has space"})
        yield self.refused(client, "user/create", 414, {"accid": "a", "name": "n" * 65})
        yield self.refused(client, "user/create", 414, {"accid": "a", "token": "t" * 129})
        yield self.refused(client, "user/create", 414, body=b"accid=%ff%fe")
        yield self.refused(client, "user/create", 414, body=b"accid=\xff\xfe")
        yield self.refused(client, "user/create", 414, body=b"accid=a&name=" + b"n" * 9000)
        yield self.refused(client, "user/create", 414, body=b"&".join(b"k%d=v" % i for i in range(200)))
        yield self.ok(client, "user/create", accid="a")
        yield self.refused(client, "msg/sendAttachMsg", 414, {"from": "a", "msgtype": "0", "to": "a", "attach": "x" * 4097})
        yield self.refused(client, "msg/sendAttachMsg", 414, {"from": "a", "msgtype": "2", "to": "a", "attach": "x"})
        yield self.refused(client, "msg/sendAttachMsg", 414, {"from": "a", "msgtype": "0", "to": "a", "attach": "x", "save": "3"})
        yield self.refused(client, "msg/sendAttachMsg", 414, {"from": "a", "msgtype": "0", "to": "a", "attach": "x", "option": "{"})
        yield self.refused(client, "friend/add", 414, {"accid": "a", "faccid": "a", "type": "9"})
        yield self.refused(client, "nothing/here", 404, {})
        # The server is fine for everyone else.
        yield self.ok(client, "user/create", accid="b")

    @inlineCallbacks
    def test_a_get_is_answered_in_the_family_form(self):
        server = self.start_server()
        code, body, _ = yield self.http(server, "GET", "/nimserver/user/create.action")
        self.assertEqual((code, body["code"]), (200, 414), body)

    @inlineCallbacks
    def test_app_from_the_config(self):
        server = self.start_server(serverapi={"app_key": "cfgkey", "app_secret": "cfgsecret"})
        host, port = server.address("http")
        client = ServerApiClient(f"http://{host}:{port}", "cfgkey", "cfgsecret")
        yield self.ok(client, "user/create", accid="alice")
        yield self.refused(ServerApiClient(client.base, "cfgkey", "wrong"), "user/create", 414, {"accid": "bob"})


class AccountTestsMixin(ServerApiMixin):
    @inlineCallbacks
    def test_created_token_logs_in_on_every_channel(self):
        server = self.start_server()
        client = yield self.api(server)
        reply = yield self.ok(client, "user/create", accid="Buyer1", name="Buyer")
        info = reply["info"]
        self.assertEqual((info["accid"], info["name"]), ("buyer1", "Buyer"))
        token = info["token"]
        # Long connection, by token and as the password.
        c1 = yield self.connect(server)
        yield c1.auth("buyer1", token=token, res="t")
        c2 = yield self.connect(server)
        yield c2.auth("buyer1", password=token, res="p")
        # POST /auth/login with the token as the password.
        session_token = yield self.login(server, "buyer1", token)
        self.assertNotEqual(session_token, token)
        # The socket binds with it.
        sock = yield self.socket(server)
        bound = yield sock.bind("buyer1", token)
        self.assertEqual(bound["data"]["user_id"], "buyer1")
        yield self.refused(client, "user/create", 414, {"accid": "buyer1"})

    @inlineCallbacks
    def test_given_token_and_refresh(self):
        server = self.start_server()
        client = yield self.api(server)
        reply = yield self.ok(client, "user/create", accid="seller", token="given-token-1")
        self.assertEqual(reply["info"]["token"], "given-token-1")
        reply = yield self.ok(client, "user/refreshToken", accid="seller")
        new = reply["info"]["token"]
        self.assertNotEqual(new, "given-token-1")
        old = yield self.connect(server)
        yield self.assertFailure(old.auth("seller", token="given-token-1"), ServerError)
        fresh = yield self.connect(server)
        yield fresh.auth("seller", token=new)
        yield self.ok(client, "user/update", accid="seller", token="third-token")
        again = yield self.connect(server)
        yield again.auth("seller", password="third-token")
        yield self.refused(client, "user/refreshToken", 404, {"accid": "nobody"})
        yield self.refused(client, "user/create", 414, {"accid": "other", "token": "third-token"})

    @inlineCallbacks
    def test_block_and_unblock(self):
        server = self.start_server()
        client = yield self.api(server)
        token = (yield self.ok(client, "user/create", accid="u1"))["info"]["token"]
        yield self.ok(client, "user/block", accid="u1")
        blocked = yield self.connect(server)
        yield self.assertFailure(blocked.auth("u1", token=token), ServerError)
        yield self.ok(client, "user/unblock", accid="u1")
        unblocked = yield self.connect(server)
        yield unblocked.auth("u1", token=token)
        yield self.refused(client, "user/block", 404, {"accid": "nobody"})

    @inlineCallbacks
    def test_get_uinfos(self):
        server = self.start_server()
        client = yield self.api(server)
        yield self.ok(client, "user/create", accid="u1", name="One", icon="https://cdn.example/1.png", sign="hi", gender="1")
        reply = yield self.ok(client, "user/getUinfos", accids='["u1","nobody"]')
        self.assertEqual(reply["uinfos"], [{"accid": "u1", "name": "One", "icon": "https://cdn.example/1.png", "sign": "hi"}])
        self.assertEqual((yield server.profiles.get("u1"))["sex"], "1")
        yield self.refused(client, "user/create", 414, {"accid": "u2", "gender": "7"})
        self.assertIsNone((yield server.accounts.get_user("u2")))


class FriendTestsMixin(ServerApiMixin):
    @inlineCallbacks
    def users(self, server, client, *uids):
        tokens = {}
        for uid in uids:
            tokens[uid] = (yield self.ok(client, "user/create", accid=uid))["info"]["token"]
        return tokens

    @inlineCallbacks
    def test_direct_add_as_a_seed_001_client_sees_it(self):
        server = self.start_server()
        client = yield self.api(server)
        tokens = yield self.users(server, client, "buyer", "seller")
        seller = yield self.connect(server)
        yield seller.auth("seller", token=tokens["seller"])
        yield self.ok(client, "friend/add", accid="buyer", faccid="seller", type="1")
        _, push = yield seller.expect(T.IM_NOTIFY_ROSTER_ADD)
        self.assertEqual(push["frd"], "buyer")
        reply = yield self.ok(client, "friend/get", accid="seller")
        self.assertEqual([f["faccid"] for f in reply["friends"]], ["buyer"])
        self.assertTrue((yield server.roster.friends("buyer")))
        # Adding again changes nothing and is no error.
        yield self.ok(client, "friend/add", accid="seller", faccid="buyer", type="1")
        yield self.ok(client, "friend/delete", accid="buyer", faccid="seller")
        self.assertEqual((yield self.ok(client, "friend/get", accid="seller"))["friends"], [])
        yield self.refused(client, "friend/add", 404, {"accid": "buyer", "faccid": "nobody", "type": "1"})

    @inlineCallbacks
    def test_request_agree_and_refuse(self):
        server = self.start_server()
        client = yield self.api(server)
        tokens = yield self.users(server, client, "a", "b", "c")
        b = yield self.connect(server)
        yield b.auth("b", token=tokens["b"])
        yield self.ok(client, "friend/add", accid="a", faccid="b", type="2", msg="hello")
        _, request = yield b.expect(T.IM_ROSTER_ADD_REQ)
        self.assertEqual((request["from"], request["msg"]), ("a", "hello"))
        a = yield self.connect(server)
        yield a.auth("a", token=tokens["a"])
        yield self.ok(client, "friend/add", accid="b", faccid="a", type="3")
        _, answer = yield a.expect(T.IM_ROSTER_ADD_RESP)
        self.assertTrue(answer["accept"])
        self.assertEqual([f.fid for f in (yield server.roster.friends("a"))], ["b"])
        yield self.ok(client, "friend/add", accid="c", faccid="a", type="2")
        yield self.ok(client, "friend/add", accid="a", faccid="c", type="4")
        self.assertEqual([f.fid for f in (yield server.roster.friends("c"))], [])
        # Nothing left to agree to.
        yield self.refused(client, "friend/add", 404, {"accid": "a", "faccid": "c", "type": "3"})


class NoticeTestsMixin(FriendTestsMixin):
    @inlineCallbacks
    def test_live_on_the_long_connection_and_after_bind_on_the_socket(self):
        server = self.start_server()
        client = yield self.api(server)
        tokens = yield self.users(server, client, "shop", "buyer", "seller")
        buyer = yield self.connect(server)
        yield buyer.auth("buyer", token=tokens["buyer"])
        attach = '{"type":"shipped","order":"A-1","text":"已发货"}'
        yield self.ok(client, "msg/sendAttachMsg", **{"from": "shop", "msgtype": "0", "to": "buyer", "attach": attach})
        _, notice = yield buyer.expect(T.IM_NOTIFY_SYSTEM)
        self.assertEqual((notice["from"], notice["attach"], notice["type"], notice["to"]), ("shop", attach, "0", "buyer"))
        # Kept (save=2, the default) for the seller until it binds.
        yield self.ok(client, "msg/sendAttachMsg", **{"from": "shop", "msgtype": "0", "to": "seller", "attach": attach})
        # Online only (save=1): an offline seller never gets it.
        yield self.ok(client, "msg/sendAttachMsg",
                      **{"from": "shop", "msgtype": "0", "to": "seller", "attach": "gone", "save": "1"})
        sock = yield self.socket(server)
        yield sock.bind("seller", tokens["seller"])
        push = yield sock.expect("notify")
        self.assertEqual((push["from_user_id"], push["content"], push["sendto"], push["to_user_id"]),
                         ("shop", attach, "user", "seller"))
        yield sock.ping()
        self.assertEqual([p for p in sock.pushes if p.get("action") == "notify"], [])
        # Delivered once: a second bind finds nothing waiting.
        again = yield self.socket(server)
        yield again.bind("seller", tokens["seller"])
        yield again.ping()
        self.assertEqual([p for p in again.pushes if p.get("action") == "notify"], [])
        self.assertEqual((yield server.notices.pending("seller")), [])

    @inlineCallbacks
    def test_a_kept_notice_arriving_live_during_login_is_written_once(self):
        server = self.start_server()
        client = yield self.api(server)
        tokens = yield self.users(server, client, "shop", "buyer")
        yield self.ok(client, "msg/sendAttachMsg", **{"from": "shop", "msgtype": "0", "to": "buyer", "attach": "once"})
        original = server.messages.pending

        @inlineCallbacks
        def pending(*args, **kwargs):
            found = yield original(*args, **kwargs)
            # The same notice comes live (a resync's race) while what was missed is written.
            for event in found:
                if event.kind == events.NOTICE:
                    server.hub.deliver(["buyer"], event)
            return found

        self.patch(server.messages, "pending", pending)
        buyer = yield self.connect(server)
        yield buyer.auth("buyer", token=tokens["buyer"])
        yield buyer.expect(T.IM_NOTIFY_SYSTEM)
        yield buyer.ping()
        self.assertEqual(buyer.take(T.IM_NOTIFY_SYSTEM), [])

    @inlineCallbacks
    def test_team_notice_and_refusals(self):
        server = self.start_server()
        client = yield self.api(server)
        tokens = yield self.users(server, client, "owner", "m1")
        group = yield server.groups.create("owner", "team")
        yield server.store.groups.add_member(group.gid, "m1", 0, "", 1)
        m1 = yield self.connect(server)
        yield m1.auth("m1", token=tokens["m1"])
        yield self.ok(client, "msg/sendAttachMsg", **{"from": "owner", "msgtype": "1", "to": group.gid, "attach": "t"})
        _, notice = yield m1.expect(T.IM_NOTIFY_SYSTEM)
        self.assertEqual((notice["type"], notice["to"], notice["attach"]), ("1", group.gid, "t"))
        yield self.refused(client, "msg/sendAttachMsg", 404, {"from": "owner", "msgtype": "0", "to": "nobody", "attach": "x"})
        yield self.refused(client, "msg/sendAttachMsg", 404, {"from": "nobody", "msgtype": "0", "to": "m1", "attach": "x"})
        yield self.refused(client, "msg/sendAttachMsg", 404, {"from": "owner", "msgtype": "1", "to": "nogroup", "attach": "x"})


class UnreadTestsMixin(FriendTestsMixin):
    @inlineCallbacks
    def test_counts_follow_sends_reads_and_recalls(self):
        server = self.start_server()
        client = yield self.api(server)
        tokens = yield self.users(server, client, "buyer", "seller", "other")
        seller = yield self.connect(server)
        yield seller.auth("seller", token=tokens["seller"])
        other = yield self.connect(server)
        yield other.auth("other", token=tokens["other"])
        sent = []
        for i in range(4):
            ack = yield seller.send_message("buyer", f"s{i}", msgid=f"s{i}")
            sent.append(ack)
        yield other.send_message("buyer", "o0", msgid="o0")
        # One from the socket, one through the API too.
        sock = yield self.socket(server)
        yield sock.bind("seller", tokens["seller"])
        yield sock.sendmsg("from the socket", to_user_id="buyer", msgid="k0")
        yield self.ok(client, "msg/sendMsg", **{"from": "seller", "ope": "0", "to": "buyer", "type": "0", "body": '{"msg":"api"}'})

        @inlineCallbacks
        def counts():
            reply = yield self.ok(client, "msg/unreadCount", accid="buyer", peers='["seller","other","nobody"]')
            return reply["counts"]

        def from_rows():
            # Independently: unrecalled messages after the newest one read.
            with server.store.db.engine.connect() as conn:
                rows = conn.exec_driver_sql(
                    "SELECT sender, id, recalled_at FROM messages WHERE to_uid = 'buyer' ORDER BY id").all()
                read = conn.exec_driver_sql(
                    "SELECT m.sender, m.id FROM receipts r JOIN messages m ON m.id = r.message_id"
                    " WHERE r.uid = 'buyer' AND r.kind = 'read'").all()
            last = {}
            for sender, id_ in read:
                last[sender] = max(last.get(sender, 0), id_)
            expected = {"seller": 0, "other": 0, "nobody": 0}
            for sender, id_, recalled in rows:
                if recalled is None and id_ > last.get(sender, 0):
                    expected[sender] += 1
            return expected

        self.assertEqual((yield counts()), {"seller": 6, "other": 1, "nobody": 0})
        self.assertEqual((yield counts()), from_rows())
        buyer = yield self.connect(server)
        yield buyer.auth("buyer", token=tokens["buyer"])
        yield buyer.receipt("s1", to="seller")
        self.assertEqual((yield counts()), {"seller": 4, "other": 1, "nobody": 0})
        yield seller.recall("s3", to="buyer")
        self.assertEqual((yield counts()), {"seller": 3, "other": 1, "nobody": 0})
        self.assertEqual((yield counts()), from_rows())
        # A read receipt from the socket's user on the long connection is the same receipt.
        yield buyer.receipt("o0", to="other")
        yield seller.send_message("buyer", "s9", msgid="s9")
        yield buyer.receipt("s9", to="seller")
        self.assertEqual((yield counts()), {"seller": 0, "other": 0, "nobody": 0})
        self.assertEqual((yield counts()), from_rows())
        yield self.refused(client, "msg/unreadCount", 414, {"accid": "buyer", "peers": "seller"})


class TeamTestsMixin(FriendTestsMixin):
    @inlineCallbacks
    def test_teams_are_imd_groups(self):
        server = self.start_server()
        client = yield self.api(server)
        tokens = yield self.users(server, client, "owner", "m1", "m2", "m3")
        m1 = yield self.connect(server)
        yield m1.auth("m1", token=tokens["m1"])
        reply = yield self.ok(client, "team/create", tname="订单群", owner="owner", members='["m1","m2"]', msg="join")
        gid = reply["tid"]
        _, data = yield m1.expect(T.IM_NOTIFY_GROUP_DATA)
        self.assertEqual((data["gid"], data["gname"]), (gid, "订单群"))
        self.assertEqual(sorted((yield server.store.groups.member_ids(gid))), ["m1", "m2", "owner"])
        # magree=1: invited, as a seed-001 client is.
        m3 = yield self.connect(server)
        yield m3.auth("m3", token=tokens["m3"])
        yield self.ok(client, "team/add", tid=gid, owner="owner", members='["m3"]', magree="1")
        _, invite = yield m3.expect(T.IM_CHATROOM)
        self.assertEqual((invite["type"], invite["gid"]), ("0", gid))
        reply = yield self.ok(client, "team/query", tids=f'["{gid}","nothere"]', ope="1")
        [team] = reply["tinfos"]
        self.assertEqual((team["tid"], team["owner"], sorted(team["members"]), team["size"]), (gid, "owner", ["m1", "m2"], 3))
        yield self.refused(client, "team/kick", 403, {"tid": gid, "owner": "m1", "member": "m2"})
        yield self.ok(client, "team/kick", tid=gid, owner="owner", member="m2")
        _, left = yield m1.expect(T.IM_CHATROOM, lambda b: b["type"] == "2")
        self.assertEqual((left["from"], left["rid"]), ("m2", gid))
        yield self.refused(client, "team/remove", 403, {"tid": gid, "owner": "m1"})
        yield self.ok(client, "team/remove", tid=gid, owner="owner")
        yield m1.expect(T.IM_CHATROOM, lambda b: b["type"] == "2" and b["from"] == "m1")
        self.assertEqual((yield self.ok(client, "team/query", tids=f'["{gid}"]'))["tinfos"], [])
        yield self.refused(client, "team/add", 404, {"tid": gid, "owner": "owner", "members": '["m1"]'})
        yield self.refused(client, "team/create", 404, {"tname": "x", "owner": "nobody", "members": "[]"})


class RecallAndProfileTestsMixin(FriendTestsMixin):
    @inlineCallbacks
    def test_recall_through_the_api(self):
        server = self.start_server(messages={"recall_window": 120})
        client = yield self.api(server)
        tokens = yield self.users(server, client, "a", "b")
        b = yield self.connect(server)
        yield b.auth("b", token=tokens["b"])
        reply = yield self.ok(client, "msg/sendMsg", **{"from": "a", "ope": "0", "to": "b", "type": "0", "body": '{"msg":"oops"}'})
        message_id = reply["data"]["msgid"]
        _, live = yield b.expect(T.IM_MESSAGE)
        self.assertEqual(live["body"], "oops")
        yield self.refused(client, "msg/recall", 404, {"from": "b", "type": "7", "deleteMsgid": str(message_id)})
        yield self.ok(client, "msg/recall", **{"from": "a", "type": "7", "deleteMsgid": str(message_id), "to": "b"})
        _, recall = yield b.expect(T.IM_NOTIFY_RECALL)
        self.assertEqual((recall["from"], recall["msgid"]), ("a", live["msgid"]))
        self.assertIsNotNone((yield server.store.messages.get_by_id(message_id)).recalled_at)
        yield self.refused(client, "msg/recall", 414, {"from": "a", "type": "7", "deleteMsgid": "x"})

    @inlineCallbacks
    def test_recall_after_the_window_is_508(self):
        server = self.start_server(messages={"recall_window": 0})
        client = yield self.api(server)
        yield self.users(server, client, "a", "b")
        message = yield server.messages.send("a", "m1", "hi", to="b")
        # The window is 0 s: any message stored before now is too old.
        self.patch(server.messages, "_now", lambda: message.created_at + 1)
        yield self.refused(client, "msg/recall", 508, {"from": "a", "type": "7", "deleteMsgid": str(message.id)})

    @inlineCallbacks
    def test_update_uinfo(self):
        server = self.start_server()
        client = yield self.api(server)
        yield self.users(server, client, "a")
        yield self.ok(client, "user/updateUinfo", accid="a", name="Anna", sign="hello", icon="https://cdn.example/a.png",
                      email="a@example.com", gender="2", mobile="+852-12345678")
        reply = yield self.ok(client, "user/getUinfos", accids='["a"]')
        self.assertEqual(reply["uinfos"], [{"accid": "a", "name": "Anna", "icon": "https://cdn.example/a.png", "sign": "hello"}])
        profile = yield server.profiles.get("a")
        self.assertEqual((profile["email"], profile["sex"], profile["cellphone"]), ("a@example.com", "2", "+852-12345678"))
        yield self.refused(client, "user/updateUinfo", 414, {"accid": "a", "gender": "5"})
        yield self.refused(client, "user/updateUinfo", 404, {"accid": "nobody", "name": "x"})


class FuzzTests(ServerApiMixin, SQLiteBackend, unittest.TestCase):
    @inlineCallbacks
    def test_garbage_never_hurts(self):
        """Seeded random bodies on every call: a Yunxin code every time, never a 500."""
        rng = random.Random(20261201)
        server = self.start_server()
        client = yield self.api(server)
        yield self.ok(client, "user/create", accid="fixed")
        names = ["accid", "faccid", "type", "from", "to", "msgtype", "attach", "save", "option", "peers", "body",
                 "ope", "token", "name", "tid", "owner", "members", "tids", "deleteMsgid", "accids", "icon"]
        values = ["", "fixed", "0", "1", "2", "-1", "9" * 30, "[]", '["fixed"]', "{", "null", '{"msg":1}',
                  "\u0000", "ü" * 40, "%ff", "[" * 500, '{"route":"yes"}']
        from imd.channels.serverapi.routes import CALLS

        paths = sorted(CALLS)
        for _ in range(120):
            path = rng.choice(paths)
            if rng.random() < 0.2:
                body = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
                code, reply = yield client.call(path, body=body)
            else:
                params = {rng.choice(names): rng.choice(values) for _ in range(rng.randrange(6))}
                code, reply = yield client.call(path, params)
            self.assertEqual(code, 200, (path, reply))
            self.assertIn(reply["code"], (200, 403, 404, 414, 417, 508), (path, reply))
        self.assertEqual(self.flushLoggedErrors(), [])
        yield self.ok(client, "user/getUinfos", accids='["fixed"]')


class SQLiteServerApiTests(AuthTestsMixin, AccountTestsMixin, NoticeTestsMixin, UnreadTestsMixin, TeamTestsMixin,
                           RecallAndProfileTestsMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresServerApiTests(AuthTestsMixin, AccountTestsMixin, NoticeTestsMixin, UnreadTestsMixin, TeamTestsMixin,
                             RecallAndProfileTestsMixin, PostgresBackend, unittest.TestCase):
    pass
