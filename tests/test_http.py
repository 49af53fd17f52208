"""The HTTP root over a real socket: health, login, errors, metrics."""


from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.support import PostgresBackend, ServerTestMixin, SQLiteBackend, make_config, start_server


class RecordingGateway:
    def __init__(self):
        self.sent = []

    def send(self, telephone, code):
        from twisted.internet.defer import succeed

        self.sent.append((telephone, code))
        return succeed(None)


class HttpTestsMixin(ServerTestMixin):
    @inlineCallbacks
    def test_healthz(self):
        server = self.start_server()
        code, body, _ = yield self.http(server, "GET", "/healthz")
        self.assertEqual(code, 200)
        self.assertEqual(body["status"], "ok")
        self.assertEqual(body["store"]["status"], "ok")
        self.assertEqual(body["store"]["backend"], self.backend)

    @inlineCallbacks
    def test_login(self):
        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        code, body, _ = yield self.http(
            server, "POST", "/auth/login", {"uid": "alice", "password": "secret1"}
        )
        self.assertEqual(code, 200, body)
        self.assertEqual(body["uid"], "alice")
        self.assertEqual(body["expires_in"], 86400)
        code, who, _ = yield self.http(server, "GET", "/auth/whoami", token=body["token"])
        self.assertEqual((code, who), (200, {"uid": "alice"}))

    @inlineCallbacks
    def test_wrong_password(self):
        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        code, body, _ = yield self.http(
            server, "POST", "/auth/login", {"uid": "alice", "password": "wrong!"}
        )
        self.assertEqual(code, 401)
        self.assertEqual(body["type"], "error")
        self.assertEqual(body["code"], "bad_credentials")
        self.assertTrue(body["err"])

    @inlineCallbacks
    def test_unknown_user_same_answer_as_wrong_password(self):
        server = self.start_server()
        code, body, _ = yield self.http(
            server, "POST", "/auth/login", {"uid": "nobody", "password": "secret1"}
        )
        self.assertEqual((code, body["code"]), (401, "bad_credentials"))

    @inlineCallbacks
    def test_login_by_sms_code(self):
        server = self.start_server()
        gateway = server.accounts._gateway = RecordingGateway()
        yield server.accounts.register("bob", None, telephone="13800000001")
        code, body, _ = yield self.http(server, "POST", "/auth/sms_code", {"telephone": "13800000001"})
        self.assertEqual((code, body), (200, {"sent": True}))
        [(telephone, sms_code)] = gateway.sent
        code, body, _ = yield self.http(
            server, "POST", "/auth/login", {"telephone": telephone, "sms_code": "000000" if sms_code != "000000" else "111111"}
        )
        self.assertEqual((code, body["code"]), (401, "bad_sms_code"))
        code, body, _ = yield self.http(server, "POST", "/auth/sms_code", {"telephone": "13800000001"})
        self.assertEqual((code, body["code"]), (429, "rate_limited"))
        code, body, _ = yield self.http(
            server, "POST", "/auth/login", {"telephone": telephone, "sms_code": sms_code}
        )
        self.assertEqual((code, body["uid"]), (200, "bob"))
        # The code is used up.
        code, body, _ = yield self.http(
            server, "POST", "/auth/login", {"telephone": telephone, "sms_code": sms_code}
        )
        self.assertEqual((code, body["code"]), (401, "bad_sms_code"))

    @inlineCallbacks
    def test_logout_revokes(self):
        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        token = yield self.login(server, "alice", "secret1")
        code, body, _ = yield self.http(server, "POST", "/auth/logout", token=token)
        self.assertEqual((code, body), (200, {"revoked": True}))
        code, body, _ = yield self.http(server, "GET", "/auth/whoami", token=token)
        self.assertEqual((code, body["code"]), (401, "invalid_token"))

    @inlineCallbacks
    def test_change_password(self):
        server = self.start_server()
        yield server.accounts.register("alice", "secret1")
        token = yield self.login(server, "alice", "secret1")
        other = yield self.login(server, "alice", "secret1")
        code, body, _ = yield self.http(
            server, "POST", "/auth/password", {"old": "nope!!", "new": "secret2"}, token=token
        )
        self.assertEqual((code, body["code"]), (401, "bad_credentials"))
        code, body, _ = yield self.http(
            server, "POST", "/auth/password", {"old": "secret1", "new": "secret2"}, token=token
        )
        self.assertEqual(code, 200, body)
        code, _, _ = yield self.http(server, "GET", "/auth/whoami", token=token)
        self.assertEqual(code, 200)
        code, _, _ = yield self.http(server, "GET", "/auth/whoami", token=other)
        self.assertEqual(code, 401)
        yield self.login(server, "alice", "secret2")

    @inlineCallbacks
    def test_missing_and_malformed_authorization(self):
        server = self.start_server()
        code, body, _ = yield self.http(server, "GET", "/auth/whoami")
        self.assertEqual((code, body["code"]), (401, "unauthenticated"))
        for header in ("Basic abc", "Bearer ", "Bearer " + "x" * 300, "Bearer \xff\xfe"):
            code, body, _ = yield self.http(
                server, "GET", "/auth/whoami", headers={"Authorization": header.encode("latin-1")}
            )
            self.assertEqual(code, 401, header)
            self.assertEqual(body["type"], "error")

    @inlineCallbacks
    def test_unknown_path_is_json_404(self):
        server = self.start_server()
        for path in ("/nope", "/auth/login/extra", "/" + "a" * 5000):
            code, body, response = yield self.http(server, "GET", path)
            self.assertEqual(code, 404, path)
            self.assertEqual(body["code"], "not_found")
            self.assertIn(b"application/json", response.headers.getRawHeaders(b"content-type")[0])
        code, body, _ = yield self.http(server, "GET", "/%ff%fe")
        self.assertEqual((code, body["code"]), (400, "bad_request"))

    @inlineCallbacks
    def test_wrong_method_is_json_405(self):
        server = self.start_server()
        code, body, _ = yield self.http(server, "GET", "/auth/login")
        self.assertEqual((code, body["code"]), (405, "method_not_allowed"))

    @inlineCallbacks
    def test_hostile_bodies(self):
        server = self.start_server()
        bad = [
            b"{",
            b"\xff\xfe\x00garbage",
            b"[1, 2, 3]",
            b'"a string"',
            b'{"uid": ["x"], "password": {"a": 1}}',
            b'{"uid": null, "password": null}',
            b'{"uid": 1e400, "password": 5}',
            b"[" * 10000,
        ]
        for raw in bad:
            code, body, _ = yield self.http(server, "POST", "/auth/login", raw=raw)
            self.assertIn(code, (400, 401), raw[:20])
            self.assertEqual(body["type"], "error")
        code, body, _ = yield self.http(server, "POST", "/auth/login", raw=b"{}")
        self.assertEqual((code, body["code"]), (400, "bad_request"))
        # The server is still there for everyone else.
        code, _, _ = yield self.http(server, "GET", "/healthz")
        self.assertEqual(code, 200)

    @inlineCallbacks
    def test_oversized_body(self):
        server = self.start_server(http={"max_body": 1024})
        raw = b'{"uid": "' + b"a" * 2000 + b'", "password": "x"}'
        code, body, _ = yield self.http(server, "POST", "/auth/login", raw=raw)
        self.assertEqual((code, body["code"]), (413, "too_large"))

    @inlineCallbacks
    def metrics(self, server) -> str:
        code, text, _ = yield self.http(server, "GET", "/metrics")
        self.assertEqual(code, 200)
        return text.decode()

    @inlineCallbacks
    def test_metrics(self):
        server = self.start_server()
        yield self.http(server, "GET", "/nope")
        yield self.http(server, "GET", "/healthz")
        text = yield self.metrics(server)
        self.assertRegex(text, r'imd_errors_total\{channel="native",code="not_found"\} 1\.0')
        self.assertRegex(text, r'imd_store_seconds_count\{op="ping"\} [1-9]')
        self.assertIn("imd_messages", text)
        # Requests by route pattern and status, never by raw path.
        self.assertIn('imd_http_requests_total{route="/healthz",status="200"} 1.0', text)
        self.assertIn('imd_http_requests_total{route="native:unmatched",status="404"} 1.0', text)
        self.assertNotIn('route="/nope"', text)
        # The process: memory, CPU, open files.
        for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                     "process_max_fds", "process_start_time_seconds", "python_info"):
            self.assertRegex(text, rf"(?m)^{name}(\{{.*\}})? ", name)
        # No TCP channel is served here, so none has a series.
        self.assertNotIn("imd_sessions{", text)
        self.assertNotIn("imd_connections_opened_total{", text)

    @inlineCallbacks
    def test_metrics_of_logins_connections_and_routes(self):
        from imd.channels.longconn.client import connect
        from twisted.internet import reactor

        server = self.start_server(longconn={"endpoint": "tcp:0:interface=127.0.0.1"})
        yield server.accounts.register("alice", "secret1")
        text = yield self.metrics(server)
        self.assertIn('imd_sessions{channel="longconn"} 0.0', text)
        self.assertIn('imd_connections_opened_total{channel="longconn"} 0.0', text)
        for channel in ("socket", "xmpp"):
            self.assertNotIn(f'channel="{channel}"', text)

        code, _, _ = yield self.http(server, "POST", "/auth/login", {"uid": "alice", "password": "wrong12"})
        self.assertEqual(code, 401)
        code, body, _ = yield self.http(server, "POST", "/auth/login", {"uid": "alice", "password": "secret1"})
        self.assertEqual(code, 200)
        yield self.http(server, "POST", "/qid/QID_IM_GET_OFFLINE_MSG", {}, token=body["token"])
        yield self.http(server, "POST", "/qid/QID_NO_SUCH_THING", {}, token=body["token"])
        client = yield connect(reactor, *server.address("longconn"))
        yield client.auth("alice", token=body["token"])
        text = yield self.metrics(server)
        self.assertIn('imd_sessions{channel="longconn"} 1.0', text)
        self.assertIn('imd_connections_opened_total{channel="longconn"} 1.0', text)
        self.assertIn('imd_connections_closed_total{channel="longconn"} 0.0', text)
        self.assertIn('imd_logins_failed_total{path="password"} 1.0', text)
        self.assertIn('imd_logins_total{path="password"} 1.0', text)
        self.assertIn('imd_logins_total{path="token"} 1.0', text)
        self.assertIn('imd_http_requests_total{route="/auth/login",status="401"} 1.0', text)
        self.assertIn('imd_http_requests_total{route="/auth/login",status="200"} 1.0', text)
        self.assertIn('imd_http_requests_total{route="/qid/<string:name>",status="200"} 1.0', text)
        self.assertIn('imd_http_requests_total{route="/qid/<string:name>",status="404"} 1.0', text)
        yield client.close()
        text = yield self.metrics(server)
        self.assertIn('imd_connections_closed_total{channel="longconn"} 1.0', text)
        self.assertIn('imd_sessions{channel="longconn"} 0.0', text)


