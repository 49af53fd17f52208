"""
The HTTP error edges: each API family answers every error in its own form
and counts it once, and the root hands each path to the family owning it.
"""

import json
import time
from urllib.parse import urlencode

from treq.testing import StubTreq
from twisted.internet.defer import inlineCallbacks
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from imd.channels.shared.signing import sign
from imd.channels.shared.web import Family, Root
from imd.errors import Conflict
from imd.metrics import Metrics
from tests.support import ServerTestMixin, SQLiteBackend


def error_counts(metrics):
    """{(channel, code): count} of every error counted so far."""
    return {
        (s.labels["channel"], s.labels["code"]): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == "imd_errors_total"
    }


def counted_since(before, after):
    """What was counted between two L{error_counts}."""
    return {key: n - before.get(key, 0) for key, n in after.items() if n != before.get(key, 0)}


class FailureEvents:
    """The failure events logged while it is installed."""

    def __init__(self, testcase):
        self.events = []
        globalLogPublisher.addObserver(self.observe)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.observe)

    def observe(self, event):
        if "log_failure" in event:
            self.events.append(event)


def plain(request, error):
    request.setResponseCode(error.status)
    return f"{error.code}: {error.message}".encode()


class EdgeTests(unittest.TestCase):
    """L{Family} and L{Root} with families made up here, in memory."""

    def setUp(self):
        self.metrics = Metrics(dict)
        self.fallback = Family("fallback", self.metrics, plain)
        self.family = Family("test", self.metrics, plain, prefixes=("/t/",), internal_message="oops")
        app = self.family.app

        @app.route("/t/ok", methods=["GET"])
        def ok(request):
            return b"ok"

        @app.route("/t/typed", methods=["GET"])
        def typed(request):
            raise Conflict("already there")

        @app.route("/t/boom", methods=["GET"])
        def boom(request):
            raise RuntimeError("secret detail")

        # Under the test family's prefix, but a route of another family.
        @self.fallback.app.route("/<string:anywhere>/special", methods=["GET"])
        def special(request, anywhere):
            return b"special"

        self.client = StubTreq(Root([self.family, self.fallback], fallback=self.fallback))
        self.failures = FailureEvents(self)

    @inlineCallbacks
    def get(self, path, method="GET"):
        before = error_counts(self.metrics)
        response = yield self.client.request(method, "http://imd.test" + path)
        body = yield response.content()
        return response.code, body.decode(), counted_since(before, error_counts(self.metrics))

    @inlineCallbacks
    def test_success_is_not_counted(self):
        self.assertEqual((yield self.get("/t/ok")), (200, "ok", {}))

    @inlineCallbacks
    def test_typed_error(self):
        answer = yield self.get("/t/typed")
        self.assertEqual(answer, (409, "conflict: already there", {("test", "conflict"): 1}))

    @inlineCallbacks
    def test_routing_errors_under_the_prefix(self):
        self.assertEqual(
            (yield self.get("/t/nope")),
            (404, "not_found: no such path: /t/nope", {("test", "not_found"): 1}),
        )
        self.assertEqual(
            (yield self.get("/t/ok", method="POST")),
            (405, "method_not_allowed: POST is not allowed on /t/ok", {("test", "method_not_allowed"): 1}),
        )
        # werkzeug redirects a doubled slash, without saying where to: a client error.
        code, body, counted = yield self.get("/t//ok")
        self.assertEqual((code, counted), (400, {("test", "bad_request"): 1}))
        self.assertTrue(body.startswith("bad_request: "), body)

    @inlineCallbacks
    def test_unexpected_error(self):
        answer = yield self.get("/t/boom")
        self.assertEqual(answer, (500, "internal_error: oops", {("test", "internal_error"): 1}))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        [event] = self.failures.events
        self.assertEqual(
            (event["method"], event["path"], event["family"]), ("GET", "/t/boom", "test")
        )

    @inlineCallbacks
    def test_paths_nobody_claims_go_to_the_fallback(self):
        self.assertEqual(
            (yield self.get("/elsewhere")),
            (404, "not_found: no such path: /elsewhere", {("fallback", "not_found"): 1}),
        )
        # Without its slash, the prefix is not the test family's.
        self.assertEqual((yield self.get("/t"))[2], {("fallback", "not_found"): 1})

    @inlineCallbacks
    def test_a_route_beats_a_prefix(self):
        self.assertEqual((yield self.get("/t/special")), (200, "special", {}))
        self.assertEqual((yield self.get("/t/special", method="POST"))[2], {("fallback", "method_not_allowed"): 1})

    @inlineCallbacks
    def test_a_path_that_is_not_utf8(self):
        self.assertEqual(
            (yield self.get("/t/%ff%fe")),
            (400, "bad_request: the path is not UTF-8", {("fallback", "bad_request"): 1}),
        )


