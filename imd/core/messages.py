# -*- test-case-name: tests.test_longconn -*-
"""
Messages: send (1:1 and group), acknowledge, offline sync, history,
receipts and recall.  A message is committed before anyone hears of it,
and delivered live to every session of its recipients after that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import fail, inlineCallbacks, returnValue
from twisted.logger import Logger

from imd.config import MessagesConfig
from imd.core import events, fields
from imd.core.groups import invite_data
from imd.core.notices import kept_data
from imd.core.roster import request_data
from imd.errors import Conflict, Forbidden, IMError, InvalidField, NotFound, TooLate
from imd.hub.interfaces import Event
from imd.store.messages import Message, message_data
from imd.store.missed import MissedQuery

log = Logger()

KINDS = ("text", "image", "file", "voice", "custom", "notification")
RECEIPT_KINDS = ("read", "delivered")
DAY_MS = 86_400_000
MAX_UNREAD_PEERS = 500
# The outbox kinds of receipts and recalls, when messages are reported.
RECEIPT_REPORT, RECALL_REPORT = "receipt", "recall"


def _same_message(message: Message, created: bool, body: str, to: str | None = None, gid: str | None = None) -> None:
    """A resent msgid must be the same message, or the client has a bug worth telling."""
    if not created and (message.body != body or message.to_uid != to or message.gid != gid):
        raise Conflict(f"msgid {message.msgid} was already used for another message")


@dataclass
class Cursor:
    """Where the next page of what a session missed starts (see L{MessageService.pending})."""

    direct_seq: int = 0
    group: tuple[str, int] | None = None
    done: bool = False


class MessageService:
    def __init__(
        self, store: Any, hub: Any, config: MessagesConfig, clock: Any, metrics: Any = None, outbox: str | None = None
    ) -> None:
        """C{outbox}: the outbox kind each new message adds a row of (None: none)."""
        self._messages = store.messages
        self._missed = store.missed
        self._outbox = outbox
        self._roster = store.roster
        self._groups = store.groups
        self._hub = hub
        self._config = config
        self._clock = clock
        self._metrics = metrics
        self._counted: dict[str, Any] = {}

    @property
    def direct_in_order(self) -> bool:
        """
        Whether 1:1 sends, L{acknowledge} and L{acknowledge_group} are
        committed, and their Deferreds fire, in the order they are called,
        even while earlier ones are still in flight: they go straight to
        one queue of the store, which answers in order.
        Not with C{friends_only}, where a send first looks up the roster.
        """
        return not self._config.friends_only

    def _now(self) -> int:
        return int(self._clock.seconds() * 1000)

    def send(
        self,
        sender: str,
        msgid: Any,
        body: Any,
        to: Any = None,
        gid: Any = None,
        kind: str = "text",
        client_time: Any = "",
        sender_res: str = "",
        origin: Any = None,
    ):
        """
        Commit a message from C{sender} to user C{to} or group C{gid} and
        deliver it; returns the stored L{Message}.  A resent C{msgid} is
        answered with the stored message and delivered no second time.
        """
        try:
            msgid = fields.ident("msgid", msgid)
            body = fields.text("body", body, self._config.max_body, required=False)
            client_time = fields.text("time", client_time, 32, required=False)
            if kind not in KINDS:
                raise InvalidField(f"kind must be one of {', '.join(KINDS)}")
            if gid is not None and gid != "":
                gid = fields.gid("gid", gid)
            else:
                gid = None
                to = fields.uid("to", to)
        except IMError:
            return fail()
        if gid is not None:
            return self._send_group(sender, sender_res, gid, msgid, kind, body, client_time, origin)
        if self._config.friends_only and to != sender:
            return self._send_to_friend(sender, sender_res, to, msgid, kind, body, client_time, origin)
        # The common case, without a generator: it is most of the traffic.
        d = self._messages.send_direct(sender, sender_res, to, msgid, kind, body, client_time, self._now, self._outbox)
        d.addCallback(self._sent_direct, to, body, origin)
        return d

    def _sent_direct(self, result: Any, to: str, body: str, origin: Any) -> Message:
        if result is None:
            raise NotFound(f"no user {to}")
        message, created = result
        _same_message(message, created, body, to=to)
        if created:
            self._delivered(message, [to] if to != message.sender else [], origin)
        return message

    @inlineCallbacks
    def _send_to_friend(self, sender, sender_res, to, msgid, kind, body, client_time, origin):
        friends = yield self._roster.are_friends(sender, to)
        if not friends:
            raise Forbidden(f"{to} is not your friend")
        result = yield self._messages.send_direct(sender, sender_res, to, msgid, kind, body, client_time, self._now, self._outbox)
        returnValue(self._sent_direct(result, to, body, origin))

    @inlineCallbacks
    def _send_group(self, sender, sender_res, gid, msgid, kind, body, client_time, origin):
        # One look-up answers both whether the sender may send and whom to
        # deliver to.  Someone who joins before the commit finds the
        # message past their cursor; someone who leaves gets it live.
        members = yield self._groups.member_ids(gid)
        if sender not in members:
            group = yield self._groups.get(gid)
            if group is None:
                raise NotFound(f"no group {gid}")
            raise Forbidden(f"you are not a member of group {gid}")
        result = yield self._messages.send_group(
            sender, sender_res, gid, msgid, kind, body, client_time, self._now, self._outbox
        )
        if result is None:
            raise NotFound(f"no group {gid}")
        message, created = result
        _same_message(message, created, body, gid=gid)
        if created:
            self._delivered(message, [uid for uid in members if uid != sender], origin)
        returnValue(message)

    def _delivered(self, message: Message, recipients: list[str], origin: Any) -> None:
        if self._metrics is not None:
            counted = self._counted.get(message.kind)
            if counted is None:
                # labels() takes a lock and checks its values: a third of
                # what counting a message cost.
                counted = self._counted[message.kind] = self._metrics.messages.labels(message.kind)
            counted.inc()
        data = message_data(message)
        self._hub.deliver(recipients, Event(events.MESSAGE, data))
        self._hub.deliver([message.sender], Event(events.MESSAGE_COPY, data), exclude=origin)

    def acknowledge(self, uid: str, msgid: Any, sender: Any = None, lazy: bool = False):
        """
        C{uid}'s client has message C{msgid}: it leaves the offline messages.
        C{lazy}: the client awaits no answer, so the acknowledgement may wait
        a few ms for the commit of the next message instead of paying one.
        A server that stops before then forgets it: the message comes again
        and the client drops it by its msgid.
        """
        msgid = fields.ident("msgid", msgid)
        if sender is not None:
            sender = fields.uid("from", sender)
        return self._messages.mark_received(uid, msgid, sender, lazy)

    def offline(self, uid: str, limit: int = 500):
        return self._messages.offline(uid, limit)

    @inlineCallbacks
    def pending(self, uid: str, messages: bool = True, others: bool = True, limit: int = 500, cursor: "Cursor | None" = None):
        """
        What C{uid} has not received, as the events that would have
        brought it, for a session that logs in or missed live events: with
        C{messages}, a page of its unacknowledged 1:1 messages and of group
        messages past its cursors (C{limit} of each, oldest first, from
        C{cursor}, which is moved past them); with C{others}, the friend
        requests, group invites and kept notifications it has not received.
        """
        if cursor is None:
            cursor = Cursor()
        missed = yield self._missed.read(MissedQuery(uid, messages, others, limit, cursor.direct_seq, cursor.group))
        found: list[Event] = []
        if messages:
            direct, group = missed.direct, missed.group
            if direct:
                cursor.direct_seq = direct[-1][0]
            if group:
                cursor.group = (group[-1].gid, group[-1].group_seq)
            cursor.done = len(direct) < limit and len(group) < limit
            found += [Event(events.MESSAGE, message_data(message)) for _, message in direct]
            found += [Event(events.MESSAGE, message_data(message)) for message in group]
        found += [Event(events.ROSTER_REQUEST, request_data(request)) for request in missed.requests]
        found += [Event(events.GROUP_INVITE, invite_data(invite)) for invite in missed.invites]
        found += [Event(events.NOTICE, kept_data(notice)) for notice in missed.notices]
        returnValue(found)

    @inlineCallbacks
    def unread(self, uid: str, peers: Any):
        """
        How many messages from each of C{peers} C{uid} has not read: those
        after the newest one it sent a read receipt for, on any channel,
        recalled ones left out.  Every peer asked for is in the answer.
        """
        if not isinstance(peers, list) or len(peers) > MAX_UNREAD_PEERS:
            raise InvalidField(f"peers must be a list of at most {MAX_UNREAD_PEERS} user ids")
        peers = list(dict.fromkeys(fields.uid("peer", peer) for peer in peers))
        counts = yield self._messages.unread(uid, peers)
        returnValue({peer: counts.get(peer, 0) for peer in peers})

    def received_until(self, uid: str, until_ms: int, shown_before: int | None = None):
        """
        C{uid}'s client has its offline messages stored at or before
        C{until_ms}; with C{shown_before}, those stored before it too, when
        the last offline fetch showed them (and only then).
        """
        return self._messages.mark_received_until(uid, until_ms, shown_before)

    def history(self, uid: str, peer: Any, limit: int = 500):
        """The conversation of C{uid} with C{peer} over the last C{history_days}."""
        peer = fields.uid("peer", peer)
        since = self._now() - self._config.history_days * DAY_MS
        return self._messages.history(uid, peer, since, limit)

    @inlineCallbacks
    def _require_member(self, uid: str, gid: Any) -> str:
        gid = fields.gid("gid", gid)
        member = yield self._groups.is_member(gid, uid)
        if not member:
            # The same answer whether the group exists or not: a non-member
            # learns nothing about it.
            raise NotFound(f"you are not a member of a group {gid}")
        returnValue(gid)

    @inlineCallbacks
    def group_offline(self, uid: str, gid: Any = None, limit: int = 500):
        if gid is not None and gid != "":
            gid = yield self._require_member(uid, gid)
        else:
            gid = None
        messages = yield self._messages.group_offline(uid, gid, limit)
        returnValue(messages)

    @inlineCallbacks
    def group_synced(self, uid: str, gid: Any, until_ms: int | None = None, seq: Any = None):
        gid = yield self._require_member(uid, gid)
        if seq is not None:
            seq = fields.integer("seq", seq)
        cursor = yield self._messages.group_synced(uid, gid, seq=seq, until=until_ms)
        returnValue(cursor)

    @inlineCallbacks
    def group_history(self, uid: str, gid: Any, limit: int = 500):
        gid = yield self._require_member(uid, gid)
        since = self._now() - self._config.history_days * DAY_MS
        messages = yield self._messages.group_history(gid, since, limit)
        returnValue(messages)

    @inlineCallbacks
    def acknowledge_group(self, uid: str, gid: Any, seq: Any, lazy: bool = False):
        """A live group message reached C{uid}: its cursor moves past it (C{lazy} as L{acknowledge})."""
        yield self._messages.group_acked(uid, fields.gid("gid", gid), fields.integer("seq", seq), lazy)

    def received(self, uid: str, data: dict):
        """
        C{uid}'s client has the message of an event (L{message_data}, as
        the hub delivered it): it leaves the offline messages or the
        group cursor moves past it.
        """
        if "gid" in data:
            return self._messages.group_acked(uid, data["gid"], data["seq"])
        return self._messages.mark_received(uid, data["msgid"], data["from"])

    @inlineCallbacks
    def _find(self, uid: str, msgid: Any, to: Any, gid: Any, sent_by_me: bool):
        """
        The message a receipt or recall names: for 1:1, C{to} is the other
        side (its sender for a receipt, its recipient for a recall).
        """
        msgid = fields.ident("msgid", msgid)
        if gid is not None and gid != "":
            gid = yield self._require_member(uid, gid)
            message = yield self._messages.find_in_group(gid, msgid, uid if sent_by_me else None)
        else:
            to = fields.uid("to", to)
            if sent_by_me:
                message = yield self._messages.get(uid, msgid)
                if message is not None and message.to_uid != to:
                    message = None
            else:
                message = yield self._messages.get(to, msgid)
                if message is not None and message.to_uid != uid:
                    message = None
        if message is None:
            raise NotFound(f"no message {msgid}")
        returnValue(message)

    @inlineCallbacks
    def receipt(self, uid: str, msgid: Any, to: Any = None, gid: Any = None, kind: Any = "read", origin: Any = None):
        """
        C{uid} has read (or received) a message: its sender hears of it once.
        For 1:1, C{to} is the message's sender.
        """
        if kind not in RECEIPT_KINDS:
            raise InvalidField(f"kind must be one of {', '.join(RECEIPT_KINDS)}")
        message = yield self._find(uid, msgid, to, gid, sent_by_me=False)
        if message.sender == uid:
            raise InvalidField("a receipt is for a message someone else sent")
        # Only read receipts of 1:1 messages are reported (the webhooks copy no others).
        report = RECEIPT_REPORT if self._outbox and kind == "read" and message.gid is None else None
        recorded = yield self._messages.add_receipt(message.id, uid, kind, self._now(), report)
        if recorded:
            data = {"msgid": message.msgid, "from": uid, "kind": kind}
            if message.gid is not None:
                data["gid"] = message.gid
            self._hub.deliver([message.sender], Event(events.RECEIPT, data))
        returnValue(message)

    @inlineCallbacks
    def recall_by_id(self, uid: str, message_id: Any):
        """C{uid} takes back its message stored under C{message_id} (the server's id); see L{recall}."""
        message = yield self._messages.get_by_id(fields.integer("id", message_id))
        if message is None or message.sender != uid:
            raise NotFound(f"{uid} sent no message {message_id}")
        result = yield self.recall(uid, message.msgid, to=message.to_uid, gid=message.gid)
        returnValue(result)

    @inlineCallbacks
    def recall(self, uid: str, msgid: Any, to: Any = None, gid: Any = None, origin: Any = None):
        """C{uid} takes back its own message within C{recall_window} seconds."""
        message = yield self._find(uid, msgid, to, gid, sent_by_me=True)
        if self._now() - message.created_at > self._config.recall_window * 1000:
            raise TooLate(f"a message can be recalled within {self._config.recall_window} s only")
        recalled = yield self._messages.recall(message.id, self._now(), RECALL_REPORT if self._outbox else None)
        if recalled:
            data = {"msgid": message.msgid, "from": uid}
            if message.gid is not None:
                data["gid"] = message.gid
                recipients = yield self._groups.member_ids(message.gid)
            else:
                data["to"] = message.to_uid
                recipients = [message.to_uid]
            event = Event(events.RECALL, data)
            self._hub.deliver([r for r in recipients if r != uid], event)
            self._hub.deliver([uid], event, exclude=origin)
        returnValue(message)