class BodyCapTests(ServerTestMixin, SQLiteBackend, unittest.TestCase):
    """A body over every route's limit is refused before it is stored."""

    def raw(self, server, data):
        from twisted.internet import protocol, reactor
        from twisted.internet.defer import Deferred
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        class Collect(protocol.Protocol):
            def __init__(self):
                self.data = b""
                self.done = Deferred()

            def dataReceived(self, data):
                self.data += data

            def connectionLost(self, reason):
                self.done.callback(self.data)

        host, port = server.address("http")
        p = Collect()

        def send(proto):
            proto.transport.write(data)
            return proto.done

        return connectProtocol(TCP4ClientEndpoint(reactor, host, port), p).addCallback(send)

    def small_server(self):
        return self.start_server(http={"max_body": 1024}, files={"max_size": 2048, "max_chunk": 1024})

    @inlineCallbacks
    def test_announced_length(self):
        server = self.small_server()
        limit = server.service.getServiceNamed("http").factory.body_limit(b"/qid/QID_IM_GET_ROSTER_ALL")
        self.assertEqual(limit, 1024)
        head = f"POST /qid/QID_IM_GET_ROSTER_ALL HTTP/1.1\r\nHost: x\r\nContent-Length: {limit + 1}\r\n\r\n"
        answer = yield self.raw(server, head.encode() + b"x" * 1000)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413"), answer[:100])
        self.assertIn(b'"code":"too_large"', answer)

    @inlineCallbacks
    def test_chunked_body_past_the_limit(self):
        server = self.small_server()
        limit = server.service.getServiceNamed("http").factory.body_limit(b"/file/upload")
        chunk = b"x" * 4096
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(limit // 4096 + 2))
        head = b"POST /file/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        answer = yield self.raw(server, head + chunks + b"0\r\n\r\n")
        # In the file server's form: a 500 and the reason in plain text.
        self.assertTrue(answer.startswith(b"HTTP/1.1 500"), answer[:100])
        self.assertIn(f"the request body is over the limit of {limit} bytes".encode(), answer)

    @inlineCallbacks
    def test_each_route_has_its_own_limit_chunked_too(self):
        # A chunked body to a JSON route is cut at that route's limit, not
        # at the largest any route takes (a whole-file upload's).
        server = self.small_server()
        site = server.service.getServiceNamed("http").factory
        self.assertEqual(site.body_limit(b"/qid/QID_IM_GET_ROSTER_ALL?x=1"), 1024)
        self.assertEqual(site.body_limit(b"/"), 1024)
        self.assertGreater(site.body_limit(b"/upload/mobileFileUpload"), 2048)
        self.assertGreater(site.body_limit(b"/file/upload"), 1024)
        self.assertEqual(site.body_limit(b"/file/download"), 1024)
        self.assertEqual(site.body_limit(b"/%ff"), 1024)
        chunk = b"x" * 600
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(2))
        for path, status, form in (
            (b"/qid/QID_IM_GET_ROSTER_ALL", b"413", b'"code":"too_large"'),
            (b"/auth/login", b"413", b'"code":"too_large"'),
            # The method API answers in its own form, always with 200.
            (b"/", b"200", b'"status":"0000","info":"the request body is over the limit of 1024 bytes"'),
        ):
            head = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            answer = yield self.raw(server, head + chunks + b"0\r\n\r\n")
            self.assertTrue(answer.startswith(b"HTTP/1.1 " + status), (path, answer[:100]))
            self.assertIn(form, answer)
            self.assertIn(b"Connection: close", answer)

    @inlineCallbacks
    def test_under_the_limit_is_served(self):
        server = self.small_server()
        code, body, _ = yield self.http(server, "POST", "/auth/login", {"uid": "a", "password": "bbbbbb"})
        self.assertEqual(code, 401)
        # A form body is not parsed by twisted.web: the route reads it.
        code, body, _ = yield self.http(server, "POST", "/auth/login", raw=b"uid=a&password=b",
                                        headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual((code, body["code"]), (400, "bad_request"))


class SQLiteHttpTests(HttpTestsMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresHttpTests(HttpTestsMixin, PostgresBackend, unittest.TestCase):
    pass


class UnreachableDatabaseTests(ServerTestMixin, unittest.TestCase):
    @inlineCallbacks
    def test_healthz_503(self):
        # Nothing listens on port 1, so every connection is refused at once.
        config = make_config(
            "postgresql://postgres@127.0.0.1:1/test", database={"migrate_on_start": False}
        )
        server = start_server(self, config)
        code, body, _ = yield self.http(server, "GET", "/healthz")
        self.assertEqual(code, 503)
        self.assertEqual(body["status"], "unavailable")
        self.assertEqual(body["store"]["status"], "unreachable")
        self.assertTrue(body["store"]["error"])
        code, body, _ = yield self.http(
            server, "POST", "/auth/login", {"uid": "alice", "password": "secret1"}
        )
        self.assertEqual(code, 500)
        self.assertEqual(body, {"type": "error", "code": "internal_error", "err": "internal server error"})
        self.flushLoggedErrors()


class MetricsDocumentedTests(unittest.TestCase):
    def test_every_metric_is_in_docs_http(self):
        import os

        from imd.metrics import Metrics
        from tests.support import repo_root

        metrics = Metrics(lambda: {})
        metrics.serve("longconn")
        with open(os.path.join(repo_root(), "docs", "http.rst"), encoding="utf-8") as f:
            docs = f.read()
        names = set()
        for family in metrics.registry.collect():
            suffix = "_total" if family.type == "counter" else ""
            names.add(family.name + suffix)
        self.assertIn("process_open_fds", names)
        self.assertEqual(sorted(n for n in names if f"``{n}" not in docs), [])