JSON = b"application/json; charset=utf-8"
STATUS = {"not_found": 404, "method_not_allowed": 405, "internal_error": 500}


def imd_json(code, message):
    """imd's JSON error form: (status, body, content type)."""
    return STATUS[code], {"type": "error", "code": code, "err": message}, JSON


def seed_text(code, message):
    """The file server's form, as the seeds have it."""
    return 500, message.encode(), b"text/plain; charset=utf-8"


def method_reply(code, message):
    """The method API's failed reply."""
    return 200, {"status": "0000", "info": message, "code": code}, JSON


def boom(*args, **kwargs):
    raise RuntimeError("secret detail")


class FamilyEdgeTests(ServerTestMixin, SQLiteBackend, unittest.TestCase):
    """
    Each family of a real server answers an unknown path under its prefix,
    a wrong method and an unexpected failure in its own form, counted once
    under its own name; only the unexpected failure is logged.
    """

    def setUp(self):
        self.server = self.start_server()
        self.failures = FailureEvents(self)

    @inlineCallbacks
    def answer(self, method, path, **kw):
        """(status, body, content type, errors counted) of one request."""
        before = error_counts(self.server.metrics)
        code, body, response = yield self.http(self.server, method, path, **kw)
        counted = counted_since(before, error_counts(self.server.metrics))
        [content_type] = response.headers.getRawHeaders(b"content-type")
        return code, body, content_type, counted

    def break_authentication(self):
        self.server.accounts.authenticate = boom

    def assertOneFailureLogged(self, method, path):
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        [event] = self.failures.events
        self.assertEqual((event["method"], event["path"]), (method, path))

    @inlineCallbacks
    def assertFamily(self, family, form, refusals, unexpected, internal="internal server error"):
        """
        C{family} answers each of C{refusals} (method, path, code, message)
        as C{form}(code, message) says, then, once authentication is broken,
        the request C{unexpected} (method, path, request keywords) with
        C{internal}; each error is counted once and only the last logged.
        """
        for method, path, code, message in refusals:
            answer = yield self.answer(method, path)
            self.assertEqual(answer, (*form(code, message), {(family, code): 1}), path)
        self.assertEqual(self.failures.events, [])
        self.break_authentication()
        method, path, kw = unexpected
        answer = yield self.answer(method, path, **kw)
        self.assertEqual(answer, (*form("internal_error", internal), {(family, "internal_error"): 1}))
        self.assertOneFailureLogged(method, path.partition("?")[0])

    def test_native(self):
        return self.assertFamily(
            "native",
            imd_json,
            [
                ("GET", "/auth/nope", "not_found", "no such path: /auth/nope"),
                ("GET", "/nope", "not_found", "no such path: /nope"),
                ("GET", "/auth/login", "method_not_allowed", "GET is not allowed on /auth/login"),
            ],
            ("GET", "/auth/whoami", {"token": "t"}),
        )

    def test_qid(self):
        roster = "/qid/QID_IM_GET_ROSTER_ALL"
        return self.assertFamily(
            "qid",
            imd_json,
            [
                ("POST", roster + "/more", "not_found", f"no such path: {roster}/more"),
                ("GET", roster, "method_not_allowed", f"GET is not allowed on {roster}"),
            ],
            ("POST", roster, {"body": {}, "token": "t"}),
        )

    def test_files(self):
        return self.assertFamily(
            "files",
            seed_text,
            [
                ("GET", "/file/nope", "not_found", "no such path: /file/nope"),
                ("POST", "/upload/nope", "not_found", "no such path: /upload/nope"),
                ("GET", "/file/upload", "method_not_allowed", "GET is not allowed on /file/upload"),
                ("GET", "/im/upload/mobileFileUpload", "method_not_allowed",
                 "GET is not allowed on /im/upload/mobileFileUpload"),
            ],
            ("GET", "/upload/mobileFileDownload?" + urlencode({"fileId": "f", "token": "t"}), {}),
        )

    def test_methodapi(self):
        t = int(time.time())
        envelope = {"method": "com.user.getFriends", "data": {}, "_v": "1.0", "_t": t, "sign": sign({}, str(t)),
                    "token": "t"}
        return self.assertFamily(
            "methodapi",
            method_reply,
            [
                ("POST", "/api/nope", "not_found", "no such path: /api/nope"),
                ("PUT", "/", "method_not_allowed", "PUT is not allowed on /"),
                ("GET", "/api", "method_not_allowed", "GET is not allowed on /api"),
            ],
            ("POST", "/api", {"raw": json.dumps(envelope).encode()}),
            internal="internal error; try again",
        )
