# -*- test-case-name: tests.test_longconn -*-
"""Groups: create, invite, answer, leave, and who is in them."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from twisted.internet.defer import inlineCallbacks, returnValue
from twisted.logger import Logger

from imd.core import events, fields
from imd.errors import Conflict, Forbidden, InvalidField, NotFound, UnknownUser
from imd.hub.interfaces import Event
from imd.store.groups import Group, GroupInvite, Member

log = Logger()
PRIVATE, PUBLIC = 1, 2
# A member's role (the store's group_members.role).
MEMBER, ADMIN = 0, 1
MAX_INVITES = 200
# Members one request may add to or remove from a group at once.
MAX_MEMBERS = 500
NAME_LENGTH = 128


def invite_data(invite: GroupInvite) -> dict[str, Any]:
    return {
        "msgid": invite.msgid,
        "from": invite.msgfrom,
        "to": invite.msgto,
        "gid": invite.gid,
        "name": invite.gname,
        "time": invite.created_at,
    }


def member_data(member: Member) -> dict[str, Any]:
    return {
        "uid": member.uid,
        # What the group calls the member: its remark there, else its name.
        "name": member.remark or member.name,
        "role": member.role,
        "joined_at": member.join_time,
    }


def _left(group: Group, uid: str, now: int, msgid: str = "") -> dict[str, Any]:
    return {"msgid": msgid, "from": uid, "gid": group.gid, "group_name": group.name, "time": now}


def group_data(group: Group, members: list[Member] | None = None) -> dict[str, Any]:
    data = {
        "gid": group.gid,
        "name": group.name,
        "creator": group.creator,
        "type": group.type,
        "exitable": group.exitable,
        "created_at": group.created_at,
    }
    if members is not None:
        data["members"] = [member_data(m) for m in members]
    return data


class GroupService:
    def __init__(self, store: Any, hub: Any, clock: Any, presence: Any = None) -> None:
        self._groups = store.groups
        self._users = store.users
        self._hub = hub
        self._clock = clock
        self._presence = presence

    def _now(self) -> int:
        return int(self._clock.seconds() * 1000)

    @inlineCallbacks
    def create(self, uid: str, name: Any, type: Any = PRIVATE, exitable: Any = True):
        """A new group with C{uid} as its admin; returns the L{Group}."""
        name = fields.text("name", name, 500)
        try:
            type = int(type)
        except (TypeError, ValueError):
            type = 0
        if type not in (PRIVATE, PUBLIC):
            raise InvalidField("type must be 1 (private) or 2 (public)")
        exitable = fields.boolean("exitable", exitable, default=True)
        group = yield self._groups.create(
            secrets.token_hex(8), name, uid, type, exitable, self._now()
        )
        log.info("{uid} created group {gid}", uid=uid, gid=group.gid)
        returnValue(group)

    @inlineCallbacks
    def _member_group(self, uid: str, gid: Any) -> Group:
        gid = fields.gid("gid", gid)
        member = yield self._groups.is_member(gid, uid)
        group = yield self._groups.get(gid) if member else None
        if group is None:
            # The same answer whether the group exists or not.
            raise NotFound(f"you are not a member of a group {gid}")
        returnValue(group)

    @inlineCallbacks
    def invite(self, uid: str, gid: Any, to: Any, msgid: Any, origin: Any = None):
        """A member invites C{to}; C{to}'s sessions hear of it."""
        group = yield self._member_group(uid, gid)
        to = fields.uid("to", to)
        msgid = fields.ident("msgid", msgid)
        user = yield self._users.get(to)
        if user is None:
            raise NotFound(f"no user {to}")
        already = yield self._groups.is_member(group.gid, to)
        if already:
            raise Conflict(f"{to} is already a member of {group.gid}")
        invite, created = yield self._groups.add_invite(
            msgid, group.gid, uid, to, group.name, self._now()
        )
        if created:
            self._hub.deliver([to], Event(events.GROUP_INVITE, invite_data(invite)))
        returnValue(invite)

    @inlineCallbacks
    def invite_many(self, uid: str, gid: Any, friends: Any, origin: Any = None):
        """Invite every user of the list C{friends}; all are checked before anyone is invited."""
        if not isinstance(friends, list) or not friends or len(friends) > MAX_INVITES:
            raise InvalidField(f"friends must be a list of 1-{MAX_INVITES} user ids")
        friends = [fields.uid("friends", str(f) if isinstance(f, int) else f) for f in friends]
        group = yield self._member_group(uid, gid)
        for friend in friends:
            user = yield self._users.get(friend)
            if user is None:
                raise NotFound(f"no user {friend}")
        invited = []
        for friend in dict.fromkeys(friends):
            member = yield self._groups.is_member(group.gid, friend)
            if not member:
                yield self.invite(uid, group.gid, friend, uuid.uuid4().hex, origin)
                invited.append(friend)
        returnValue(invited)

    @inlineCallbacks
    def browse(self, uid: str, gid: Any):
        """Seed 004's browseMsg: C{uid} has seen its invites to C{gid}; no more pushes."""
        gid = fields.gid("group_id", gid)
        seen = yield self._groups.mark_invites_received(uid, gid)
        if not seen:
            pending = yield self._groups.pending_invite(uid, gid)
            if pending is None:
                raise NotFound(f"no pending invite to group {gid}")

    def invite_received(self, uid: str, msgid: Any):
        return self._groups.mark_invite_received(uid, fields.ident("msgid", msgid))

    def pending_invites(self, uid: str, only_unreceived: bool = True):
        return self._groups.pending_invites(uid, only_unreceived)

    @inlineCallbacks
    def answer(self, uid: str, gid: Any, accept: Any, remark: Any = "", msgid: Any = None, origin: Any = None):
        """
        C{uid} accepts or declines its invite to C{gid}.  On acceptance the
        new member's sessions get the group and its members, the others
        the new member, and both sides each other's presence.
        """
        gid = fields.gid("gid", gid)
        accept = fields.boolean("accept", accept)
        remark = fields.text("remark", remark, 200, required=False)
        if msgid is not None:
            msgid = fields.ident("msgid", msgid)
        invite = yield self._groups.pending_invite(uid, gid, None)
        if invite is None:
            raise NotFound(f"no pending invite to group {gid}")
        answered = yield self._groups.answer_invite(invite.id, accept, remark, self._now())
        if not answered:
            raise NotFound(f"no pending invite to group {gid}")
        if accept:
            yield self._joined(uid, gid)
        returnValue(accept)

    @inlineCallbacks
    def _joined(self, uid: str, gid: str):
        group = yield self._groups.get(gid)
        members = yield self._groups.members(gid)
        me = next(m for m in members if m.uid == uid)
        others = [m.uid for m in members if m.uid != uid]
        self._hub.deliver([uid], Event(events.GROUP_DATA, group_data(group, members)))
        self._hub.deliver(
            others, Event(events.GROUP_MEMBER_ADDED, dict(member_data(me), gid=gid, group_name=group.name, time=self._now()))
        )
        if self._presence is not None:
            yield self._presence.introduce(uid, others)

    @inlineCallbacks
    def leave(self, uid: str, gid: Any, msgid: Any = None, origin: Any = None):
        group = yield self._member_group(uid, gid)
        if not group.exitable and group.creator != uid:
            raise Forbidden(f"group {group.gid} cannot be left")
        yield self._groups.remove_member(group.gid, uid)
        remaining = yield self._groups.member_ids(group.gid)
        data = _left(group, uid, self._now(), msgid or "")
        self._hub.deliver(remaining + [uid], Event(events.GROUP_LEAVE, data), exclude=origin)

    # -- groups whose owner sets the members (no invitations) ----------------

    @inlineCallbacks
    def _existing_users(self, what: str, uids: Any) -> Any:
        """C{uids}, each a user who exists; the users, in order, without repeats."""
        if not isinstance(uids, list) or len(uids) > MAX_MEMBERS:
            raise InvalidField(f"{what} must be a list of at most {MAX_MEMBERS} user ids")
        users = []
        for uid in dict.fromkeys(fields.uid(what, u) for u in uids):
            user = yield self._users.get(uid)
            if user is None:
                raise UnknownUser(f"no user {uid}")
            users.append(user)
        returnValue(users)

    @inlineCallbacks
    def create_with_members(self, uid: str, members: Any, name: Any = None):
        """
        A group owned by C{uid} whose members are C{uid} and C{members},
        added without invitations; its name, when none is given, is its
        members' names.  Every member's sessions get the group.  Returns
        (group, members).
        """
        users = yield self._existing_users("members", members)
        if name is None or name == "":
            owner = yield self._users.get(uid)
            names = [u.name or u.uid for u in ([owner] + [u for u in users if u.uid != uid])]
            name = ",".join(names)[:NAME_LENGTH]
        name = fields.text("name", name, NAME_LENGTH)
        group = yield self._groups.create_with_members(
            secrets.token_hex(8), name, uid, [u.uid for u in users], self._now()
        )
        members = yield self._groups.members(group.gid)
        self._hub.deliver([m.uid for m in members], Event(events.GROUP_DATA, group_data(group, members)))
        log.info("{uid} created group {gid} with {n} members", uid=uid, gid=group.gid, n=len(members))
        returnValue((group, members))

    @inlineCallbacks
    def _owned(self, uid: str, gid: Any) -> Any:
        gid = fields.gid("gid", gid)
        group = yield self._groups.get(gid)
        if group is None:
            raise NotFound(f"no group {gid}")
        if group.creator != uid:
            raise Forbidden(f"only the owner of group {gid} may change it")
        returnValue(group)

    @inlineCallbacks
    def change(self, uid: str, gid: Any, name: Any = None, add: Any = (), remove: Any = ()):
        """
        The owner renames C{gid} (C{name} not None) and adds and removes
        members.  New members get the group; members before and after get
        L{events.GROUP_CHANGED}.  Returns the time of the change (ms).
        """
        group = yield self._owned(uid, gid)
        if name is not None:
            name = fields.text("name", name, NAME_LENGTH)
        added = yield self._existing_users("add", list(add))
        removed = yield self._existing_users("remove", list(remove))
        if any(u.uid == uid for u in removed):
            raise InvalidField("the owner cannot be removed from its group; delete the group instead")
        before = yield self._groups.member_ids(group.gid)
        now = self._now()
        added, removed = yield self._groups.change(
            group.gid, name, [u.uid for u in added], [u.uid for u in removed], now
        )
        group = yield self._groups.get(group.gid)
        members = yield self._groups.members(group.gid)
        after = [m.uid for m in members]
        if added:
            self._hub.deliver(added, Event(events.GROUP_DATA, group_data(group, members)))
        data = {
            "gid": group.gid,
            "name": group.name,
            "owner": uid,
            "added": added,
            "removed": removed,
            "members": after,
            "time": now,
            # The whole group, for designs that send it again rather than the change.
            "group": group_data(group, members),
        }
        told = [m for m in dict.fromkeys(before + after) if m not in added]
        self._hub.deliver(told, Event(events.GROUP_CHANGED, data))
        returnValue(now)

    @inlineCallbacks
    def delete(self, uid: str, gid: Any):
        """
        The owner ends C{gid} (XMPP's deleteSession, the server API's
        team/remove): every member leaves it and hears so; its messages
        stay for history until they expire.  Returns the time (ms).
        """
        group = yield self._owned(uid, gid)
        now = self._now()
        members = yield self._groups.dissolve(group.gid, now)
        self._hub.deliver(members, Event(events.GROUP_DELETED, {"gid": group.gid, "owner": uid, "time": now}))
        log.info("{uid} ended group {gid}", uid=uid, gid=group.gid)
        returnValue(now)

    @inlineCallbacks
    def _admin_group(self, uid: str, gid: Any) -> Group:
        """C{gid}, of which C{uid} is the creator or an admin."""
        group = yield self._member_group(uid, gid)
        if group.creator != uid:
            members = yield self._groups.members(group.gid)
            if not any(m.uid == uid and m.role == ADMIN for m in members):
                raise Forbidden(f"only an admin of group {group.gid} may do that")
        returnValue(group)

    @inlineCallbacks
    def add_members(self, uid: str, gid: Any, uids: Any):
        """
        An admin adds C{uids} to C{gid} at once, without inviting them: each
        new member gets the group, the others the new member.  Returns
        those who were not members yet.
        """
        if not isinstance(uids, list) or not uids or len(uids) > MAX_INVITES:
            raise InvalidField(f"members must be a list of 1-{MAX_INVITES} user ids")
        uids = list(dict.fromkeys(fields.uid("members", u) for u in uids))
        group = yield self._admin_group(uid, gid)
        for member in uids:
            if (yield self._users.get(member)) is None:
                raise NotFound(f"no user {member}")
        added = []
        for member in uids:
            if (yield self._groups.add_member(group.gid, member, MEMBER, "", self._now())):
                yield self._joined(member, group.gid)
                added.append(member)
        returnValue(added)

    @inlineCallbacks
    def remove_member(self, uid: str, gid: Any, member: Any):
        """An admin takes C{member} out of C{gid}; everyone in it hears, C{member} too."""
        member = fields.uid("member", member)
        group = yield self._admin_group(uid, gid)
        if member == group.creator:
            raise Forbidden("the creator of a group cannot be removed from it")
        removed = yield self._groups.remove_member(group.gid, member)
        if not removed:
            raise NotFound(f"{member} is not a member of group {group.gid}")
        remaining = yield self._groups.member_ids(group.gid)
        self._hub.deliver(remaining + [member], Event(events.GROUP_LEAVE, _left(group, member, self._now())))

    @inlineCallbacks
    def info(self, gid: Any):
        """
        C{gid} and its members, for an administrator or a business server
        (no membership asked); None when there is no such group.
        """
        group = yield self._groups.get(fields.gid("gid", gid))
        if group is None:
            returnValue(None)
        members = yield self._groups.members(group.gid)
        returnValue((group, members))

    def groups_of(self, uid: str):
        return self._groups.groups_of(uid)

    def listing(self, after: str = "", limit: int = 100):
        """Every group with its number of members, for an administrator."""
        return self._groups.listing(after, limit)

    @inlineCallbacks
    def members(self, uid: str, gid: Any):
        group = yield self._member_group(uid, gid)
        members = yield self._groups.members(group.gid)
        returnValue(members)

    def co_member_ids(self, uid: str):
        return self._groups.co_member_ids(uid)
