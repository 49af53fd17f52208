# -*- test-case-name: tests.test_store -*-
"""Friend groups, friendships and friend requests."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from imd.store import schema as s
from imd.store.database import Database

PENDING, ACCEPTED, REJECTED = 0, 1, 2


@dataclass(frozen=True)
class FriendGroup:
    gid: str
    name: str
    weight: int
    is_default: bool


@dataclass(frozen=True)
class Friend:
    fid: str
    gid: str
    remark: str
    name: str
    sign: str
    avatar: str


@dataclass(frozen=True)
class FriendRequest:
    id: int
    msgid: str
    msgfrom: str
    msgto: str
    msg: str
    req_gid: str | None
    req_name: str | None
    state: int
    received: bool
    created_at: int


_REQUEST_COLUMNS = [getattr(s.friend_requests.c, f) for f in FriendRequest.__dataclass_fields__]


def _request(row) -> FriendRequest | None:
    return None if row is None else FriendRequest(**row._mapping)


class RosterStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def friend_groups(self, uid: str) -> "Deferred[list[FriendGroup]]":
        def thd(conn: Connection) -> list[FriendGroup]:
            c = s.friend_groups.c
            rows = conn.execute(
                select(c.gid, c.name, c.weight, c.is_default)
                .where(c.uid == uid)
                .order_by(c.weight, c.gid)
            )
            return [FriendGroup(**row._mapping) for row in rows]

        return self._db.run("roster.friend_groups", thd)

    def set_friend_groups(self, uid: str, groups: list[FriendGroup]) -> "Deferred[None]":
        """
        Replace C{uid}'s friend groups.  Friends filed under a group that
        is gone move to the default group.
        """

        def thd(conn: Connection) -> None:
            conn.execute(delete(s.friend_groups).where(s.friend_groups.c.uid == uid))
            conn.execute(
                insert(s.friend_groups),
                [
                    dict(uid=uid, gid=g.gid, name=g.name, weight=g.weight, is_default=g.is_default)
                    for g in groups
                ],
            )
            default = next(g.gid for g in groups if g.is_default)
            f = s.friendships.c
            conn.execute(
                update(s.friendships)
                .where(f.uid == uid, f.gid.not_in([g.gid for g in groups]))
                .values(gid=default)
            )

        return self._db.run("roster.set_friend_groups", thd)

    def friends(self, uid: str) -> "Deferred[list[Friend]]":
        def thd(conn: Connection) -> list[Friend]:
            f, u = s.friendships.c, s.users.c
            rows = conn.execute(
                select(f.fid, f.gid, f.remark, u.name, u.sign, u.avatar)
                .join(s.users, u.uid == f.fid)
                .where(f.uid == uid)
                .order_by(f.fid)
            )
            return [Friend(**row._mapping) for row in rows]

        return self._db.run("roster.friends", thd)

    def friend_ids(self, uid: str) -> "Deferred[list[str]]":
        def thd(conn: Connection) -> list[str]:
            f = s.friendships.c
            return list(conn.execute(select(f.fid).where(f.uid == uid)).scalars())

        return self._db.run("roster.friend_ids", thd)

    def are_friends(self, uid: str, fid: str) -> "Deferred[bool]":
        def thd(conn: Connection) -> bool:
            f = s.friendships.c
            return conn.execute(select(f.fid).where(f.uid == uid, f.fid == fid)).first() is not None

        return self._db.run("roster.are_friends", thd)

    def update_friend(self, uid: str, fid: str, **values) -> "Deferred[bool]":
        """Set C{gid} and/or C{remark} of C{uid}'s friend C{fid}; False if not a friend."""

        def thd(conn: Connection) -> bool:
            f = s.friendships.c
            return conn.execute(
                update(s.friendships).where(f.uid == uid, f.fid == fid).values(**values)
            ).rowcount == 1

        return self._db.run("roster.update_friend", thd)

    def has_friend_group(self, uid: str, gid: str) -> "Deferred[bool]":
        def thd(conn: Connection) -> bool:
            c = s.friend_groups.c
            return conn.execute(select(c.gid).where(c.uid == uid, c.gid == gid)).first() is not None

        return self._db.run("roster.has_friend_group", thd)

    def add_request(
        self,
        msgid: str,
        msgfrom: str,
        msgto: str,
        msg: str,
        now: int,
        req_gid: str | None = None,
        req_name: str | None = None,
    ) -> "Deferred[tuple[FriendRequest, bool]]":
        """
        Store a friend request; (request, created).  A resend of the same
        C{msgid} returns the stored one.  An earlier pending request from
        the same user to the same user is superseded (rejected).
        """

        def thd(conn: Connection):
            c = s.friend_requests.c
            existing = conn.execute(
                select(*_REQUEST_COLUMNS).where(c.msgfrom == msgfrom, c.msgid == msgid)
            ).first()
            if existing is not None:
                return _request(existing), False
            conn.execute(
                update(s.friend_requests)
                .where(c.msgfrom == msgfrom, c.msgto == msgto, c.state == PENDING)
                .values(state=REJECTED, answered_at=now)
            )
            conn.execute(
                insert(s.friend_requests).values(
                    msgid=msgid,
                    msgfrom=msgfrom,
                    msgto=msgto,
                    msg=msg,
                    req_gid=req_gid,
                    req_name=req_name,
                    created_at=now,
                )
            )
            row = conn.execute(
                select(*_REQUEST_COLUMNS).where(c.msgfrom == msgfrom, c.msgid == msgid)
            ).first()
            return _request(row), True

        return self._db.run("roster.add_request", thd)

    def pending_request(self, msgto: str, msgid: str, msgfrom: str | None = None) -> "Deferred[FriendRequest | None]":
        """The pending request C{msgid} addressed to C{msgto}."""

        def thd(conn: Connection) -> FriendRequest | None:
            c = s.friend_requests.c
            query = select(*_REQUEST_COLUMNS).where(
                c.msgto == msgto, c.msgid == msgid, c.state == PENDING
            )
            if msgfrom is not None:
                query = query.where(c.msgfrom == msgfrom)
            return _request(conn.execute(query.order_by(c.id.desc()).limit(1)).first())

        return self._db.run("roster.pending_request", thd)

    def pending_from(self, msgto: str, msgfrom: str) -> "Deferred[FriendRequest | None]":
        """The newest pending request from C{msgfrom} to C{msgto}."""

        def thd(conn: Connection) -> FriendRequest | None:
            c = s.friend_requests.c
            return _request(
                conn.execute(
                    select(*_REQUEST_COLUMNS)
                    .where(c.msgto == msgto, c.msgfrom == msgfrom, c.state == PENDING)
                    .order_by(c.id.desc())
                    .limit(1)
                ).first()
            )

        return self._db.run("roster.pending_from", thd)

    def mark_received_from(self, msgto: str, msgfrom: str) -> "Deferred[int]":
        """Every pending request from C{msgfrom} to C{msgto} has been seen."""

        def thd(conn: Connection) -> int:
            c = s.friend_requests.c
            return conn.execute(
                update(s.friend_requests)
                .where(c.msgto == msgto, c.msgfrom == msgfrom, c.state == PENDING)
                .where(c.received.is_(False))
                .values(received=True)
            ).rowcount

        return self._db.run("roster.mark_received_from", thd)

    def pending_requests(self, msgto: str, only_unreceived: bool = False) -> "Deferred[list[FriendRequest]]":
        return self._db.run("roster.pending_requests", read_pending_requests, msgto, only_unreceived)

    def mark_request_received(self, msgto: str, msgid: str) -> "Deferred[int]":
        def thd(conn: Connection) -> int:
            c = s.friend_requests.c
            return conn.execute(
                update(s.friend_requests)
                .where(c.msgto == msgto, c.msgid == msgid, c.received.is_(False))
                .values(received=True)
            ).rowcount

        return self._db.run("roster.mark_request_received", thd)

    def answer_request(
        self,
        request_id: int,
        accept: bool,
        now: int,
        req_gid: str,
        req_name: str,
        resp_gid: str,
        resp_name: str,
    ) -> "Deferred[bool]":
        """
        Accept or reject a pending request; on acceptance both users become
        friends: the requester files the other under C{req_gid} as
        C{req_name}, the answerer under C{resp_gid} as C{resp_name}.
        False when the request was no longer pending.
        """

        def thd(conn: Connection) -> bool:
            c = s.friend_requests.c
            row = conn.execute(
                update(s.friend_requests)
                .where(c.id == request_id, c.state == PENDING)
                .values(state=ACCEPTED if accept else REJECTED, answered_at=now, received=True)
                .returning(c.msgfrom, c.msgto)
            ).first()
            if row is None:
                return False
            if accept:
                _befriend(conn, row.msgfrom, row.msgto, req_gid, req_name, now)
                _befriend(conn, row.msgto, row.msgfrom, resp_gid, resp_name, now)
            return True

        return self._db.run("roster.answer_request", thd)

    def befriend(self, uid: str, fid: str, now: int) -> "Deferred[bool]":
        """
        Make C{uid} and C{fid} friends at once, each in its default friend
        group; a pending request between them is settled as accepted.
        False when they already were friends.
        """

        def thd(conn: Connection) -> bool:
            f = s.friendships.c
            if conn.execute(select(f.fid).where(f.uid == uid, f.fid == fid)).first():
                return False
            c = s.friend_requests.c
            conn.execute(
                update(s.friend_requests)
                .where(c.state == PENDING)
                .where(((c.msgfrom == uid) & (c.msgto == fid)) | ((c.msgfrom == fid) & (c.msgto == uid)))
                .values(state=ACCEPTED, answered_at=now, received=True)
            )
            _befriend(conn, uid, fid, s.DEFAULT_FRIEND_GROUP[0], "", now)
            _befriend(conn, fid, uid, s.DEFAULT_FRIEND_GROUP[0], "", now)
            return True

        return self._db.run("roster.befriend", thd)

    def remove_friend(self, uid: str, fid: str) -> "Deferred[bool]":
        """End the friendship both ways; False when there was none."""

        def thd(conn: Connection) -> bool:
            f = s.friendships.c
            return conn.execute(
                delete(s.friendships).where(
                    ((f.uid == uid) & (f.fid == fid)) | ((f.uid == fid) & (f.fid == uid))
                )
            ).rowcount > 0

        return self._db.run("roster.remove_friend", thd)


