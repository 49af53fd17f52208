# -*- test-case-name: tests.test_store -*-
"""Accounts: users, their default friend group, tokens and SMS codes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred

from imd.errors import Conflict
from imd.store import schema as s
from imd.store.batch import Batcher
from imd.store.database import Database


@dataclass(frozen=True)
class User:
    uid: str
    password_hash: str | None
    telephone: str | None
    name: str
    sign: str
    avatar: str
    disabled: bool
    created_at: int
    admin: bool = False


_USER_COLUMNS = [getattr(s.users.c, f) for f in User.__dataclass_fields__]


def _user(row) -> User | None:
    return None if row is None else User(**row._mapping)


class UserStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(
        self,
        uid: str,
        password_hash: str | None,
        now: int,
        telephone: str | None = None,
        name: str = "",
        permanent_token: str | None = None,
    ) -> "Deferred[User]":
        """
        Create C{uid}; with C{permanent_token} (a token's hash), that token
        is made with it, in the same transaction (see L{set_credential}).
        """

        def thd(conn: Connection) -> User:
            # Checked first for a clear message; the unique keys still
            # decide when two registrations race.
            if conn.execute(select(s.users.c.uid).where(s.users.c.uid == uid)).first():
                raise Conflict(f"user {uid} already exists")
            if telephone is not None and conn.execute(
                select(s.users.c.uid).where(s.users.c.telephone == telephone)
            ).first():
                raise Conflict(f"telephone {telephone} is already registered")
            try:
                conn.execute(
                    insert(s.users).values(
                        uid=uid,
                        password_hash=password_hash,
                        telephone=telephone,
                        name=name,
                        created_at=now,
                        updated_at=now,
                    )
                )
                gid, gname = s.DEFAULT_FRIEND_GROUP
                conn.execute(
                    insert(s.friend_groups).values(
                        uid=uid, gid=gid, name=gname, weight=0, is_default=True
                    )
                )
                if permanent_token is not None:
                    _add_permanent_token(conn, uid, permanent_token, now)
            except IntegrityError:
                raise Conflict(f"user {uid} or telephone {telephone} already exists") from None
            return _user(conn.execute(select(*_USER_COLUMNS).where(s.users.c.uid == uid)).first())

        return self._db.run("users.create", thd)

    def get(self, uid: str) -> "Deferred[User | None]":
        def thd(conn: Connection) -> User | None:
            return _user(conn.execute(select(*_USER_COLUMNS).where(s.users.c.uid == uid)).first())

        return self._db.run("users.get", thd)

    def get_by_telephone(self, telephone: str) -> "Deferred[User | None]":
        def thd(conn: Connection) -> User | None:
            return _user(
                conn.execute(select(*_USER_COLUMNS).where(s.users.c.telephone == telephone)).first()
            )

        return self._db.run("users.get_by_telephone", thd)

    def set_password_hash(self, uid: str, password_hash: str, now: int) -> "Deferred[bool]":
        def thd(conn: Connection) -> bool:
            result = conn.execute(
                update(s.users)
                .where(s.users.c.uid == uid)
                .values(password_hash=password_hash, updated_at=now)
            )
            return result.rowcount == 1

        return self._db.run("users.set_password_hash", thd)

    def set_scram_keys(self, uid: str, rows: list[dict]) -> "Deferred[None]":
        """Replace C{uid}'s SCRAM keys with C{rows} (one per mechanism)."""

        def thd(conn: Connection) -> None:
            conn.execute(delete(s.scram_keys).where(s.scram_keys.c.uid == uid))
            if rows:
                conn.execute(insert(s.scram_keys), [dict(row, uid=uid) for row in rows])

        return self._db.run("users.set_scram_keys", thd)

    def scram_keys(self, uid: str, mechanism: str | None = None) -> "Deferred[list[dict]]":
        """
        C{uid}'s SCRAM keys (of C{mechanism} only, when given); none for
        a disabled account.
        """

        def thd(conn: Connection) -> list[dict]:
            k = s.scram_keys.c
            query = (
                select(k.mechanism, k.salt, k.iterations, k.stored_key, k.server_key)
                .join(s.users, s.users.c.uid == k.uid)
                .where(k.uid == uid, s.users.c.disabled.is_(False))
            )
            if mechanism is not None:
                query = query.where(k.mechanism == mechanism)
            return [dict(row._mapping) for row in conn.execute(query)]

        return self._db.run("users.scram_keys", thd)

    def set_credential(self, uid: str, password_hash: str, permanent_token: str, now: int) -> "Deferred[bool]":
        """
        Replace C{uid}'s password and its permanent token (by hash) with a
        new credential, in one transaction: the old token stops working as
        the new one starts.  False when there is no such user.
        """

        def thd(conn: Connection) -> bool:
            updated = conn.execute(
                update(s.users).where(s.users.c.uid == uid).values(password_hash=password_hash, updated_at=now)
            ).rowcount
            if not updated:
                return False
            conn.execute(delete(s.tokens).where(s.tokens.c.uid == uid, s.tokens.c.permanent.is_(True)))
            _add_permanent_token(conn, uid, permanent_token, now)
            return True

        return self._db.run("users.set_credential", thd)

    def set_disabled(self, uid: str, disabled: bool, now: int) -> "Deferred[bool]":
        """Disable or enable C{uid}; a disabled user's tokens no longer count.  False: no such user."""
        return self._set_flag("users.set_disabled", uid, now, disabled=disabled)

    def set_admin(self, uid: str, admin: bool, now: int) -> "Deferred[bool]":
        """Whether C{uid} may use the admin console.  False: no such user."""
        return self._set_flag("users.set_admin", uid, now, admin=admin)

    def _set_flag(self, name: str, uid: str, now: int, **flag: bool) -> "Deferred[bool]":
        def thd(conn: Connection) -> bool:
            return conn.execute(
                update(s.users).where(s.users.c.uid == uid).values(updated_at=now, **flag)
            ).rowcount == 1

        return self._db.run(name, thd)

    def list(self, after: str = "", limit: int = 100) -> "Deferred[list[User]]":
        """Users ordered by uid, starting after C{after}."""

        def thd(conn: Connection) -> list[User]:
            rows = conn.execute(
                select(*_USER_COLUMNS)
                .where(s.users.c.uid > after)
                .order_by(s.users.c.uid)
                .limit(limit)
            )
            return [_user(row) for row in rows]

        return self._db.run("users.list", thd)


# A permanent token's expiry: past any time a clock will show.
NEVER = 2**62


def _add_permanent_token(conn: Connection, uid: str, token_hash: str, now: int) -> None:
    if conn.execute(select(s.tokens.c.uid).where(s.tokens.c.token_hash == token_hash)).first():
        # Tokens are looked up by hash alone: two users cannot share one.
        raise Conflict("this token is already in use")
    conn.execute(
        insert(s.tokens).values(token_hash=token_hash, uid=uid, created_at=now, expires_at=NEVER, permanent=True)
    )


@dataclass(frozen=True)
class TokenRow:
    uid: str
    created_at: int
    expires_at: int
    # The owner's account is disabled: the token no longer counts.
    disabled: bool


def _tokens(conn: Connection, hashes: Sequence[str]) -> list[TokenRow | None]:
    t = s.tokens.c
    rows = conn.execute(
        select(t.token_hash, t.uid, t.created_at, t.expires_at, s.users.c.disabled)
        .join(s.users, s.users.c.uid == t.uid)
        .where(t.token_hash.in_(set(hashes)))
    )
    found = {row.token_hash: TokenRow(row.uid, row.created_at, row.expires_at, row.disabled) for row in rows}
    return [found.get(h) for h in hashes]


class TokenStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # Every login and every authenticated request looks its token up:
        # those arriving together share one statement and transaction.
        self._lookups = Batcher(db.run, "tokens.get", _tokens, max_batch=500)

    def add(self, token_hash: str, uid: str, now: int, expires_at: int) -> "Deferred[None]":
        def thd(conn: Connection) -> None:
            conn.execute(
                insert(s.tokens).values(
                    token_hash=token_hash, uid=uid, created_at=now, expires_at=expires_at
                )
            )

        return self._db.run("tokens.add", thd)

    def get(self, token_hash: str) -> "Deferred[TokenRow | None]":
        return self._lookups.submit(token_hash)

    def extend(self, token_hash: str, expires_at: int) -> "Deferred[None]":
        def thd(conn: Connection) -> None:
            conn.execute(
                update(s.tokens)
                .where(s.tokens.c.token_hash == token_hash)
                .where(s.tokens.c.expires_at < expires_at)
                .values(expires_at=expires_at)
            )

        return self._db.run("tokens.extend", thd)

    def revoke(self, token_hash: str) -> "Deferred[bool]":
        def thd(conn: Connection) -> bool:
            return conn.execute(
                delete(s.tokens).where(s.tokens.c.token_hash == token_hash)
            ).rowcount == 1

        return self._db.run("tokens.revoke", thd)

    def revoke_all(self, uid: str, keep: str | None = None) -> "Deferred[int]":
        """Revoke every token of C{uid} but the one hashed as C{keep}."""

        def thd(conn: Connection) -> int:
            stmt = delete(s.tokens).where(s.tokens.c.uid == uid)
            if keep is not None:
                stmt = stmt.where(s.tokens.c.token_hash != keep)
            return conn.execute(stmt).rowcount

        return self._db.run("tokens.revoke_all", thd)

    def purge_expired(self, now: int) -> "Deferred[int]":
        def thd(conn: Connection) -> int:
            return conn.execute(delete(s.tokens).where(s.tokens.c.expires_at <= now)).rowcount

        return self._db.run("tokens.purge_expired", thd)


@dataclass(frozen=True)
class SmsCode:
    code_hash: str
    sent_at: int
    expires_at: int
    attempts: int


class SmsCodeStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def put(
        self, telephone: str, code_hash: str, now: int, expires_at: int, resend_after: int
    ) -> "Deferred[bool]":
        """
        Store a new code for C{telephone} unless one was sent after
        C{resend_after}; returns whether it was stored.
        """

        def thd(conn: Connection) -> bool:
            c = s.sms_codes.c
            values = dict(code_hash=code_hash, sent_at=now, expires_at=expires_at, attempts=0)
            # The interval is checked by the UPDATE itself: of two requests
            # racing, the second waits for the first's row lock, then finds
            # its sent_at too recent, so only one code goes out.
            replaced = conn.execute(
                update(s.sms_codes)
                .where(c.telephone == telephone)
                .where(c.sent_at <= resend_after)
                .values(**values)
            ).rowcount
            if replaced:
                return True
            if conn.execute(select(c.telephone).where(c.telephone == telephone)).first():
                return False
            try:
                # A savepoint, so that losing the race for the first code
                # does not abort the transaction on Postgres.
                with conn.begin_nested():
                    conn.execute(insert(s.sms_codes).values(telephone=telephone, **values))
            except IntegrityError:
                return False
            return True

        return self._db.run("sms_codes.put", thd)

    def take_attempt(self, telephone: str) -> "Deferred[SmsCode | None]":
        """Count one verification attempt and return the code as it was."""

        def thd(conn: Connection) -> SmsCode | None:
            c = s.sms_codes.c
            # Counting first takes the row lock, so concurrent guesses each
            # see a distinct count and a burst of them cannot all slip in
            # under the attempt limit.
            counted = conn.execute(
                update(s.sms_codes)
                .where(c.telephone == telephone)
                .values(attempts=c.attempts + 1)
            ).rowcount
            if not counted:
                return None
            row = conn.execute(
                select(c.code_hash, c.sent_at, c.expires_at, c.attempts).where(
                    c.telephone == telephone
                )
            ).one()
            return SmsCode(row.code_hash, row.sent_at, row.expires_at, row.attempts - 1)

        return self._db.run("sms_codes.take_attempt", thd)

    def delete(self, telephone: str) -> "Deferred[None]":
        def thd(conn: Connection) -> None:
            conn.execute(delete(s.sms_codes).where(s.sms_codes.c.telephone == telephone))

        return self._db.run("sms_codes.delete", thd)
