# -*- test-case-name: tests.test_store -*-
"""Groups (seed 001 chatrooms), their members and invites."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from imd.store import schema as s
from imd.store.database import Database
from imd.store.roster import ACCEPTED, PENDING, REJECTED

g, gm, gi = s.groups.c, s.group_members.c, s.group_invites.c


@dataclass(frozen=True)
class Group:
    gid: str
    name: str
    creator: str
    type: int
    exitable: bool
    created_at: int


@dataclass(frozen=True)
class Member:
    uid: str
    role: int
    remark: str
    join_time: int
    name: str


@dataclass(frozen=True)
class GroupInvite:
    id: int
    msgid: str
    gid: str
    msgfrom: str
    msgto: str
    gname: str
    state: int
    received: bool
    created_at: int


_GROUP_COLUMNS = [getattr(g, f) for f in Group.__dataclass_fields__]
_INVITE_COLUMNS = [getattr(gi, f) for f in GroupInvite.__dataclass_fields__]


def _group(row) -> Group | None:
    return None if row is None else Group(**row._mapping)


def _invite(row) -> GroupInvite | None:
    return None if row is None else GroupInvite(**row._mapping)


def _add_member(conn: Connection, gid: str, uid: str, role: int, remark: str, now: int) -> None:
    # A new member's cursor starts at the group's last message: what was
    # said before it joined is history, not offline messages.
    last = conn.execute(select(g.last_seq).where(g.gid == gid)).scalar() or 0
    conn.execute(
        insert(s.group_members).values(
            gid=gid, uid=uid, role=role, remark=remark, join_time=now, synced_seq=last, read_seq=last
        )
    )


class GroupStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(
        self, gid: str, name: str, creator: str, type: int, exitable: bool, now: int
    ) -> "Deferred[Group]":
        """Create a group whose only member, an admin, is its creator."""

        def thd(conn: Connection) -> Group:
            conn.execute(
                insert(s.groups).values(
                    gid=gid,
                    name=name,
                    creator=creator,
                    type=type,
                    exitable=exitable,
                    created_at=now,
                    updated_at=now,
                )
            )
            _add_member(conn, gid, creator, 1, "", now)
            return _group(conn.execute(select(*_GROUP_COLUMNS).where(g.gid == gid)).first())

        return self._db.run("groups.create", thd)

    def get(self, gid: str) -> "Deferred[Group | None]":
        def thd(conn: Connection) -> Group | None:
            return _group(
                conn.execute(
                    select(*_GROUP_COLUMNS).where(g.gid == gid, g.deleted_at.is_(None))
                ).first()
            )

        return self._db.run("groups.get", thd)

    def groups_of(self, uid: str) -> "Deferred[list[Group]]":
        def thd(conn: Connection) -> list[Group]:
            rows = conn.execute(
                select(*_GROUP_COLUMNS)
                .join(s.group_members, gm.gid == g.gid)
                .where(gm.uid == uid, g.deleted_at.is_(None))
                .order_by(g.created_at, g.gid)
            )
            return [_group(row) for row in rows]

        return self._db.run("groups.groups_of", thd)

    def listing(self, after: str = "", limit: int = 100) -> "Deferred[list[tuple[Group, int]]]":
        """Every live group ordered by gid, starting after C{after}, with its number of members."""

        def thd(conn: Connection) -> list[tuple[Group, int]]:
            count = func.count(gm.uid).label("member_count")
            rows = conn.execute(
                select(*_GROUP_COLUMNS, count)
                .outerjoin(s.group_members, gm.gid == g.gid)
                .where(g.gid > after, g.deleted_at.is_(None))
                .group_by(*_GROUP_COLUMNS)
                .order_by(g.gid)
                .limit(limit)
            )
            return [(Group(**{f: row._mapping[f] for f in Group.__dataclass_fields__}), row.member_count) for row in rows]

        return self._db.run("groups.listing", thd)

    def members(self, gid: str) -> "Deferred[list[Member]]":
        def thd(conn: Connection) -> list[Member]:
            rows = conn.execute(
                select(gm.uid, gm.role, gm.remark, gm.join_time, s.users.c.name)
                .join(s.users, s.users.c.uid == gm.uid)
                .where(gm.gid == gid)
                .order_by(gm.join_time, gm.uid)
            )
            return [Member(**row._mapping) for row in rows]

        return self._db.run("groups.members", thd)

    def member_ids(self, gid: str) -> "Deferred[list[str]]":
        def thd(conn: Connection) -> list[str]:
            return list(conn.execute(select(gm.uid).where(gm.gid == gid)).scalars())

        return self._db.run("groups.member_ids", thd)

    def is_member(self, gid: str, uid: str) -> "Deferred[bool]":
        def thd(conn: Connection) -> bool:
            return conn.execute(select(gm.uid).where(gm.gid == gid, gm.uid == uid)).first() is not None

        return self._db.run("groups.is_member", thd)

    def co_member_ids(self, uid: str) -> "Deferred[set[str]]":
        """Everyone who shares a group with C{uid}."""

        def thd(conn: Connection) -> set[str]:
            mine = select(gm.gid).where(gm.uid == uid)
            return set(conn.execute(select(gm.uid).where(gm.gid.in_(mine))).scalars()) - {uid}

        return self._db.run("groups.co_member_ids", thd)

    def add_invite(
        self, msgid: str, gid: str, msgfrom: str, msgto: str, gname: str, now: int
    ) -> "Deferred[tuple[GroupInvite, bool]]":
        """Store an invite; a resend of C{msgid} returns the stored one."""

        def thd(conn: Connection):
            existing = conn.execute(
                select(*_INVITE_COLUMNS).where(gi.msgfrom == msgfrom, gi.msgid == msgid)
            ).first()
            if existing is not None:
                return _invite(existing), False
            conn.execute(
                insert(s.group_invites).values(
                    msgid=msgid, gid=gid, msgfrom=msgfrom, msgto=msgto, gname=gname, created_at=now
                )
            )
            row = conn.execute(
                select(*_INVITE_COLUMNS).where(gi.msgfrom == msgfrom, gi.msgid == msgid)
            ).first()
            return _invite(row), True

        return self._db.run("groups.add_invite", thd)

    def pending_invite(
        self, msgto: str, gid: str, msgid: str | None = None
    ) -> "Deferred[GroupInvite | None]":
        """C{msgto}'s pending invite to C{gid} (the one C{msgid} names, or the newest)."""

        def thd(conn: Connection) -> GroupInvite | None:
            query = select(*_INVITE_COLUMNS).where(
                gi.msgto == msgto, gi.gid == gid, gi.state == PENDING
            )
            if msgid is not None:
                query = query.where(gi.msgid == msgid)
            return _invite(conn.execute(query.order_by(gi.id.desc()).limit(1)).first())

        return self._db.run("groups.pending_invite", thd)

    def pending_invites(self, msgto: str, only_unreceived: bool = False) -> "Deferred[list[GroupInvite]]":
        return self._db.run("groups.pending_invites", read_pending_invites, msgto, only_unreceived)

    def mark_invite_received(self, msgto: str, msgid: str) -> "Deferred[int]":
        def thd(conn: Connection) -> int:
            return conn.execute(
                update(s.group_invites)
                .where(gi.msgto == msgto, gi.msgid == msgid, gi.received.is_(False))
                .values(received=True)
            ).rowcount

        return self._db.run("groups.mark_invite_received", thd)

    def mark_invites_received(self, msgto: str, gid: str) -> "Deferred[int]":
        """Every pending invite of C{msgto} to C{gid} has been seen."""

        def thd(conn: Connection) -> int:
            return conn.execute(
                update(s.group_invites)
                .where(gi.msgto == msgto, gi.gid == gid, gi.state == PENDING)
                .where(gi.received.is_(False))
                .values(received=True)
            ).rowcount

        return self._db.run("groups.mark_invites_received", thd)

    def answer_invite(
        self, invite_id: int, accept: bool, remark: str, now: int
    ) -> "Deferred[bool]":
        """
        Accept (join as a member) or reject; every other pending invite of
        the same user to the same group is settled alike.  False when the
        invite was no longer pending.
        """

        def thd(conn: Connection) -> bool:
            row = conn.execute(
                select(gi.gid, gi.msgto).where(gi.id == invite_id, gi.state == PENDING)
            ).first()
            if row is None:
                return False
            conn.execute(
                update(s.group_invites)
                .where(gi.gid == row.gid, gi.msgto == row.msgto, gi.state == PENDING)
                .values(state=ACCEPTED if accept else REJECTED, answered_at=now, received=True)
            )
            already = conn.execute(
                select(gm.uid).where(gm.gid == row.gid, gm.uid == row.msgto)
            ).first()
            if accept and already is None:
                _add_member(conn, row.gid, row.msgto, 0, remark, now)
            return True

        return self._db.run("groups.answer_invite", thd)

    def add_member(self, gid: str, uid: str, role: int, remark: str, now: int) -> "Deferred[bool]":
        """Add C{uid} to C{gid}; False when it already was a member."""

        def thd(conn: Connection) -> bool:
            if conn.execute(select(gm.uid).where(gm.gid == gid, gm.uid == uid)).first():
                return False
            _add_member(conn, gid, uid, role, remark, now)
            return True

        return self._db.run("groups.add_member", thd)

    def create_with_members(
        self, gid: str, name: str, creator: str, members: list[str], now: int
    ) -> "Deferred[Group]":
        """A group of C{creator} (admin) and C{members}, in one transaction."""

        def thd(conn: Connection) -> Group:
            conn.execute(
                insert(s.groups).values(
                    gid=gid, name=name, creator=creator, type=1, exitable=True, created_at=now, updated_at=now
                )
            )
            _add_member(conn, gid, creator, 1, "", now)
            for uid in members:
                if uid != creator:
                    _add_member(conn, gid, uid, 0, "", now)
            return _group(conn.execute(select(*_GROUP_COLUMNS).where(g.gid == gid)).first())

        return self._db.run("groups.create_with_members", thd)

    def change(
        self, gid: str, name: str | None, add: list[str], remove: list[str], now: int
    ) -> "Deferred[tuple[list[str], list[str]]]":
        """
        Rename C{gid} (unless C{name} is None) and add and remove members,
        in one transaction; returns (added, removed): those that changed.
        """

        def thd(conn: Connection) -> tuple[list[str], list[str]]:
            values = {"updated_at": now}
            if name is not None:
                values["name"] = name
            conn.execute(update(s.groups).where(g.gid == gid).values(**values))
            current = set(conn.execute(select(gm.uid).where(gm.gid == gid)).scalars())
            added = [uid for uid in dict.fromkeys(add) if uid not in current]
            for uid in added:
                _add_member(conn, gid, uid, 0, "", now)
            removed = [uid for uid in dict.fromkeys(remove) if uid in current and uid not in added]
            if removed:
                conn.execute(delete(s.group_members).where(gm.gid == gid, gm.uid.in_(removed)))
            return added, removed

        return self._db.run("groups.change", thd)

    def remove_member(self, gid: str, uid: str) -> "Deferred[bool]":
        def thd(conn: Connection) -> bool:
            return conn.execute(
                delete(s.group_members).where(gm.gid == gid, gm.uid == uid)
            ).rowcount == 1

        return self._db.run("groups.remove_member", thd)

    def dissolve(self, gid: str, now: int) -> "Deferred[list[str]]":
        """
        End group C{gid}: it loses every member and is marked deleted (its
        messages stay, for history).  The members it had.
        """

        def thd(conn: Connection) -> list[str]:
            members = list(conn.execute(select(gm.uid).where(gm.gid == gid)).scalars())
            conn.execute(delete(s.group_members).where(gm.gid == gid))
            conn.execute(update(s.groups).where(s.groups.c.gid == gid).values(deleted_at=now, updated_at=now))
            return members

        return self._db.run("groups.dissolve", thd)


def read_pending_invites(conn: Connection, msgto: str, only_unreceived: bool) -> list[GroupInvite]:
    """L{GroupStore.pending_invites}, in C{conn}'s transaction."""
    query = select(*_INVITE_COLUMNS).where(gi.msgto == msgto, gi.state == PENDING)
    if only_unreceived:
        query = query.where(gi.received.is_(False))
    return [_invite(row) for row in conn.execute(query.order_by(gi.id))]