def _befriend(conn: Connection, uid: str, fid: str, gid: str, remark: str, now: int) -> None:
    f = s.friendships.c
    known = conn.execute(
        select(s.friend_groups.c.gid).where(
            and_(s.friend_groups.c.uid == uid, s.friend_groups.c.gid == gid)
        )
    ).first()
    if known is None:
        gid = conn.execute(
            select(s.friend_groups.c.gid)
            .where(s.friend_groups.c.uid == uid)
            .order_by(s.friend_groups.c.is_default.desc(), s.friend_groups.c.weight)
            .limit(1)
        ).scalar() or s.DEFAULT_FRIEND_GROUP[0]
    if conn.execute(select(f.fid).where(f.uid == uid, f.fid == fid)).first():
        conn.execute(
            update(s.friendships).where(f.uid == uid, f.fid == fid).values(gid=gid, remark=remark)
        )
    else:
        conn.execute(
            insert(s.friendships).values(uid=uid, fid=fid, gid=gid, remark=remark, created_at=now)
        )


def read_pending_requests(conn: Connection, msgto: str, only_unreceived: bool) -> list[FriendRequest]:
    """L{RosterStore.pending_requests}, in C{conn}'s transaction."""
    c = s.friend_requests.c
    query = select(*_REQUEST_COLUMNS).where(c.msgto == msgto, c.state == PENDING)
    if only_unreceived:
        query = query.where(c.received.is_(False))
    return [_request(row) for row in conn.execute(query.order_by(c.id))]
