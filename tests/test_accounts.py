"""
AccountService against a real store: registration, logins, tokens, password
changes and SMS codes; and the HTTP SMS gateway against a local server.
"""

from __future__ import annotations

import json
import re

from sqlalchemy import update
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site
from treq.client import HTTPClient

from imd.config import AuthConfig, SmsConfig
from imd.core.accounts import EXTEND_EVERY_MS, AccountService, token_hash
from imd.core.sms import HttpGateway, LogGateway, NoGateway, gateway_for
from imd.errors import (
    BadCredentials,
    BadSmsCode,
    Conflict,
    InvalidField,
    InvalidToken,
    NotFound,
    RateLimited,
    Unavailable,
)
from imd.store import schema
from imd.store.store import Store
from tests.support import PostgresBackend, SQLiteBackend, free_port, sqlite_url

CHEAP = dict(hash_time_cost=1, hash_memory_kib=1024)
# A realistic epoch, in whole seconds so that millisecond arithmetic is exact.
T0 = 1_700_000_000
TEL = "+8613800000000"


class RecordingGateway:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, telephone: str, code: str):
        self.sent.append((telephone, code))
        return succeed(None)

    @property
    def last_code(self) -> str:
        return self.sent[-1][1]


def other_code(code: str) -> str:
    """A well-formed code that is certainly not C{code}."""
    return "000000" if code != "000000" else "111111"


