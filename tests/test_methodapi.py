"""Seed 004's signed, encrypted method API over real HTTP."""

import json
import time
from urllib.parse import quote

from sqlalchemy import func, select
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from imd.channels.methodapi.signatures import SignatureGuard
from imd.channels.methodapi.crypto import encrypt
from imd.errors import BadSignature, InvalidField, ReplayedRequest, StaleRequest
from imd.channels.shared.signing import sign
from imd.store import schema
from tests.support import LongConnTestMixin, PostgresBackend, SQLiteBackend, make_config, start_server

KEY = b"2108a4c486350f3a"


class FakeClock:
    def __init__(self, now):
        self.now = now

    def seconds(self):
        return self.now


class SigningTests(unittest.TestCase):
    def test_seed_example(self):
        data = {"password": "123456", "telephone": "13244556677", "sms_code": "123456"}
        self.assertEqual(sign(data, "1495363260"), "05391105E5EB97BF6CC9DA9F7F939E4C")

    def test_guard(self):
        clock = FakeClock(1495363260)
        guard = SignatureGuard(300, clock)
        data = {"password": "123456", "telephone": "13244556677", "sms_code": "123456"}
        good = "05391105E5EB97BF6CC9DA9F7F939E4C"

        def refused(error, *args):
            self.failureResultOf(guard.check(*args), error)

        refused(BadSignature, data, "", 1495363260)
        refused(BadSignature, data, None, 1495363260)
        refused(BadSignature, data, good.replace("0", "1"), 1495363260)
        refused(BadSignature, dict(data, password="x"), good, 1495363260)
        refused(InvalidField, data, good, "soon")
        refused(InvalidField, data, good, True)
        clock.now += 301
        refused(StaleRequest, data, good, 1495363260)
        clock.now -= 301 * 2
        refused(StaleRequest, data, good, 1495363260)
        clock.now = 1495363260 + 10
        self.successResultOf(guard.check(data, good.lower(), "1495363260"))
        refused(ReplayedRequest, data, good, 1495363260)
        # Another method with the same data is not a replay.
        self.successResultOf(guard.check(data, good, 1495363260, "com.user.register"))
        # Once the window has passed, the sign is forgotten and the request is stale anyway.
        clock.now += 1000
        refused(StaleRequest, data, good, 1495363260)

    def test_shared_claim(self):
        """A request already claimed elsewhere (another instance) is a replay."""
        from twisted.internet.defer import succeed

        claims = set()

        def claim(key, ttl):
            first = key not in claims
            claims.add(key)
            return succeed(first)

        data = {"password": "123456", "telephone": "13244556677", "sms_code": "123456"}
        one = SignatureGuard(300, FakeClock(1495363260), claim)
        other = SignatureGuard(300, FakeClock(1495363260), claim)
        self.successResultOf(one.check(data, "05391105E5EB97BF6CC9DA9F7F939E4C", 1495363260))
        self.failureResultOf(other.check(data, "05391105E5EB97BF6CC9DA9F7F939E4C", 1495363260), ReplayedRequest)


