# -*- test-case-name: tests.test_accounts -*-
"""
Accounts and tokens: registration, login by password or SMS code, token
checks that keep a used token alive, revocation and password changes.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, returnValue, succeed
from twisted.logger import Logger

from imd.config import AuthConfig, SmsConfig
from imd.core import scram
from imd.core import events
from imd.core.passwords import PasswordHasher
from imd.hub.interfaces import Event
from imd.errors import (
    BadCredentials,
    BadSmsCode,
    Conflict,
    Forbidden,
    IMError,
    InvalidField,
    InvalidToken,
    NotFound,
    RateLimited,
    Unauthenticated,
)

log = Logger()

# \A and \Z, not ^ and $: "$" also matches before a trailing newline, which
# let "alice\n" through as a user id.
UID_RE = re.compile(r"\A[A-Za-z0-9_.@-]{1,50}\Z")
TELEPHONE_RE = re.compile(r"\A\+?[0-9]{5,20}\Z")
MIN_PASSWORD, MAX_PASSWORD = 6, 128
# A token's expiry is pushed forward at most this often (ms), so a busy
# connection does not write its token row on every frame.
EXTEND_EVERY_MS = 60_000


# How often a live connection's token is checked again (which also keeps
# it alive, see AccountService.authenticate).
TOKEN_RECHECK_SECONDS = 60


class LiveToken:
    """
    The token a long-lived connection logged in with.  L{valid} asks the
    store again at most once a minute, so a token revoked or expired
    meanwhile ends the session, and one in use keeps living.
    """

    def __init__(self, accounts: "AccountService", token: str, clock: Any) -> None:
        self._accounts = accounts
        self._clock = clock
        self.token = token
        self._checked = clock.seconds()

    def due(self) -> bool:
        """Whether L{valid} would ask the store (cheap: no Deferred)."""
        return self._clock.seconds() - self._checked >= TOKEN_RECHECK_SECONDS

    def valid(self) -> "Deferred[bool]":
        if not self.due():
            return succeed(True)
        self._checked = self._clock.seconds()
        d = self._accounts.authenticate(self.token)
        d.addCallbacks(lambda _: True, lambda f: f.trap(IMError) and False)
        return d


@dataclass(frozen=True)
class Session:
    """The answer to a login: a new token for C{uid}."""

    uid: str
    token: str
    expires_in: int


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _given(sms_code: Any) -> Any:
    """Seed-004 clients always send sms_code; "" means they have none."""
    return None if sms_code == "" else sms_code


def check_uid(uid: Any) -> str:
    if not isinstance(uid, str) or not UID_RE.match(uid):
        raise InvalidField("uid must be 1-50 characters of A-Z a-z 0-9 _ . @ -")
    return uid


def check_telephone(telephone: Any) -> str:
    if not isinstance(telephone, str) or not TELEPHONE_RE.match(telephone):
        raise InvalidField("telephone must be 5-20 digits, optionally after +")
    return telephone


def _permanent_token(token: Any) -> str:
    """A given permanent token checked as a password is, or a new one."""
    if token is None or token == "":
        return uuid.uuid4().hex
    if not isinstance(token, str) or not MIN_PASSWORD <= len(token) <= MAX_PASSWORD:
        raise InvalidField(f"token must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")
    return token


def check_password(password: Any) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidField(f"password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")
    return password


class AccountService:
    def __init__(
        self,
        store: Any,
        auth: AuthConfig,
        sms: SmsConfig,
        gateway: Any,
        reactor: Any,
        clock: Any = None,
        guard: Any = None,
        scram_iterations: int = 4096,
        hub: Any = None,
    ) -> None:
        """
        C{reactor} runs password hashing on its thread pool; C{clock}
        (default: the reactor) tells the time, so tests can move it.
        C{guard} (a L{imd.core.logins.LoginGuard}) slows down failed logins;
        C{scram_iterations} is the PBKDF2 count of new SCRAM keys; C{hub},
        when given, reaches the live sessions of a disabled user.
        """
        self._users = store.users
        self._tokens = store.tokens
        self._codes = store.sms_codes
        self._auth = auth
        self._sms = sms
        self._gateway = gateway
        self._clock = reactor if clock is None else clock
        # Where a disabled user's live sessions are told to end.
        self._hub = hub
        self.hasher = PasswordHasher(reactor, auth.hash_time_cost, auth.hash_memory_kib)
        self._guard = guard
        self._scram_iterations = scram_iterations

    def _now(self) -> int:
        return int(self._clock.seconds() * 1000)

    @inlineCallbacks
    def register(self, uid: str, password: str | None, telephone: str | None = None, name: str = ""):
        """Create an account; C{password} None makes one that logs in by SMS only."""
        check_uid(uid)
        if telephone is not None:
            check_telephone(telephone)
        if not isinstance(name, str) or len(name) > 100:
            raise InvalidField("name must be at most 100 characters")
        password_hash = None
        if password is not None:
            password_hash = yield self.hasher.hash(check_password(password))
        user = yield self._users.create(uid, password_hash, self._now(), telephone, name)
        if password is not None:
            yield self._store_scram_keys(uid, password)
        log.info("account {uid} created", uid=uid)
        returnValue(user)

    @inlineCallbacks
    def register_by_telephone(self, telephone: Any, password: Any, sms_code: Any = None):
        """
        Seed 004's registration: the user id is made up (32 hex digits, as
        the seed's examples show) and the telephone proves itself with an
        SMS code when C{[sms] required}; otherwise a code is ignored, since
        seed-004 clients send one whatever the server's setting.

        The code is checked but not used up: the seed's flow is register,
        then log in with the same telephone, password and code, so the code
        serves that one login too (within its lifetime and attempts).
        """
        check_telephone(telephone)
        check_password(password)
        sms_code = _given(sms_code)
        # Checked before the code, so a taken number does not use it up.
        existing = yield self._users.get_by_telephone(telephone)
        if existing is not None:
            raise Conflict(f"telephone {telephone} is already registered")
        if self._sms.required:
            yield self.verify_sms_code(telephone, sms_code, use_up=False)
        user = yield self.register(uuid.uuid4().hex.upper(), password, telephone=telephone)
        returnValue(user)

    @inlineCallbacks
    def guarded(self, account: str, address: str | None, attempt: Any, path: str):
        """
        Run C{attempt()} (a login) unless C{address} must wait after failing
        on C{account}; a failure of its credentials counts against both.
        """
        yield self.login_allowed(account, address, path)
        try:
            result = yield attempt()
        except Unauthenticated:
            yield self.login_failed(account, address, path)
            raise
        yield self.login_succeeded(account, address, path)
        return result

    # The steps of L{guarded}, for a login of several round trips (SCRAM).

    def login_allowed(self, account: str, address: str | None, path: str) -> Deferred:
        """Fails with RateLimited while C{address} must wait to try C{account}."""
        return succeed(None) if self._guard is None else self._guard.check(account, address, path)

    def login_failed(self, account: str, address: str | None, path: str = "login") -> Deferred:
        return succeed(None) if self._guard is None else self._guard.failed(account, address, path)

    def login_succeeded(self, account: str, address: str | None, path: str = "login") -> Deferred:
        return succeed(None) if self._guard is None else self._guard.succeeded(account, address, path)

    def login(self, uid: Any, password: Any, address: str | None = None):
        """Log in by user id and password; a new token."""
        account = uid if isinstance(uid, str) else ""
        return self.guarded(account, address, lambda: self._login(uid, password), "password")

    @inlineCallbacks
    def _login(self, uid: Any, password: Any):
        if not isinstance(uid, str) or not isinstance(password, str):
            raise BadCredentials()
        user = yield self._users.get(uid) if UID_RE.match(uid) else None
        ok = yield self.hasher.verify(user.password_hash if user else None, password)
        if not ok or user.disabled:
            log.info("failed login for {uid}", uid=uid)
            raise BadCredentials()
        if self.hasher.needs_rehash(user.password_hash):
            new_hash = yield self.hasher.hash(password)
            yield self._users.set_password_hash(uid, new_hash, self._now())
        keys = yield self._users.scram_keys(uid)
        if len(keys) < len(scram.HASHES) or any(k["iterations"] != self._scram_iterations for k in keys):
            # An account older than its SCRAM keys, or keys of another
            # iteration count: the password is at hand only now.
            yield self._store_scram_keys(uid, password)
        session = yield self.issue_token(uid)
        returnValue(session)

    @inlineCallbacks
    def _store_scram_keys(self, uid: str, password: str):
        keys = yield self.hasher.scram_keys(password, self._scram_iterations)
        yield self._users.set_scram_keys(uid, [scram.encode(k) for k in keys])

    @inlineCallbacks
    def scram_keys(self, uid: Any, mechanism: str):
        """
        C{uid}'s keys for SCRAM C{mechanism}, or None (no such user, a
        disabled one, or one that has not logged in by password since
        SCRAM keys were kept).
        """
        if not isinstance(uid, str) or not UID_RE.match(uid) or mechanism not in scram.HASHES:
            returnValue(None)
        rows = yield self._users.scram_keys(uid, mechanism)
        returnValue(scram.decode(rows[0]) if rows else None)

    def login_by_telephone(self, telephone: Any, password: Any = None, sms_code: Any = None, address: str | None = None):
        """
        Log in by telephone.  With C{[sms] required} the code must match;
        a password, when given, must match too.  Without a password the
        code alone logs in (and then is always required).  With a password
        and SMS not required, a code is ignored: seed-004 clients send one
        whatever the server's setting.
        """
        account = f"tel:{telephone}" if isinstance(telephone, str) else "tel:"
        return self.guarded(account, address, lambda: self._login_by_telephone(telephone, password, sms_code), "telephone")

    @inlineCallbacks
    def _login_by_telephone(self, telephone: Any, password: Any, sms_code: Any):
        if not isinstance(telephone, str) or not TELEPHONE_RE.match(telephone):
            raise BadCredentials("wrong telephone, password or SMS code")
        sms_code = _given(sms_code)
        if password is None and sms_code is None:
            raise BadCredentials("a password or an SMS code is required")
        user = yield self._users.get_by_telephone(telephone)
        if password is not None:
            ok = yield self.hasher.verify(user.password_hash if user else None, str(password))
            if not ok:
                raise BadCredentials("wrong telephone, password or SMS code")
        if password is None or self._sms.required:
            yield self.verify_sms_code(telephone, sms_code)
        if user is None or user.disabled:
            raise BadCredentials("wrong telephone, password or SMS code")
        session = yield self.issue_token(user.uid)
        returnValue(session)

    @inlineCallbacks
    def issue_token(self, uid: str):
        token = secrets.token_urlsafe(32)
        now = self._now()
        ttl_ms = self._auth.token_ttl * 1000
        yield self._tokens.add(token_hash(token), uid, now, now + ttl_ms)
        returnValue(Session(uid=uid, token=token, expires_in=self._auth.token_ttl))

    def login_by_token(self, token: Any, address: str | None):
        """
        L{authenticate}, as a connection's login: a wrong token counts as a
        failed login of C{address} (tokens have no account to count against).
        """
        return self.guarded("token", address, lambda: self.authenticate(token), "token")

    @inlineCallbacks
    def authenticate(self, token: Any):
        """The uid a live C{token} belongs to; a used token lives on."""
        if not isinstance(token, str) or not token or len(token) > 256:
            raise InvalidToken()
        hashed = token_hash(token)
        row = yield self._tokens.get(hashed)
        now = self._now()
        if row is None or row.expires_at <= now or row.disabled:
            raise InvalidToken()
        renewed = now + self._auth.token_ttl * 1000
        if renewed - row.expires_at >= EXTEND_EVERY_MS:
            yield self._tokens.extend(hashed, renewed)
        returnValue(row.uid)

    def logout(self, token: str):
        return self._tokens.revoke(token_hash(token))

    @inlineCallbacks
    def change_password(self, uid: str, old: Any, new: Any, current_token: str | None = None):
        """Change C{uid}'s password; every other token of the user is revoked."""
        user = yield self._users.get(uid)
        if user is None:
            raise NotFound(f"no user {uid}")
        ok = yield self.hasher.verify(user.password_hash, old if isinstance(old, str) else "")
        if not ok:
            raise BadCredentials("the old password is wrong")
        yield self._set_password(uid, new, keep=current_token)

    @inlineCallbacks
    def set_password(self, uid: str, new: Any):
        """Administrative reset: no old password; every token is revoked."""
        user = yield self._users.get(uid)
        if user is None:
            raise NotFound(f"no user {uid}")
        yield self._set_password(uid, new, keep=None)

    @inlineCallbacks
    def _set_password(self, uid: str, new: Any, keep: str | None):
        new_hash = yield self.hasher.hash(check_password(new))
        yield self._users.set_password_hash(uid, new_hash, self._now())
        yield self._store_scram_keys(uid, new)
        revoked = yield self._tokens.revoke_all(uid, keep=None if keep is None else token_hash(keep))
        log.info("password of {uid} changed; {revoked} tokens revoked", uid=uid, revoked=revoked)

    @inlineCallbacks
    def request_sms_code(self, telephone: Any):
        """Send a new code to C{telephone} through the configured gateway."""
        check_telephone(telephone)
        code = f"{secrets.randbelow(1_000_000):06d}"
        now = self._now()
        stored = yield self._codes.put(
            telephone,
            token_hash(code),
            now,
            expires_at=now + self._sms.code_ttl * 1000,
            resend_after=now - self._sms.resend_interval * 1000,
        )
        if not stored:
            raise RateLimited(f"a code was sent less than {self._sms.resend_interval} s ago")
        try:
            yield self._gateway.send(telephone, code)
        except Exception:
            # Nobody received this code: it must not hold back the retry
            # with RateLimited, nor stay guessable.
            yield self._codes.delete(telephone)
            raise

    @inlineCallbacks
    def verify_sms_code(self, telephone: str, code: Any, use_up: bool = True):
        """Check (and, unless told not to, use up) the code sent to C{telephone}."""
        if isinstance(code, int) and not isinstance(code, bool):
            code = f"{code:06d}"
        if not isinstance(code, str) or not code:
            raise BadSmsCode("an SMS code is required")
        stored = yield self._codes.take_attempt(telephone)
        if (
            stored is None
            or stored.expires_at <= self._now()
            or stored.attempts >= self._sms.max_attempts
            or not secrets.compare_digest(stored.code_hash, token_hash(code))
        ):
            raise BadSmsCode()
        if use_up:
            yield self._codes.delete(telephone)

    @inlineCallbacks
    def register_with_token(self, uid: str, token: Any = None, name: Any = ""):
        """
        Create C{uid} with a permanent token (C{token}, or a new one) that
        logs in everywhere, as a token and as the password, until
        L{replace_token}.  Returns (user, token).
        """
        check_uid(uid)
        token = _permanent_token(token)
        if not isinstance(name, str) or len(name) > 100:
            raise InvalidField("name must be at most 100 characters")
        password_hash = yield self.hasher.hash(token)
        user = yield self._users.create(uid, password_hash, self._now(), name=name, permanent_token=token_hash(token))
        yield self._store_scram_keys(uid, token)
        log.info("account {uid} created with a permanent token", uid=uid)
        returnValue((user, token))

    @inlineCallbacks
    def replace_token(self, uid: str, token: Any = None):
        """
        Give C{uid} a new permanent token (C{token}, or a new one), which
        is also its password; the old one stops working.  Returns it.
        """
        token = _permanent_token(token)
        password_hash = yield self.hasher.hash(token)
        replaced = yield self._users.set_credential(uid, password_hash, token_hash(token), self._now())
        if not replaced:
            raise NotFound(f"no user {uid}")
        yield self._store_scram_keys(uid, token)
        log.info("permanent token of {uid} replaced", uid=uid)
        returnValue(token)

    @inlineCallbacks
    def set_disabled(self, uid: str, disabled: bool):
        """
        Disable (or enable again) C{uid}: a disabled user's tokens and
        password no longer log in, and its live sessions, on every
        instance, are ended.
        """
        changed = yield self._users.set_disabled(uid, disabled, self._now())
        if not changed:
            raise NotFound(f"no user {uid}")
        if disabled:
            self.end_sessions(uid, "account disabled")
        log.info("account {uid} {what}", uid=uid, what="disabled" if disabled else "enabled")

    def end_sessions(self, uid: str, reason: str) -> None:
        """End every live session of C{uid}, on every instance."""
        if self._hub is not None:
            self._hub.deliver([uid], Event(events.SESSION_END, {"reason": reason}))

    def kick(self, uid: str, channel: str, resource: str, reason: str) -> int:
        """End C{uid}'s session on C{channel} with C{resource} here; how many ended (0 or 1)."""
        ended = 0
        for session in self._hub.sessions(uid):
            if session.channel == channel and session.resource == resource:
                self._hub.unregister(session)
                session.kick(reason)
                ended += 1
        if ended:
            log.info("{uid}/{res} on {channel} kicked: {reason}", uid=uid, res=resource, channel=channel, reason=reason)
        return ended

    @inlineCallbacks
    def set_admin(self, uid: str, admin: bool):
        """Let C{uid} use the admin console, or no longer."""
        changed = yield self._users.set_admin(uid, admin, self._now())
        if not changed:
            raise NotFound(f"no user {uid}")
        log.info("account {uid} {what} admin", uid=uid, what="made" if admin else "no longer")

    @inlineCallbacks
    def authenticate_admin(self, token: Any):
        """The admin whose token C{token} is; L{Forbidden} for any other user."""
        uid = yield self.authenticate(token)
        user = yield self._users.get(uid)
        if user is None or not user.admin:
            raise Forbidden(f"{uid} is not an administrator")
        returnValue(uid)

    def list_users(self, after: str = "", limit: int = 100):
        return self._users.list(after, limit)

    def get_user(self, uid: str):
        return self._users.get(uid)