class AccountsMixin:
    def setUp(self):
        self.store = Store(self.database_url(), reactor=reactor)
        self.store.migrate()
        self.store.start()
        self.addCleanup(self.store.stop)
        self.clock = Clock()
        self.clock.advance(T0)
        self.gateway = RecordingGateway()
        self.accounts = self.service()

    def service(self, gateway=None, **sections) -> AccountService:
        """An AccountService on the test's store and clock."""
        auth = AuthConfig(**{**CHEAP, **sections.get("auth", {})})
        sms = SmsConfig(**sections.get("sms", {}))
        return AccountService(
            self.store,
            auth,
            sms,
            self.gateway if gateway is None else gateway,
            reactor=reactor,
            clock=self.clock,
        )

    def disable(self, uid: str) -> None:
        with self.store.db.engine.begin() as conn:
            conn.execute(
                update(schema.users).where(schema.users.c.uid == uid).values(disabled=True)
            )

    # registration and password login

    @inlineCallbacks
    def test_register_and_login(self):
        user = yield self.accounts.register("alice", "secret1", telephone=TEL, name="Alice")
        self.assertEqual((user.uid, user.telephone, user.name), ("alice", TEL, "Alice"))
        self.assertFalse(user.disabled)
        self.assertEqual(user.created_at, T0 * 1000)
        session = yield self.accounts.login("alice", "secret1")
        self.assertEqual(session.uid, "alice")
        self.assertEqual(session.expires_in, 86400)
        self.assertGreaterEqual(len(session.token), 32)
        uid = yield self.accounts.authenticate(session.token)
        self.assertEqual(uid, "alice")

    @inlineCallbacks
    def test_every_login_gets_its_own_token(self):
        yield self.accounts.register("alice", "secret1")
        first = yield self.accounts.login("alice", "secret1")
        second = yield self.accounts.login("alice", "secret1")
        self.assertNotEqual(first.token, second.token)
        for session in (first, second):
            uid = yield self.accounts.authenticate(session.token)
            self.assertEqual(uid, "alice")

    @inlineCallbacks
    def test_uid_allowed_characters(self):
        for uid in ("a", "x" * 50, "Az09_.@-", "alice@example.com"):
            user = yield self.accounts.register(uid, "secret1")
            self.assertEqual(user.uid, uid)

    @inlineCallbacks
    def test_uid_is_case_sensitive(self):
        yield self.accounts.register("alice", "secret1")
        yield self.accounts.register("Alice", "secret2")
        session = yield self.accounts.login("Alice", "secret2")
        self.assertEqual(session.uid, "Alice")
        yield self.assertFailure(self.accounts.login("ALICE", "secret2"), BadCredentials)

    @inlineCallbacks
    def test_invalid_uid(self):
        for uid in ("", "x" * 51, "has space", " alice", "alice\n", "ünïcode", "用户", "a/b", None, 42):
            yield self.assertFailure(self.accounts.register(uid, "secret1"), InvalidField)
        users = yield self.accounts.list_users()
        self.assertEqual(users, [])

    @inlineCallbacks
    def test_password_length(self):
        yield self.accounts.register("short6", "x" * 6)
        yield self.accounts.register("long128", "x" * 128)
        for password in ("", "x" * 5, "x" * 129, 123456, ["secret1"]):
            yield self.assertFailure(self.accounts.register("bob", password), InvalidField)
        self.assertIsNone((yield self.accounts.get_user("bob")))

    @inlineCallbacks
    def test_invalid_telephone_and_name(self):
        for telephone in ("", "123", "+86 138", "abcdefgh", "1" * 21, "13800000000\n", 13800000000):
            yield self.assertFailure(
                self.accounts.register("bob", "secret1", telephone=telephone), InvalidField
            )
        yield self.assertFailure(self.accounts.register("bob", "secret1", name="n" * 101), InvalidField)
        yield self.accounts.register("bob", "secret1", name="n" * 100)

    @inlineCallbacks
    def test_duplicate_uid(self):
        yield self.accounts.register("alice", "secret1")
        e = yield self.assertFailure(self.accounts.register("alice", "other12"), Conflict)
        self.assertIn("alice", e.message)
        # The first account is untouched.
        session = yield self.accounts.login("alice", "secret1")
        self.assertEqual(session.uid, "alice")

    @inlineCallbacks
    def test_duplicate_telephone(self):
        yield self.accounts.register("alice", "secret1", telephone=TEL)
        yield self.assertFailure(self.accounts.register("bob", "secret1", telephone=TEL), Conflict)
        self.assertIsNone((yield self.accounts.get_user("bob")))

    @inlineCallbacks
    def test_bad_credentials(self):
        yield self.accounts.register("alice", "secret1")
        for uid, password in [
            ("alice", "secret2"),
            ("alice", ""),
            ("alice", "SECRET1"),
            ("nobody", "secret1"),
            ("not a uid", "secret1"),
            ("", "secret1"),
            (None, "secret1"),
            ("alice", None),
            (42, "secret1"),
            ("alice", 123456),
            (["alice"], "secret1"),
            ("alice", {"password": "secret1"}),
        ]:
            yield self.assertFailure(self.accounts.login(uid, password), BadCredentials)

    @inlineCallbacks
    def test_account_without_password(self):
        yield self.accounts.register("smsonly", None, telephone=TEL)
        user = yield self.accounts.get_user("smsonly")
        self.assertIsNone(user.password_hash)
        for password in ("", "secret1"):
            yield self.assertFailure(self.accounts.login("smsonly", password), BadCredentials)

    @inlineCallbacks
    def test_stored_hash_is_argon2id(self):
        yield self.accounts.register("alice", "secret-password")
        user = yield self.accounts.get_user("alice")
        self.assertTrue(user.password_hash.startswith("$argon2id$"), user.password_hash)
        self.assertNotIn("secret-password", user.password_hash)
        with self.store.db.engine.connect() as conn:
            rows = conn.execute(schema.users.select()).all()
        self.assertNotIn("secret-password", repr(rows))

    @inlineCallbacks
    def test_login_upgrades_an_outdated_hash(self):
        yield self.accounts.register("alice", "secret1")
        before = (yield self.accounts.get_user("alice")).password_hash
        self.assertIn("t=1", before)
        stronger = self.service(auth={"hash_time_cost": 2})
        yield stronger.login("alice", "secret1")
        after = (yield self.accounts.get_user("alice")).password_hash
        self.assertIn("t=2", after)
        session = yield stronger.login("alice", "secret1")
        self.assertEqual(session.uid, "alice")

    @inlineCallbacks
    def test_disabled_user_cannot_log_in(self):
        yield self.accounts.register("alice", "secret1", telephone=TEL)
        session = yield self.accounts.login("alice", "secret1")
        self.disable("alice")
        # Tokens it had stop working too.
        yield self.assertFailure(self.accounts.authenticate(session.token), InvalidToken)
        yield self.assertFailure(self.accounts.login("alice", "secret1"), BadCredentials)
        yield self.accounts.request_sms_code(TEL)
        yield self.assertFailure(
            self.accounts.login_by_telephone(TEL, sms_code=self.gateway.last_code), BadCredentials
        )

    # tokens

    @inlineCallbacks
    def test_malformed_or_unknown_token(self):
        for token in (None, "", 42, "x" * 257, "no-such-token"):
            yield self.assertFailure(self.accounts.authenticate(token), InvalidToken)

    @inlineCallbacks
    def test_unused_token_expires(self):
        yield self.accounts.register("alice", "secret1")
        session = yield self.accounts.login("alice", "secret1")
        self.clock.advance(86400 - 1)
        row = yield self.store.tokens.get(token_hash(session.token))
        self.assertEqual(row.expires_at, (T0 + 86400) * 1000)
        self.clock.advance(1)
        yield self.assertFailure(self.accounts.authenticate(session.token), InvalidToken)

    @inlineCallbacks
    def test_token_ttl_is_configurable(self):
        accounts = self.service(auth={"token_ttl": 600})
        yield accounts.register("alice", "secret1")
        session = yield accounts.login("alice", "secret1")
        self.assertEqual(session.expires_in, 600)
        self.clock.advance(600)
        yield self.assertFailure(accounts.authenticate(session.token), InvalidToken)

    @inlineCallbacks
    def test_used_token_is_extended(self):
        yield self.accounts.register("alice", "secret1")
        session = yield self.accounts.login("alice", "secret1")
        self.clock.advance(86400 - 10)
        uid = yield self.accounts.authenticate(session.token)
        self.assertEqual(uid, "alice")
        self.clock.advance(110)
        uid = yield self.accounts.authenticate(session.token)
        self.assertEqual(uid, "alice")
        # Renewed from its last use, not from the login.
        self.clock.advance(86400)
        yield self.assertFailure(self.accounts.authenticate(session.token), InvalidToken)

    @inlineCallbacks
    def test_extension_is_written_at_most_once_per_interval(self):
        yield self.accounts.register("alice", "secret1")
        session = yield self.accounts.login("alice", "secret1")
        hashed = token_hash(session.token)
        ttl_ms = 86400 * 1000
        every = EXTEND_EVERY_MS // 1000

        def expires_at():
            return self.store.tokens.get(hashed).addCallback(lambda row: row.expires_at)

        self.assertEqual((yield expires_at()), T0 * 1000 + ttl_ms)
        self.clock.advance(every - 1)
        yield self.accounts.authenticate(session.token)
        self.assertEqual((yield expires_at()), T0 * 1000 + ttl_ms)

        self.clock.advance(1)
        yield self.accounts.authenticate(session.token)
        extended = (T0 + every) * 1000 + ttl_ms
        self.assertEqual((yield expires_at()), extended)

        for _ in range(3):
            self.clock.advance(every // 4)
            yield self.accounts.authenticate(session.token)
            self.assertEqual((yield expires_at()), extended)

    @inlineCallbacks
    def test_logout_revokes_only_that_token(self):
        yield self.accounts.register("alice", "secret1")
        first = yield self.accounts.login("alice", "secret1")
        second = yield self.accounts.login("alice", "secret1")
        yield self.accounts.logout(first.token)
        yield self.assertFailure(self.accounts.authenticate(first.token), InvalidToken)
        uid = yield self.accounts.authenticate(second.token)
        self.assertEqual(uid, "alice")

    # password changes

    @inlineCallbacks
    def test_change_password(self):
        yield self.accounts.register("alice", "secret1")
        yield self.accounts.register("bob", "secret1")
        current = yield self.accounts.login("alice", "secret1")
        other = yield self.accounts.login("alice", "secret1")
        bobs = yield self.accounts.login("bob", "secret1")
        yield self.accounts.change_password("alice", "secret1", "newsecret", current_token=current.token)

        self.assertEqual((yield self.accounts.authenticate(current.token)), "alice")
        yield self.assertFailure(self.accounts.authenticate(other.token), InvalidToken)
        self.assertEqual((yield self.accounts.authenticate(bobs.token)), "bob")
        yield self.assertFailure(self.accounts.login("alice", "secret1"), BadCredentials)
        session = yield self.accounts.login("alice", "newsecret")
        self.assertEqual(session.uid, "alice")

    @inlineCallbacks
    def test_change_password_without_current_token_revokes_all(self):
        yield self.accounts.register("alice", "secret1")
        session = yield self.accounts.login("alice", "secret1")
        yield self.accounts.change_password("alice", "secret1", "newsecret")
        yield self.assertFailure(self.accounts.authenticate(session.token), InvalidToken)

    @inlineCallbacks
    def test_change_password_wrong_old(self):
        yield self.accounts.register("alice", "secret1")
        session = yield self.accounts.login("alice", "secret1")
        other = yield self.accounts.login("alice", "secret1")
        for old in ("wrong12", "", None, 123456):
            yield self.assertFailure(
                self.accounts.change_password("alice", old, "newsecret", current_token=session.token),
                BadCredentials,
            )
        # Nothing changed: the old password and every token still work.
        yield self.accounts.login("alice", "secret1")
        self.assertEqual((yield self.accounts.authenticate(other.token)), "alice")

    @inlineCallbacks
    def test_change_password_invalid_new(self):
        yield self.accounts.register("alice", "secret1")
        other = yield self.accounts.login("alice", "secret1")
        yield self.assertFailure(self.accounts.change_password("alice", "secret1", "short"), InvalidField)
        yield self.accounts.login("alice", "secret1")
        self.assertEqual((yield self.accounts.authenticate(other.token)), "alice")

    @inlineCallbacks
    def test_change_password_unknown_user(self):
        yield self.assertFailure(self.accounts.change_password("nobody", "secret1", "newsecret"), NotFound)
        yield self.assertFailure(self.accounts.set_password("nobody", "newsecret"), NotFound)

    @inlineCallbacks
    def test_set_password_revokes_every_token(self):
        yield self.accounts.register("alice", "secret1")
        sessions = []
        for _ in range(2):
            sessions.append((yield self.accounts.login("alice", "secret1")))
        yield self.accounts.set_password("alice", "newsecret")
        for session in sessions:
            yield self.assertFailure(self.accounts.authenticate(session.token), InvalidToken)
        yield self.assertFailure(self.accounts.login("alice", "secret1"), BadCredentials)
        yield self.accounts.login("alice", "newsecret")

    # SMS codes

    @inlineCallbacks
    def test_request_sms_code(self):
        yield self.accounts.request_sms_code(TEL)
        self.assertEqual(len(self.gateway.sent), 1)
        telephone, code = self.gateway.sent[0]
        self.assertEqual(telephone, TEL)
        self.assertTrue(re.fullmatch(r"[0-9]{6}", code), code)

    @inlineCallbacks
    def test_request_sms_code_invalid_telephone(self):
        for telephone in (None, "", "12", "phone-number"):
            yield self.assertFailure(self.accounts.request_sms_code(telephone), InvalidField)
        self.assertEqual(self.gateway.sent, [])

    @inlineCallbacks
    def test_resend_is_rate_limited(self):
        yield self.accounts.request_sms_code(TEL)
        self.clock.advance(59)
        yield self.assertFailure(self.accounts.request_sms_code(TEL), RateLimited)
        self.assertEqual(len(self.gateway.sent), 1)
        # Another telephone is not held back.
        yield self.accounts.request_sms_code("13900000000")
        self.clock.advance(1)
        yield self.accounts.request_sms_code(TEL)
        self.assertEqual([t for t, _ in self.gateway.sent], [TEL, "13900000000", TEL])

    @inlineCallbacks
    def test_a_resent_code_replaces_the_last_one(self):
        yield self.accounts.register("bob", "secret1", telephone=TEL)
        yield self.accounts.request_sms_code(TEL)
        self.clock.advance(60)
        yield self.accounts.request_sms_code(TEL)
        session = yield self.accounts.login_by_telephone(TEL, sms_code=self.gateway.last_code)
        self.assertEqual(session.uid, "bob")

    @inlineCallbacks
    def test_login_by_code_alone_and_code_is_single_use(self):
        yield self.accounts.register("bob", "secret1", telephone=TEL)
        yield self.accounts.request_sms_code(TEL)
        code = self.gateway.last_code
        session = yield self.accounts.login_by_telephone(TEL, sms_code=code)
        self.assertEqual(session.uid, "bob")
        self.assertEqual((yield self.accounts.authenticate(session.token)), "bob")
        yield self.assertFailure(self.accounts.login_by_telephone(TEL, sms_code=code), BadSmsCode)

    @inlineCallbacks
    def test_wrong_sms_code(self):
        yield self.accounts.register("bob", "secret1", telephone=TEL)
        yield self.accounts.request_sms_code(TEL)
        code = self.gateway.last_code
        for wrong in (other_code(code), "", 123456, None):
            yield self.assertFailure(
                self.accounts.login_by_telephone(TEL, password="secret1", sms_code=wrong), BadSmsCode
            )
        # A few wrong guesses do not burn the code.
        session = yield self.accounts.login_by_telephone(TEL, sms_code=code)
        self.assertEqual(session.uid, "bob")

    @inlineCallbacks
    def test_code_for_another_telephone(self):
        yield self.accounts.register("bob", "secret1", telephone=TEL)
        yield self.accounts.request_sms_code("13900000000")
        yield self.assertFailure(
            self.accounts.login_by_telephone(TEL, sms_code=self.gateway.last_code), BadSmsCode
        )

    @inlineCallbacks
    def test_expired_sms_code(self):
        yield self.accounts.register("bob", "secret1", telephone=TEL)
        yield self.accounts.request_sms_code(TEL)
        self.clock.advance(300)
        yield self.assertFailure(
            self.accounts.login_by_telephone(TEL, sms_code=self.gateway.last_code), BadSmsCode
        )

    @inlineCallbacks
    def test_sms_code_just_before_expiry(self):
        yield self.accounts.register("bob", "secret1", telephone=TEL)
        yield self.accounts.request_sms_code(TEL)
        self.clock.advance(299)
        session = yield self.accounts.login_by_telephone(TEL, sms_code=self.gateway.last_code)
        self.assertEqual(session.uid, "bob")

    @inlineCallbacks
    def test_max_attempts(self):
        accounts = self.service(sms={"max_attempts": 3})
        yield accounts.register("bob", "secret1", telephone=TEL)
        yield accounts.request_sms_code(TEL)
        code = self.gateway.last_code
        for _ in range(3):
            yield self.assertFailure(
                accounts.login_by_telephone(TEL, sms_code=other_code(code)), BadSmsCode
            )
        yield self.assertFailure(accounts.login_by_telephone(TEL, sms_code=code), BadSmsCode)

    @inlineCallbacks
    def test_unknown_telephone_with_valid_code(self):
        yield self.accounts.request_sms_code(TEL)
        yield self.assertFailure(
            self.accounts.login_by_telephone(TEL, sms_code=self.gateway.last_code), BadCredentials
        )

    @inlineCallbacks
    def test_login_by_telephone_bad_input(self):
        yield self.accounts.register("bob", "secret1", telephone=TEL)
        for telephone in (None, "", "12", 8613800000000):
            yield self.assertFailure(
                self.accounts.login_by_telephone(telephone, password="secret1", sms_code="123456"),
                BadCredentials,
            )
        yield self.assertFailure(self.accounts.login_by_telephone(TEL), BadCredentials)

    @inlineCallbacks
    def test_required_code_with_password(self):
        yield self.accounts.register("bob", "secret1", telephone=TEL)
        yield self.assertFailure(self.accounts.login_by_telephone(TEL, password="secret1"), BadSmsCode)
        yield self.accounts.request_sms_code(TEL)
        code = self.gateway.last_code
        # The password is checked too, and a wrong one does not use up the code.
        yield self.assertFailure(
            self.accounts.login_by_telephone(TEL, password="wrong12", sms_code=code), BadCredentials
        )
        session = yield self.accounts.login_by_telephone(TEL, password="secret1", sms_code=code)
        self.assertEqual(session.uid, "bob")

    @inlineCallbacks
    def test_optional_code(self):
        accounts = self.service(sms={"required": False})
        yield accounts.register("bob", "secret1", telephone=TEL)
        session = yield accounts.login_by_telephone(TEL, password="secret1")
        self.assertEqual(session.uid, "bob")
        yield self.assertFailure(accounts.login_by_telephone(TEL, password="wrong12"), BadCredentials)
        yield self.assertFailure(
            accounts.login_by_telephone("13900000000", password="secret1"), BadCredentials
        )
        # Seed-004 clients always send a code: with SMS off it is ignored,
        # never checked, next to a password.
        session = yield accounts.login_by_telephone(TEL, password="secret1", sms_code="123456")
        self.assertEqual(session.uid, "bob")
        yield self.assertFailure(
            accounts.login_by_telephone(TEL, password="wrong12", sms_code="123456"), BadCredentials
        )
        # Without a password the code is the credential, so it is checked.
        yield self.assertFailure(accounts.login_by_telephone(TEL, sms_code="123456"), BadSmsCode)
        user = yield accounts.register_by_telephone("13900000001", "secret1", sms_code="654321")
        self.assertEqual(user.telephone, "13900000001")

    @inlineCallbacks
    def test_register_code_serves_the_login_after_it(self):
        yield self.accounts.request_sms_code(TEL)
        code = self.gateway.last_code
        user = yield self.accounts.register_by_telephone(TEL, "secret1", sms_code=code)
        session = yield self.accounts.login_by_telephone(TEL, password="secret1", sms_code=code)
        self.assertEqual(session.uid, user.uid)
        # The login used it up.
        yield self.assertFailure(
            self.accounts.login_by_telephone(TEL, password="secret1", sms_code=code), BadSmsCode
        )

    @inlineCallbacks
    def test_no_gateway(self):
        accounts = self.service(gateway=NoGateway())
        yield self.assertFailure(accounts.request_sms_code(TEL), Unavailable)
        # Nothing was sent, so asking again is not "too soon".
        yield self.assertFailure(accounts.request_sms_code(TEL), Unavailable)
        yield self.assertFailure(accounts.login_by_telephone(TEL, sms_code="123456"), BadSmsCode)


class SQLiteAccountsTests(AccountsMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresAccountsTests(AccountsMixin, PostgresBackend, unittest.TestCase):
    pass


class GatewayResource(Resource):
    """A stand-in SMS provider that records what it is sent."""

    isLeaf = True

    def __init__(self, status: int = 200) -> None:
        super().__init__()
        self.status = status
        self.requests: list[tuple[bytes, bytes | None, dict]] = []

    def render_POST(self, request):
        self.requests.append(
            (request.path, request.getHeader(b"content-type"), json.loads(request.content.read()))
        )
        request.setResponseCode(self.status)
        return b"{}"


class HttpGatewayTests(unittest.TestCase):
    def serve(self, status: int = 200) -> tuple[GatewayResource, str]:
        resource = GatewayResource(status)
        port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return resource, f"http://127.0.0.1:{port.getHost().port}/sms/send"

    def client(self) -> HTTPClient:
        # Kept-alive connections would outlive the test and leave the
        # reactor unclean.
        return HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))

    @inlineCallbacks
    def test_posts_json(self):
        resource, url = self.serve()
        yield HttpGateway(url, treq=self.client()).send(TEL, "123456")
        self.assertEqual(
            resource.requests, [(b"/sms/send", b"application/json", {"telephone": TEL, "code": "123456"})]
        )

    @inlineCallbacks
    def test_error_status(self):
        resource, url = self.serve(500)
        e = yield self.assertFailure(HttpGateway(url, treq=self.client()).send(TEL, "123456"), Unavailable)
        self.assertEqual(len(resource.requests), 1)
        self.assertEqual(e.status, 503)

    @inlineCallbacks
    def test_unreachable(self):
        url = f"http://127.0.0.1:{free_port()}/sms/send"
        yield self.assertFailure(HttpGateway(url, treq=self.client()).send(TEL, "123456"), Unavailable)

    @inlineCallbacks
    def test_code_from_the_gateway_logs_in(self):
        resource, url = self.serve()
        store = Store(sqlite_url(self), reactor=reactor)
        store.migrate()
        store.start()
        self.addCleanup(store.stop)
        accounts = AccountService(
            store, AuthConfig(**CHEAP), SmsConfig(mode="http", url=url),
            HttpGateway(url, treq=self.client()), reactor=reactor,
        )
        yield accounts.register("bob", None, telephone=TEL)
        yield accounts.request_sms_code(TEL)
        _, _, body = resource.requests[0]
        self.assertEqual(body["telephone"], TEL)
        session = yield accounts.login_by_telephone(TEL, sms_code=body["code"])
        self.assertEqual(session.uid, "bob")

    def test_gateway_for(self):
        self.assertIsInstance(gateway_for("log"), LogGateway)
        self.assertIsInstance(gateway_for("off"), NoGateway)
        self.assertIsInstance(gateway_for("http", "http://127.0.0.1:1/"), HttpGateway)
        self.assertRaises(ValueError, gateway_for, "http", "")

    def test_log_gateway(self):
        d = LogGateway().send(TEL, "123456")
        self.assertIsNone(self.successResultOf(d))
