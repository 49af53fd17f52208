# -*- test-case-name: tests.test_longconn -*-
"""Friends: requests and answers, removal, friend groups and remark names."""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet.defer import inlineCallbacks, returnValue
from twisted.logger import Logger

from imd.core import events, fields
from imd.errors import Conflict, InvalidField, NotFound
from imd.hub.interfaces import Event
from imd.store.roster import FriendGroup, FriendRequest

log = Logger()
MAX_FRIEND_GROUPS = 100


def request_data(request: FriendRequest) -> dict[str, Any]:
    return {
        "msgid": request.msgid,
        "from": request.msgfrom,
        "to": request.msgto,
        "note": request.msg,
        "time": request.created_at,
    }


# How each side of an accepted request files the other: a friend group and
# a remark name.
ANSWER_NAMES = ("requester_group", "requester_remark", "answerer_group", "answerer_remark")


def _check_friend_groups(groups: Any) -> list[FriendGroup]:
    """Exactly one default, unique gids, names and weights the store holds."""
    if not isinstance(groups, list) or not groups:
        raise InvalidField("friend groups must be a non-empty list")
    if len(groups) > MAX_FRIEND_GROUPS:
        raise InvalidField(f"at most {MAX_FRIEND_GROUPS} friend groups")
    checked = []
    for g in groups:
        checked.append(
            FriendGroup(
                gid=fields.gid("gid", g.gid),
                name=fields.text("name", g.name, 100),
                # The store's INTEGER column.
                weight=fields.integer("weight", g.weight, -(2**31), 2**31 - 1),
                is_default=fields.boolean("default", g.is_default, default=False),
            )
        )
    if len({g.gid for g in checked}) != len(checked):
        raise InvalidField("friend group ids must be unique")
    if sum(g.is_default for g in checked) != 1:
        raise InvalidField("exactly one friend group must be the default")
    return checked


