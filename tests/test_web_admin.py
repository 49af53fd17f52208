"""The admin console's API at /admin/api/ over real HTTP, on each backend, and the web pages."""

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger
from twisted.trial import unittest

from imd.channels.longconn import msgtypes as T
from tests.support import LongConnTestMixin, PostgresBackend, SQLiteBackend


class AdminTestsMixin(LongConnTestMixin):
    @inlineCallbacks
    def setUp(self):
        self.server = self.start_server()
        yield self.server.accounts.register("root", "secret1")
        yield self.server.accounts.set_admin("root", True)
        yield self.server.accounts.register("alice", "secret1")
        host, port = self.server.address("http")
        self.origin = f"http://{host}:{port}"
        self.cookie = yield self.admin_login("root")

    @inlineCallbacks
    def admin_login(self, uid, password="secret1"):
        code, body, response = yield self.http(
            self.server, "POST", "/admin/api/login", {"uid": uid, "password": password}, headers={"Origin": self.origin}
        )
        self.assertEqual(code, 200, body)
        [cookie] = response.headers.getRawHeaders(b"set-cookie")
        return cookie

    def call(self, method, path, body=None, cookie=None, origin=True):
        headers = {"Cookie": (cookie or self.cookie).split(b";")[0]}
        if origin:
            headers["Origin"] = self.origin
        return self.http(self.server, method, "/admin/api/" + path, body, headers=headers)

    @inlineCallbacks
    def ok(self, method, path, body=None, code=200):
        got, answer, _ = yield self.call(method, path, body)
        self.assertEqual(got, code, answer)
        return answer

    # -- the session and its guards ------------------------------------------

    def test_cookie_is_http_only_and_same_site_strict(self):
        attributes = [a.strip().lower() for a in self.cookie.split(b";")]
        self.assertTrue(attributes[0].startswith(b"imd_admin="))
        self.assertIn(b"httponly", attributes)
        self.assertIn(b"samesite=strict", attributes)
        self.assertIn(b"path=/admin/", attributes)

    @inlineCallbacks
    def test_non_admin_refused(self):
        code, body, response = yield self.http(
            self.server, "POST", "/admin/api/login", {"uid": "alice", "password": "secret1"},
            headers={"Origin": self.origin},
        )
        self.assertEqual((code, body["code"]), (403, "forbidden"))
        self.assertIsNone(response.headers.getRawHeaders(b"set-cookie"))
        # A chat user's own token, as a cookie, is no key either.
        token = yield self.login(self.server, "alice", "secret1")
        for method, path in (("GET", "users"), ("POST", "sessions/kick")):
            code, body, _ = yield self.call(method, path, {"uid": "root"}, cookie=b"imd_admin=" + token.encode())
            self.assertEqual(code, 403, path)

    @inlineCallbacks
    def test_without_a_session(self):
        for cookie in (b"x=1", b"imd_admin=forged"):
            code, body, _ = yield self.call("GET", "users", cookie=cookie)
            self.assertEqual(code, 401, body)

    @inlineCallbacks
    def test_state_changes_need_the_page_origin(self):
        code, body, _ = yield self.call("POST", "users", {"uid": "eve", "password": "secret1"}, origin=False)
        self.assertEqual((code, body["code"]), (403, "forbidden"))
        headers = {"Cookie": self.cookie.split(b";")[0], "Origin": "https://evil.example"}
        code, body, _ = yield self.http(self.server, "POST", "/admin/api/users", {"uid": "eve", "password": "secret1"},
                                        headers=headers)
        self.assertEqual(code, 403)
        code, body, _ = yield self.http(self.server, "POST", "/admin/api/login", {"uid": "root", "password": "secret1"},
                                        headers={"Origin": "https://evil.example"})
        self.assertEqual(code, 403)
        user = yield self.server.accounts.get_user("eve")
        self.assertIsNone(user)

    @inlineCallbacks
    def test_logout_ends_the_session(self):
        yield self.ok("POST", "logout", {})
        code, _, _ = yield self.call("GET", "me")
        self.assertEqual(code, 401)

    @inlineCallbacks
    def test_bad_input_is_a_clear_error(self):
        for method, path, raw in (
            ("POST", "users", b"{not json"),
            ("POST", "users", b"[1]"),
            ("POST", "outbox/retry", b'{"ids": "all"}'),
            ("POST", "outbox/drop", b'{"ids": [1.5]}'),
            ("POST", "users/alice/disabled", b'{"disabled": "yes"}'),
            ("POST", "sessions/kick", b'{"uid": "bad uid!"}'),
            ("POST", "users/alice/password", b'{"password": ""}'),
        ):
            headers = {"Cookie": self.cookie.split(b";")[0], "Origin": self.origin}
            code, body, _ = yield self.http(self.server, method, "/admin/api/" + path, raw=raw, headers=headers)
            self.assertEqual(code, 400, (path, raw, body))
            self.assertTrue(body["err"])
        code, body, _ = yield self.call("GET", "nope")
        self.assertEqual((code, body["code"]), (404, "not_found"))

    # -- each action -----------------------------------------------------------

    @inlineCallbacks
    def test_sessions_listed_and_kicked(self):
        phone = yield self.user(self.server, "alice", res="phone", register=False)
        desk = yield self.user(self.server, "alice", res="desk", register=False)
        answer = yield self.ok("GET", "sessions")
        self.assertEqual(answer["counts"], {"longconn": 2})
        self.assertEqual(sorted(s["resource"] for s in answer["sessions"]), ["desk", "phone"])
        answer = yield self.ok("POST", "sessions/kick", {"uid": "alice", "channel": "longconn", "resource": "phone"})
        self.assertEqual(answer["kicked"], 1)
        _, kick = yield phone.expect(T.IM_KICK)
        self.assertEqual(kick["reason"], "kicked by an administrator")
        yield phone.closed
        answer = yield self.ok("POST", "sessions/kick", {"uid": "alice"})
        self.assertEqual(answer["kicked"], 1)
        yield desk.expect(T.IM_KICK)
        answer = yield self.ok("GET", "sessions")
        self.assertEqual(answer["sessions"], [])

    @inlineCallbacks
    def test_users_created_disabled_and_reset(self):
        made = yield self.ok("POST", "users", {"uid": "carol", "password": "secret1", "name": "Carol"}, 201)
        self.assertEqual((made["uid"], made["name"], made["admin"], made["disabled"]), ("carol", "Carol", False, False))
        code, body, _ = yield self.call("POST", "users", {"uid": "carol", "password": "secret1"})
        self.assertEqual(code, 409)
        listed = yield self.ok("GET", "users")
        self.assertEqual([u["uid"] for u in listed["users"]], ["alice", "carol", "root"])
        self.assertTrue([u for u in listed["users"] if u["uid"] == "root"][0]["admin"])
        client = yield self.user(self.server, "carol", register=False)
        yield self.ok("POST", "users/carol/disabled", {"disabled": True})
        yield client.expect(T.IM_KICK)
        code, _, _ = yield self.http(self.server, "POST", "/auth/login", {"uid": "carol", "password": "secret1"})
        self.assertEqual(code, 401)
        yield self.ok("POST", "users/carol/disabled", {"disabled": False})
        yield self.ok("POST", "users/carol/password", {"password": "another1"})
        token = yield self.login(self.server, "carol", "another1")
        self.assertTrue(token)
        code, _, _ = yield self.call("POST", "users/nobody/disabled", {"disabled": True})
        self.assertEqual(code, 404)
        code, _, _ = yield self.call("POST", "users/root/disabled", {"disabled": True})
        self.assertEqual(code, 400)
        made = yield self.ok("POST", "users", {"uid": "dave", "password": "secret1", "admin": True}, 201)
        self.assertTrue(made["admin"])

    @inlineCallbacks
    def test_groups_listed(self):
        group = yield self.server.groups.create("alice", "team", 1, True)
        answer = yield self.ok("GET", "groups")
        self.assertEqual(answer["groups"], [
            {"gid": group.gid, "name": "team", "creator": "alice", "members": 1, "created_at": group.created_at}
        ])

    @inlineCallbacks
    def test_apps_created_listed_and_removed(self):
        made = yield self.ok("POST", "apps", {"name": "shop"}, 201)
        self.assertTrue(made["app_key"] and made["app_secret"])
        listed = yield self.ok("GET", "apps")
        self.assertEqual([(a["name"], a["app_key"]) for a in listed["apps"]], [("shop", made["app_key"])])
        self.assertNotIn("app_secret", listed["apps"][0])
        yield self.ok("POST", "apps/shop/remove", {})
        listed = yield self.ok("GET", "apps")
        self.assertEqual(listed["apps"], [])
        code, _, _ = yield self.call("POST", "apps/shop/remove", {})
        self.assertEqual(code, 404)

    @inlineCallbacks
    def test_outbox_depth_retry_and_drop(self):
        outbox = self.server.store.outbox
        for n in range(3):
            yield outbox.add("message", {"n": n}, 1000 + n)
        rows = yield outbox.due(10**13)
        for row in rows[:2]:
            yield outbox.failed(row.id, "test", "receiver down", 10**13, 2000)
        answer = yield self.ok("GET", "outbox")
        self.assertEqual((answer["depth"], answer["dead"]), (1, 2))
        dead = [r["id"] for r in answer["rows"] if r["dead"]]
        self.assertEqual(len(dead), 2)
        self.assertEqual([r["last_error"] for r in answer["rows"] if r["dead"]], ["receiver down"] * 2)
        answer = yield self.ok("POST", "outbox/retry", {"ids": [dead[0]]})
        self.assertEqual(answer["retried"], 1)
        answer = yield self.ok("POST", "outbox/drop", {"ids": None})
        self.assertEqual(answer["dropped"], 1)
        answer = yield self.ok("GET", "outbox")
        self.assertEqual((answer["depth"], answer["dead"]), (2, 0))

    @inlineCallbacks
    def test_log_tail(self):
        Logger(namespace="imd.test").info("a line for the console {n}", n=42)
        answer = yield self.ok("GET", "log")
        self.assertIn("a line for the console 42", [line["text"] for line in answer["lines"]])


class SQLiteAdminTests(AdminTestsMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresAdminTests(AdminTestsMixin, PostgresBackend, unittest.TestCase):
    pass


class PagesTests(LongConnTestMixin, SQLiteBackend, unittest.TestCase):
    @inlineCallbacks
    def test_pages_served_with_their_headers(self):
        server = self.start_server()
        for path, kind in (("/", b"text/html"), ("/admin/", b"text/html"), ("/static/chat.js", b"text/javascript"),
                           ("/static/chat.css", b"text/css")):
            code, body, response = yield self.http(server, "GET", path)
            self.assertEqual(code, 200, path)
            headers = response.headers
            self.assertTrue(headers.getRawHeaders(b"content-type")[0].startswith(kind), path)
            self.assertIn(b"frame-ancestors 'none'", headers.getRawHeaders(b"content-security-policy")[0])
            self.assertEqual(headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"])
        for path in ("/static/nope.js", "/static/..%2fadmin.py", "/static/"):
            code, body, _ = yield self.http(server, "GET", path)
            self.assertEqual(code, 404, path)
        # POST / is still the method API's.
        code, body, _ = yield self.http(server, "POST", "/", raw=b"garbage")
        self.assertEqual(body["status"], "0000")