class MethodApiTestsMixin(LongConnTestMixin):
    def start_server(self, **sections):
        sections.setdefault("sms", {"required": False})
        return LongConnTestMixin.start_server(self, **sections)

    def envelope(self, method, data, token=None, t=None, signature=None):
        if t is None:
            # A new _t per call: the same method with the same data twice in
            # one second is a replay, as seed 004 defines it.
            self._t = max(getattr(self, "_t", 0) + 1, int(time.time()) - 200)
            t = self._t
        env = {"method": method, "data": data, "_v": "1.0", "_t": t, "sign": signature or sign(data, str(t))}
        if token is not None:
            env["token"] = token
        return env

    @inlineCallbacks
    def call(self, server, method, data, token=None, encrypted=True, path="/", **kw):
        env = self.envelope(method, data, token, **kw)
        if encrypted:
            raw = b"request=" + quote(encrypt(KEY, json.dumps(env).encode()).decode(), safe="").encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
        else:
            raw, headers = json.dumps(env).encode(), {}
        code, body, _ = yield self.http(server, "POST", path, raw=raw, headers=headers)
        self.assertEqual(code, 200, body)
        return body

    @inlineCallbacks
    def register_login(self, server, telephone, password="123456"):
        reply = yield self.call(server, "com.user.register", {"telephone": telephone, "password": password})
        self.assertEqual(reply["status"], "1111", reply)
        reply = yield self.call(server, "com.user.login", {"telephone": telephone, "password": password})
        self.assertEqual(reply["status"], "1111", reply)
        return reply["data"]["user_id"], reply["data"]["token"]

    def count(self, server, table):
        with server.store.db.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(table)).scalar()

    @inlineCallbacks
    def test_register_and_login_encrypted_and_plain(self):
        server = self.start_server()
        uid, token = yield self.register_login(server, "13244556677")
        self.assertRegex(uid, r"^[0-9A-F]{32}$")
        reply = yield self.call(server, "com.user.login", {"telephone": "13244556677", "password": "123456"}, encrypted=False, path="/api")
        self.assertEqual(reply["data"]["user_id"], uid)
        reply = yield self.call(server, "com.user.login", {"telephone": "13244556677", "password": "654321"})
        self.assertEqual(reply["status"], "0000")
        self.assertEqual(reply["code"], "bad_credentials")
        self.assertTrue(reply["info"])
        reply = yield self.call(server, "com.user.register", {"telephone": "13244556677", "password": "123456"})
        self.assertEqual((reply["status"], reply["code"]), ("0000", "conflict"))

    @inlineCallbacks
    def test_sms_code_required(self):
        server = self.start_server(sms={"required": True})
        codes = []

        class Gateway:
            def send(self, telephone, code):
                from twisted.internet.defer import succeed

                codes.append(code)
                return succeed(None)

        server.accounts._gateway = Gateway()
        data = {"telephone": "13800000002", "password": "123456"}
        reply = yield self.call(server, "com.user.register", data)
        self.assertEqual((reply["status"], reply["code"]), ("0000", "bad_sms_code"))
        self.assertEqual(self.count(server, schema.users), 0)
        reply = yield self.call(server, "com.user.smsCode", {"telephone": "13800000002"})
        self.assertEqual(reply, {"status": "1111", "data": "success"})
        reply = yield self.call(server, "com.user.register", dict(data, sms_code=codes[-1]))
        self.assertEqual(reply["status"], "1111", reply)
        reply = yield self.call(server, "com.user.login", data)
        self.assertEqual((reply["status"], reply["code"]), ("0000", "bad_sms_code"))
        # docs/methodapi.rst's flow: the code of the registration serves the
        # login that follows it, once.
        reply = yield self.call(server, "com.user.login", dict(data, sms_code=codes[-1]))
        self.assertEqual(reply["status"], "1111", reply)
        reply = yield self.call(server, "com.user.login", dict(data, sms_code=codes[-1]))
        self.assertEqual((reply["status"], reply["code"]), ("0000", "bad_sms_code"))

    @inlineCallbacks
    def test_sms_code_ignored_when_not_required(self):
        # A seed-004 client sends sms_code because the seed marks it mandatory.
        server = self.start_server(sms={"required": False})
        data = {"telephone": "13800000003", "password": "123456", "sms_code": "000000"}
        reply = yield self.call(server, "com.user.register", data)
        self.assertEqual(reply["status"], "1111", reply)
        reply = yield self.call(server, "com.user.login", data)
        self.assertEqual(reply["status"], "1111", reply)
        reply = yield self.call(server, "com.user.login", dict(data, password="654321"))
        self.assertEqual((reply["status"], reply["code"]), ("0000", "bad_credentials"))

    @inlineCallbacks
    def test_refused_requests_write_nothing(self):
        server = self.start_server()
        data = {"telephone": "13900000000", "password": "123456"}
        t = int(time.time())
        cases = [
            ("unsigned", dict(signature=""), "bad_sign"),
            ("badly signed", dict(signature="0" * 32), "bad_sign"),
            ("stale", dict(t=t - 3600), "stale_request"),
            ("future", dict(t=t + 3600), "stale_request"),
        ]
        for label, kw, code in cases:
            env = self.envelope("com.user.register", data, **kw)
            if "signature" in kw and kw["signature"] == "":
                del env["sign"]
            raw = json.dumps(env).encode()
            status, reply, _ = yield self.http(server, "POST", "/", raw=raw)
            self.assertEqual((reply["status"], reply["code"]), ("0000", code), label)
        self.assertEqual(self.count(server, schema.users), 0)
        # A replay of a good request is refused and writes nothing more.
        env = self.envelope("com.user.register", data)
        _, reply, _ = yield self.http(server, "POST", "/", raw=json.dumps(env).encode())
        self.assertEqual(reply["status"], "1111")
        _, reply, _ = yield self.http(server, "POST", "/", raw=json.dumps(env).encode())
        self.assertEqual((reply["status"], reply["code"]), ("0000", "replayed_request"))
        self.assertEqual(self.count(server, schema.users), 1)

    @inlineCallbacks
    def test_replay_after_a_restart_is_refused(self):
        # Without Redis the signatures seen live in the database: a restart
        # within the window does not forget them.
        url = self.database_url()
        first = start_server(self, make_config(url, sms={"required": False}))
        env = self.envelope("com.user.register", {"telephone": "13244556677", "password": "123456"})
        _, reply, _ = yield self.http(first, "POST", "/", raw=json.dumps(env).encode())
        self.assertEqual(reply["status"], "1111", reply)
        yield first.service.stopService()
        second = start_server(self, make_config(url, sms={"required": False}))
        _, reply, _ = yield self.http(second, "POST", "/", raw=json.dumps(env).encode())
        self.assertEqual((reply["status"], reply["code"]), ("0000", "replayed_request"))
        env = self.envelope("com.user.login", {"telephone": "13244556677", "password": "123456"})
        _, reply, _ = yield self.http(second, "POST", "/", raw=json.dumps(env).encode())
        self.assertEqual(reply["status"], "1111", reply)

    @inlineCallbacks
    def test_garbage_bodies(self):
        server = self.start_server()
        bodies = [
            b"", b"garbage", b"request=", b"request=!!!notbase64", b"request=" + b"QUJD",
            b"request=" + quote(encrypt(b"0" * 16, b'{"method":"x"}').decode(), safe="").encode(),
            b"request=" + quote(encrypt(KEY, b"[1,2]").decode(), safe="").encode(),
            b"{", b"[1]", b'{"method": 5}', b'{"method": "com.user.nope", "data": {}}',
            b'{"method": "com.user.login", "data": "not json"}', b'{"method": "com.user.login", "data": [1]}',
            b"\xff\xfe\x00", b"{" * 5000,
        ]
        for raw in bodies:
            code, reply, _ = yield self.http(server, "POST", "/", raw=raw, headers={"Content-Type": "application/x-www-form-urlencoded"})
            self.assertEqual(code, 200, raw)
            self.assertEqual(reply["status"], "0000", raw)
            self.assertTrue(reply["info"])
        code, _, _ = yield self.http(server, "GET", "/healthz")
        self.assertEqual(code, 200)

    @inlineCallbacks
    def test_token_and_user_id(self):
        server = self.start_server()
        uid, token = yield self.register_login(server, "13100000001")
        reply = yield self.call(server, "com.user.getFriends", {"user_id": uid})
        self.assertEqual((reply["status"], reply["code"]), ("0000", "invalid_token"))
        reply = yield self.call(server, "com.user.getFriends", {"user_id": uid, "token": token})
        self.assertEqual(reply, {"status": "1111", "data": []})
        reply = yield self.call(server, "com.user.getFriends", {"user_id": uid}, token=token)
        self.assertEqual(reply["status"], "1111")
        reply = yield self.call(server, "com.user.getFriends", {"user_id": "SOMEONEELSE"}, token=token)
        self.assertEqual((reply["status"], reply["code"]), ("0000", "forbidden"))

    @inlineCallbacks
    def test_friends_flow(self):
        server = self.start_server()
        a, ta = yield self.register_login(server, "13100000001")
        b, tb = yield self.register_login(server, "13100000002")
        reply = yield self.call(server, "com.user.addfriend", {"opt": "addMsg", "user_id": a, "mobile": "13100000002"}, token=ta)
        self.assertEqual(reply, {"status": "1111", "data": "success"})
        reply = yield self.call(server, "com.user.addfriend", {"opt": "addMsg", "user_id": a, "mobile": "13999999999"}, token=ta)
        self.assertEqual((reply["status"], reply["code"]), ("0000", "not_found"))
        reply = yield self.call(server, "com.user.addfriend", {"opt": "browseMsg", "user_id": b, "sender": a}, token=tb)
        self.assertEqual(reply["status"], "1111", reply)
        pending = yield server.roster.pending_requests(b)
        self.assertEqual(pending, [])
        reply = yield self.call(server, "com.user.addfriend", {"opt": "agreeMsg", "user_id": b, "sender": a}, token=tb)
        self.assertEqual(reply["status"], "1111", reply)
        reply = yield self.call(server, "com.user.getFriends", {"user_id": a}, token=ta)
        self.assertEqual(reply["data"], [{"friend_id": b, "friend_name": b}])
        reply = yield self.call(server, "com.user.addfriend", {"opt": "agreeMsg", "user_id": b, "sender": a}, token=tb)
        self.assertEqual((reply["status"], reply["code"]), ("0000", "not_found"))
        reply = yield self.call(server, "com.user.addfriend", {"opt": "dance", "user_id": b}, token=tb)
        self.assertEqual(reply["status"], "0000")

    @inlineCallbacks
    def test_reject_friend(self):
        server = self.start_server()
        a, ta = yield self.register_login(server, "13100000001")
        b, tb = yield self.register_login(server, "13100000002")
        yield self.call(server, "com.user.addfriend", {"opt": "addMsg", "mobile": "13100000002"}, token=ta)
        reply = yield self.call(server, "com.user.addfriend", {"opt": "repulseMsg", "sender": a}, token=tb)
        self.assertEqual(reply["status"], "1111")
        reply = yield self.call(server, "com.user.getFriends", {}, token=tb)
        self.assertEqual(reply["data"], [])

    @inlineCallbacks
    def test_groups_flow(self):
        server = self.start_server()
        a, ta = yield self.register_login(server, "13100000001")
        b, tb = yield self.register_login(server, "13100000002")
        c, tc = yield self.register_login(server, "13100000003")
        reply = yield self.call(server, "com.user.createGroup", {"user_id": a}, token=ta)
        gid = reply["data"]["group_id"]
        reply = yield self.call(server, "com.user.addGroup", {"opt": "addMsg", "user_id": a, "group_id": gid, "friends": json.dumps([b, c])}, token=ta)
        self.assertEqual(reply["status"], "1111", reply)
        reply = yield self.call(server, "com.user.addGroup", {"opt": "addMsg", "group_id": gid, "friends": "[\"NOBODY\"]"}, token=ta)
        self.assertEqual((reply["status"], reply["code"]), ("0000", "not_found"))
        reply = yield self.call(server, "com.user.addGroup", {"opt": "browseMsg", "group_id": gid, "friend_id": a}, token=tb)
        self.assertEqual(reply["status"], "1111", reply)
        reply = yield self.call(server, "com.user.addGroup", {"opt": "repulseMsg", "group_id": gid, "friend_id": a}, token=tc)
        self.assertEqual(reply["status"], "1111", reply)
        reply = yield self.call(server, "com.user.getGroups", {}, token=ta)
        self.assertEqual(list(reply["data"]), [gid])
        self.assertEqual([m["user_id"] for m in reply["data"][gid]], [a])
        self.assertEqual(reply["data"][gid][0]["founder"], a)
        # A non-member cannot invite.
        reply = yield self.call(server, "com.user.addGroup", {"opt": "addMsg", "group_id": gid, "friends": [a]}, token=tc)
        self.assertEqual(reply["status"], "0000")

    @inlineCallbacks
    def test_friend_request_reaches_long_connection_user(self):
        server = self.start_server()
        a, ta = yield self.register_login(server, "13100000001")
        yield server.accounts.register("rose", "secret1", telephone="13100000009")
        rose = yield self.connect(server)
        yield rose.auth("rose", password="secret1")
        yield self.call(server, "com.user.addfriend", {"opt": "addMsg", "mobile": "13100000009"}, token=ta)
        _, request = yield rose.expect(T.IM_ROSTER_ADD_REQ)
        self.assertEqual(request["from"], a)
        yield rose.answer_friend(a, request["msgid"], True)
        reply = yield self.call(server, "com.user.getFriends", {}, token=ta)
        self.assertEqual([f["friend_id"] for f in reply["data"]], ["rose"])


class SQLiteMethodApiTests(MethodApiTestsMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresMethodApiTests(MethodApiTestsMixin, PostgresBackend, unittest.TestCase):
    pass