class RosterService:
    def __init__(self, store: Any, hub: Any, clock: Any) -> None:
        self._roster = store.roster
        self._users = store.users
        self._hub = hub
        self._clock = clock

    def _now(self) -> int:
        return int(self._clock.seconds() * 1000)

    @inlineCallbacks
    def request(self, uid: str, to: Any, msgid: Any, msg: Any = "", origin: Any = None):
        """C{uid} asks C{to} to be friends; C{to}'s sessions hear of it."""
        to = fields.uid("to", to)
        msgid = fields.ident("msgid", msgid)
        msg = fields.text("msg", msg, 500, required=False)
        if to == uid:
            raise InvalidField("you cannot befriend yourself")
        user = yield self._users.get(to)
        if user is None:
            raise NotFound(f"no user {to}")
        already = yield self._roster.are_friends(uid, to)
        if already:
            raise Conflict(f"{to} is already your friend")
        request, created = yield self._roster.add_request(msgid, uid, to, msg, self._now())
        if created:
            self._hub.deliver([to], Event(events.ROSTER_REQUEST, request_data(request)))
        returnValue(request)

    @inlineCallbacks
    def request_by_telephone(self, uid: str, mobile: Any, msg: Any = "", origin: Any = None):
        """Seed 004: ask the user registered with telephone C{mobile}."""
        if not isinstance(mobile, (str, int)) or isinstance(mobile, bool):
            raise InvalidField("mobile must be a telephone number")
        user = yield self._users.get_by_telephone(str(mobile))
        if user is None:
            raise NotFound(f"nobody is registered with telephone {mobile}")
        request = yield self.request(uid, user.uid, uuid.uuid4().hex, msg, origin)
        returnValue(request)

    @inlineCallbacks
    def answer_from(self, uid: str, requester: Any, accept: Any, origin: Any = None):
        """Seed 004: answer the newest pending request from C{requester}."""
        requester = fields.uid("sender", requester)
        request = yield self._roster.pending_from(uid, requester)
        if request is None:
            raise NotFound(f"no pending friend request from {requester}")
        result = yield self.answer(uid, requester, request.msgid, accept, None, origin)
        returnValue(result)

    @inlineCallbacks
    def browse(self, uid: str, requester: Any):
        """Seed 004's browseMsg: C{uid} has seen C{requester}'s request; no more pushes."""
        requester = fields.uid("sender", requester)
        seen = yield self._roster.mark_received_from(uid, requester)
        if not seen:
            pending = yield self._roster.pending_from(uid, requester)
            if pending is None:
                raise NotFound(f"no pending friend request from {requester}")

    def request_received(self, uid: str, msgid: Any):
        """C{uid}'s client has the request C{msgid}: it is not pushed again."""
        return self._roster.mark_request_received(uid, fields.ident("msgid", msgid))

    def pending_requests(self, uid: str, only_unreceived: bool = True):
        return self._roster.pending_requests(uid, only_unreceived)

    @inlineCallbacks
    def answer(
        self,
        uid: str,
        requester: Any,
        msgid: Any,
        accept: Any,
        names: Any = None,
        origin: Any = None,
    ):
        """
        C{uid} accepts or rejects C{requester}'s request C{msgid}.  C{msg} is
        a mapping of L{ANSWER_NAMES}: the friend group and remark name each
        side files the other under (those not given: the default group, no
        remark).
        """
        requester = fields.uid("to", requester)
        msgid = fields.ident("msgid", msgid)
        accept = fields.boolean("accept", accept)
        names = _answer_names(names)
        request = yield self._roster.pending_request(uid, msgid, requester)
        if request is None:
            raise NotFound(f"no pending friend request {msgid} from {requester}")
        answered = yield self._roster.answer_request(
            request.id,
            accept,
            self._now(),
            req_gid=names.get("requester_group") or request.req_gid or "1",
            req_name=names.get("requester_remark") or request.req_name or "",
            resp_gid=names.get("answerer_group") or "1",
            resp_name=names.get("answerer_remark") or "",
        )
        if not answered:
            raise NotFound(f"no pending friend request {msgid} from {requester}")
        answer = {
            "msgid": msgid,
            "from": uid,
            "to": requester,
            "accept": accept,
            "names": names,
        }
        self._hub.deliver([requester], Event(events.ROSTER_ANSWER, answer))
        if accept:
            self._hub.deliver([requester], Event(events.ROSTER_ADDED, {"friend": uid}))
            self._hub.deliver([uid], Event(events.ROSTER_ADDED, {"friend": requester}))
        returnValue(accept)

    @inlineCallbacks
    def befriend(self, uid: str, friend: Any):
        """
        Make C{uid} and C{friend} friends without asking (an administrator's
        or a business server's decision); both sides hear of it as of an
        accepted request.
        """
        friend = fields.uid("friend", friend)
        if friend == uid:
            raise InvalidField("you cannot befriend yourself")
        for who in (uid, friend):
            user = yield self._users.get(who)
            if user is None:
                raise NotFound(f"no user {who}")
        added = yield self._roster.befriend(uid, friend, self._now())
        if added:
            self._hub.deliver([friend], Event(events.ROSTER_ADDED, {"friend": uid}))
            self._hub.deliver([uid], Event(events.ROSTER_ADDED, {"friend": friend}))
        returnValue(added)

    @inlineCallbacks
    def remove(self, uid: str, friend: Any, origin: Any = None):
        friend = fields.uid("to", friend)
        removed = yield self._roster.remove_friend(uid, friend)
        if not removed:
            raise NotFound(f"{friend} is not your friend")
        self._hub.deliver([friend], Event(events.ROSTER_DELETED, {"friend": uid}))
        self._hub.deliver([uid], Event(events.ROSTER_DELETED, {"friend": friend}))

    def friends(self, uid: str):
        return self._roster.friends(uid)

    def friend_ids(self, uid: str):
        return self._roster.friend_ids(uid)

    def friend_groups(self, uid: str):
        return self._roster.friend_groups(uid)

    def set_friend_groups(self, uid: str, groups: Any):
        """Replace C{uid}'s friend groups with C{groups} (L{FriendGroup}s)."""
        return self._roster.set_friend_groups(uid, _check_friend_groups(groups))

    @inlineCallbacks
    def set_friend_group(self, uid: str, fid: Any, gid: Any):
        fid = fields.uid("friend", fid)
        gid = fields.gid("gid", gid)
        known = yield self._roster.has_friend_group(uid, gid)
        if not known:
            raise NotFound(f"you have no friend group {gid}")
        updated = yield self._roster.update_friend(uid, fid, gid=gid)
        if not updated:
            raise NotFound(f"{fid} is not your friend")

    @inlineCallbacks
    def set_remark(self, uid: str, fid: Any, name: Any):
        fid = fields.uid("friend", fid)
        name = fields.text("name", name, 100, required=False)
        updated = yield self._roster.update_friend(uid, fid, remark=name)
        if not updated:
            raise NotFound(f"{fid} is not your friend")


def _answer_names(names: Any) -> dict[str, str]:
    if names is None:
        return {}
    if not isinstance(names, dict):
        raise InvalidField(f"names must be an object of {', '.join(ANSWER_NAMES)}")
    checked = {}
    for key in ANSWER_NAMES:
        value = names.get(key)
        if value not in (None, ""):
            checked[key] = fields.gid(key, value) if key.endswith("_group") else fields.text(key, value, 100)
    return checked
