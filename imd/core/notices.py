# -*- test-case-name: tests.test_serverapi -*-
"""
Custom notifications: a business server's own words (a shipping notice,
say) from one user to another or to a group's members, apart from the
conversation.  Kept, when asked, until written to a session of each
recipient; reported to the outbox, when asked, in the same transaction.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks, returnValue
from twisted.logger import Logger

from imd.core import events, fields
from imd.errors import Forbidden, NotFound
from imd.hub.interfaces import Event
from imd.store.notices import Notice

log = Logger()
MAX_BODY = 4096
# The outbox kind of a reported notification.
REPORT_KIND = "notice"
# How long a received notification's row stays (ms), for a look with SQL.
KEEP_RECEIVED_MS = 86_400_000


def notice_data(sender: str, body: str, badge: bool, time: int, to: str | None, gid: str | None, id_: int | None) -> dict[str, Any]:
    data: dict[str, Any] = {"id": id_, "from": sender, "body": body, "badge": badge, "time": time}
    if gid is not None:
        data["gid"] = gid
    else:
        data["to"] = to
    return data


def kept_data(notice: Notice) -> dict[str, Any]:
    return notice_data(
        notice.sender, notice.body, notice.badge, notice.created_at, None if notice.gid else notice.uid, notice.gid, notice.id
    )


class NoticeService:
    def __init__(self, store: Any, hub: Any, clock: Any, report: bool = False) -> None:
        """C{report}: whether notifications may be reported to the outbox (webhooks are on)."""
        self._notices = store.notices
        self._users = store.users
        self._groups = store.groups
        self._hub = hub
        self._clock = clock
        self._report = report

    @inlineCallbacks
    def send(self, sender: Any, body: Any, to: Any = None, gid: Any = None, keep: bool = True, badge: bool = True, report: bool = True):
        """
        C{sender}'s notification C{body} to user C{to} or to the other
        members of group C{gid}; with C{keep}, those offline get it when
        they next connect.  Returns how many recipients it has.
        """
        sender = fields.uid("from", sender)
        body = fields.text("body", body, MAX_BODY)
        if (yield self._users.get(sender)) is None:
            raise NotFound(f"no user {sender}")
        if gid is not None:
            gid = fields.gid("gid", gid)
            members = yield self._groups.member_ids(gid)
            if not members:
                raise NotFound(f"no group {gid}")
            if sender not in members:
                raise Forbidden(f"{sender} is not a member of group {gid}")
            recipients = [uid for uid in members if uid != sender]
        else:
            to = fields.uid("to", to)
            if (yield self._users.get(to)) is None:
                raise NotFound(f"no user {to}")
            recipients = [to]
        now = int(self._clock.seconds() * 1000)
        record = None
        if self._report and report:
            record = (REPORT_KIND, notice_data(sender, body, badge, now, to, gid, None))
        kept = yield self._notices.add(sender, recipients, gid, body, badge, now, keep, record)
        ids = {notice.uid: notice.id for notice in kept}
        for uid in recipients:
            self._hub.deliver([uid], Event(events.NOTICE, notice_data(sender, body, badge, now, to, gid, ids.get(uid))))
        log.info("notice from {sender} to {n} recipients (kept: {keep})", sender=sender, n=len(recipients), keep=keep)
        returnValue(len(recipients))

    def pending(self, uid: str, limit: int = 500):
        return self._notices.pending(uid, limit)

    def purge_received(self):
        """Forget the kept notifications received more than a day ago."""
        return self._notices.purge_received(int(self._clock.seconds() * 1000) - KEEP_RECEIVED_MS)

    def received(self, uid: str, notice_id: Any):
        """A kept notice was written to a session of C{uid}: it is not kept any longer."""
        return self._notices.mark_received(uid, notice_id)
