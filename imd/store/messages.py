# -*- test-case-name: tests.test_store -*-
"""
Messages: 1:1 messages through each recipient's inbox, group messages
stored once with a per-group sequence, receipts and recall.  Sends and
acknowledgements are committed in batches, by L{imd.store.persist}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from sqlalchemy import and_, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from imd.store import schema as s
from imd.store.batch import Batcher
from imd.store.database import Database
from imd.store.outbox import add_txn

m = s.messages.c


@dataclass(frozen=True)
class Message:
    id: int
    msgid: str
    sender: str
    sender_res: str
    to_uid: str | None
    gid: str | None
    group_seq: int | None
    kind: str
    body: str
    client_time: str
    created_at: int
    recalled_at: int | None


def message_data(message: Message) -> dict[str, Any]:
    """C{message} under imd's own field names, as events and the outbox carry it."""
    data = {
        "id": message.id,
        "msgid": message.msgid,
        "from": message.sender,
        "from_res": message.sender_res,
        "kind": message.kind,
        "body": message.body,
        "time": message.created_at,
        "client_time": message.client_time,
        "recalled": message.recalled_at is not None,
    }
    if message.gid is not None:
        data["gid"] = message.gid
        data["seq"] = message.group_seq
    else:
        data["to"] = message.to_uid
    return data


def recall_data(message: Message) -> dict[str, Any]:
    """A recall under imd's own names, as the outbox carries it: the message, and when."""
    data = message_data(message)
    data["recalled_at"] = message.recalled_at
    return data


def receipt_data(message: Message, uid: str, kind: str, at: int) -> dict[str, Any]:
    """C{uid}'s C{kind} receipt of C{message}, as the outbox carries it."""
    data = {"id": message.id, "msgid": message.msgid, "from": uid, "to": message.sender, "kind": kind, "time": at}
    if message.gid is not None:
        data["gid"] = message.gid
    return data


# The requests of a batch, which L{imd.store.persist} writes.
class Send(NamedTuple):
    sender: str
    sender_res: str
    target: str  # the recipient's uid, or the group's gid
    msgid: str
    kind: str
    body: str
    client_time: str
    now: Callable[[], int]
    # The kind of the outbox row a new message adds, if any.
    outbox: str | None = None


class Ack(NamedTuple):
    uid: str
    msgid: str
    sender: str | None


class GroupAck(NamedTuple):
    uid: str
    gid: str
    seq: int


_COLUMNS = [getattr(m, f) for f in Message.__dataclass_fields__]


def _message(row) -> Message:
    return Message(**{f: row._mapping[f] for f in Message.__dataclass_fields__})


def _find(conn: Connection, sender: str, msgid: str) -> Message | None:
    row = conn.execute(select(*_COLUMNS).where(m.sender == sender, m.msgid == msgid)).first()
    return None if row is None else _message(row)


class MessageStore:
    def __init__(self, db: Database, process: Any = None) -> None:
        """C{process}: the L{imd.store.process.StoreProcess} that runs the batches of sends and acknowledgements, if any."""
        # Not at the top: persist builds this module's Messages.
        from imd.store.persist import persist_direct_txn, persist_group_txn

        self._db = db
        if process is None:
            # Large batches, one at a time: here, where the store's Python
            # and the reactor's share one core, larger batches commit more
            # messages per page written.
            run, max_batch, depth = db.run_raw, 4096, 1
        else:
            # Smaller batches, and a second one waiting in the process
            # while it commits the first: this process answers one batch
            # while the other commits one, instead of the two taking turns
            # over every message in flight.  How small was measured on
            # each database (docs/benchmarks.rst, rounds 7 and 8): on
            # SQLite 512 went a sixth faster than 1,024 once a batch
            # reached the process as soon as it was sent; on Postgres,
            # once its plans no longer read whole tables, 1,024 went a
            # twentieth faster than 512.
            run, max_batch, depth = process.run_batch, 512 if db.dialect == "sqlite" else 1024, 2
        # 1:1 sends and acknowledgements share a transaction (one commit,
        # one fsync on SQLite, for both); group sends have their own.
        self._direct = Batcher(run, "messages.direct", persist_direct_txn, max_batch, depth, clock=db.reactor)
        self._group = Batcher(run, "messages.send_group", persist_group_txn, max_batch, depth)

    def send_direct(
        self,
        sender: str,
        sender_res: str,
        to_uid: str,
        msgid: str,
        kind: str,
        body: str,
        client_time: str,
        now: Callable[[], int],
        outbox: str | None = None,
    ) -> "Deferred[tuple[Message, bool] | None]":
        """
        Commit a 1:1 message and put it in C{to_uid}'s inbox.  Returns
        (message, created): created is False for a resend of a C{msgid}
        already stored, which is returned as stored.  None when C{to_uid}
        does not exist.

        C{now} is read after the recipient's inbox row is locked, so the
        messages of one inbox get their times in commit order and a
        cursor by time never passes one committed later.  Messages sent
        while a commit is in flight are committed together (L{Batcher}).

        With C{outbox}, a new message (not a resend) adds a row of that
        kind to the outbox, carrying L{message_data} as JSON, in the same
        transaction: it is committed if and only if the message is.
        """
        return self._direct.submit(Send(sender, sender_res, to_uid, msgid, kind, body, client_time, now, outbox))

    def send_group(
        self,
        sender: str,
        sender_res: str,
        gid: str,
        msgid: str,
        kind: str,
        body: str,
        client_time: str,
        now: Callable[[], int],
        outbox: str | None = None,
    ) -> "Deferred[tuple[Message, bool] | None]":
        """Commit a group message under the group's next sequence; see L{send_direct}."""
        return self._group.submit(Send(sender, sender_res, gid, msgid, kind, body, client_time, now, outbox))

    def get_by_id(self, message_id: int) -> "Deferred[Message | None]":
        def thd(conn: Connection) -> Message | None:
            row = conn.execute(select(*_COLUMNS).where(m.id == message_id)).first()
            return None if row is None else _message(row)

        return self._db.run("messages.get_by_id", thd)

    def get(self, sender: str, msgid: str) -> "Deferred[Message | None]":
        return self._db.run("messages.get", _find, sender, msgid)

    def find_in_group(
        self, gid: str, msgid: str, sender: str | None = None
    ) -> "Deferred[Message | None]":
        """Group C{gid}'s message C{msgid} (C{sender}'s, when given; else the newest)."""

        def thd(conn: Connection) -> Message | None:
            query = select(*_COLUMNS).where(m.gid == gid, m.msgid == msgid)
            if sender is not None:
                query = query.where(m.sender == sender)
            row = conn.execute(query.order_by(m.group_seq.desc()).limit(1)).first()
            return None if row is None else _message(row)

        return self._db.run("messages.find_in_group", thd)

    def mark_received(
        self, uid: str, msgid: str, sender: str | None = None, lazy: bool = False
    ) -> "Deferred[int]":
        """
        C{uid} acknowledged C{msgid} (from C{sender}, when the client says):
        it leaves C{uid}'s offline messages.  Returns how many of C{uid}'s
        undelivered messages it names (0 for one acknowledged already).
        Acknowledgements are committed in batches; a C{lazy} one waits for
        the next message's commit (L{imd.store.batch}), a few ms at most.
        """
        return self._direct.submit(Ack(uid, msgid, sender), lazy)

    def offline(self, uid: str, limit: int = 500) -> "Deferred[list[Message]]":
        """
        C{uid}'s unacknowledged 1:1 messages, oldest first; the inbox
        sequence of the last one is remembered as shown to C{uid}
        (L{mark_received_until}).
        """
        u = s.users.c

        def thd(conn: Connection) -> list[Message]:
            page = read_offline_page(conn, uid, 0, limit)
            if page:
                last = page[-1][0]
                # Never backwards: of two fetches racing, both showed what they showed.
                conn.execute(
                    update(s.users).where(u.uid == uid, u.offline_shown_seq < last).values(offline_shown_seq=last)
                )
            return [message for _, message in page]

        return self._db.run("messages.offline", thd)

    def mark_received_until(self, uid: str, until: int, shown_before: int | None = None) -> "Deferred[int]":
        """
        Acknowledge every offline message of C{uid} stored at or before
        C{until} (ms); with C{shown_before}, also those stored before it
        that the last offline fetch showed (L{offline}).
        """
        i, u = s.inbox.c, s.users.c

        def thd(conn: Connection) -> int:
            stored = m.created_at <= until
            if shown_before is not None:
                shown = select(u.offline_shown_seq).where(u.uid == uid).scalar_subquery()
                stored = or_(stored, and_(m.created_at < shown_before, i.seq <= shown))
            ids = select(m.id).join(s.inbox, i.message_id == m.id).where(i.uid == uid, m.to_uid == uid, stored)
            return conn.execute(delete(s.inbox).where(i.uid == uid, i.message_id.in_(ids))).rowcount

        return self._db.run("messages.mark_received_until", thd)

    def history(
        self, uid: str, peer: str, since: int, limit: int = 500
    ) -> "Deferred[list[Message]]":
        """The 1:1 conversation of C{uid} and C{peer} since C{since} (ms), oldest first."""

        def thd(conn: Connection) -> list[Message]:
            rows = conn.execute(
                select(*_COLUMNS)
                .where(
                    or_(
                        and_(m.sender == uid, m.to_uid == peer),
                        and_(m.sender == peer, m.to_uid == uid),
                    )
                )
                .where(m.created_at >= since)
                .order_by(m.created_at.desc(), m.id.desc())
                .limit(limit)
            )
            return [_message(row) for row in rows][::-1]

        return self._db.run("messages.history", thd)

    def group_offline(
        self, uid: str, gid: str | None = None, limit: int = 500, after: tuple[str, int] | None = None
    ) -> "Deferred[list[Message]]":
        """
        Others' group messages past C{uid}'s cursor, in each of its groups
        (or in C{gid}), oldest first per group; with C{after}, a (gid,
        seq), only those past it in that order (the next page).
        """
        return self._db.run("messages.group_offline", read_group_offline, uid, gid, limit, after)

    def group_acked(self, uid: str, gid: str, seq: int, lazy: bool = False) -> "Deferred[None]":
        """
        A live group message reached C{uid}: its cursor in C{gid} moves to
        C{seq} (never back, never past the last message).  Batched with
        the other writes of L{send_direct}, C{lazy} as L{mark_received}.
        """
        return self._direct.submit(GroupAck(uid, gid, seq), lazy)

    def flush(self) -> None:
        """Lazy acknowledgements go now (the store is stopping)."""
        self._direct.flush()

    def group_synced(
        self, uid: str, gid: str, seq: int | None = None, until: int | None = None
    ) -> "Deferred[int]":
        """
        Move C{uid}'s cursor in C{gid} forward to C{seq}, or to the last
        message stored at or before C{until} (ms).  Never moves it back.
        Returns the cursor.
        """

        def thd(conn: Connection) -> int:
            target = seq
            if target is None:
                target = conn.execute(
                    select(m.group_seq)
                    .where(m.gid == gid, m.created_at <= until)
                    .order_by(m.group_seq.desc())
                    .limit(1)
                ).scalar()
            gm = s.group_members.c
            if target is not None:
                # Never past the last message: a cursor ahead of it would
                # hide the messages still to come.
                last = conn.execute(select(s.groups.c.last_seq).where(s.groups.c.gid == gid)).scalar() or 0
                target = min(target, last)
                conn.execute(
                    update(s.group_members)
                    .where(gm.gid == gid, gm.uid == uid, gm.synced_seq < target)
                    .values(synced_seq=target)
                )
            return conn.execute(
                select(gm.synced_seq).where(gm.gid == gid, gm.uid == uid)
            ).scalar() or 0

        return self._db.run("messages.group_synced", thd)

    def group_history(self, gid: str, since: int, limit: int = 500) -> "Deferred[list[Message]]":
        def thd(conn: Connection) -> list[Message]:
            rows = conn.execute(
                select(*_COLUMNS)
                .where(m.gid == gid, m.created_at >= since)
                .order_by(m.group_seq.desc())
                .limit(limit)
            )
            return [_message(row) for row in rows][::-1]

        return self._db.run("messages.group_history", thd)

    def recall(self, message_id: int, now: int, outbox: str | None = None) -> "Deferred[bool]":
        """
        Mark a message recalled; False when it already was.  With
        C{outbox}, the recall adds a row of that kind (L{recall_data}) in
        the same transaction.
        """

        def thd(conn: Connection) -> bool:
            recalled = conn.execute(
                update(s.messages)
                .where(m.id == message_id, m.recalled_at.is_(None))
                .values(recalled_at=now)
            ).rowcount == 1
            if recalled and outbox is not None:
                message = _message(conn.execute(select(*_COLUMNS).where(m.id == message_id)).first())
                add_txn(conn, outbox, recall_data(message), now)
            return recalled

        return self._db.run("messages.recall", thd)

    def add_receipt(
        self, message_id: int, uid: str, kind: str, now: int, outbox: str | None = None
    ) -> "Deferred[bool]":
        """
        Record C{uid}'s C{kind} receipt; False when it was already recorded.
        With C{outbox}, a new receipt adds a row of that kind
        (L{receipt_data}) in the same transaction.
        """

        def thd(conn: Connection) -> bool:
            r = s.receipts.c
            if conn.execute(
                select(r.at).where(r.message_id == message_id, r.uid == uid, r.kind == kind)
            ).first():
                return False
            conn.execute(
                insert(s.receipts).values(message_id=message_id, uid=uid, kind=kind, at=now)
            )
            if outbox is not None:
                message = _message(conn.execute(select(*_COLUMNS).where(m.id == message_id)).first())
                add_txn(conn, outbox, receipt_data(message, uid, kind, now), now)
            return True

        return self._db.run("messages.add_receipt", thd)

    def unread(self, uid: str, peers: list[str]) -> "Deferred[dict[str, int]]":
        """
        For each of C{peers}, how many of its messages to C{uid} are not
        recalled and newer than the newest of them C{uid} has read: a read
        receipt covers the message it names and every one before it.
        One query for all of C{peers}; a peer with none is absent.
        """

        def thd(conn: Connection) -> dict[str, int]:
            if not peers:
                return {}
            r = s.receipts.c
            read = s.messages.alias("read")
            last_read = (
                select(read.c.sender, func.max(read.c.id).label("last"))
                .select_from(s.receipts.join(read, read.c.id == r.message_id))
                .where(r.uid == uid, r.kind == "read", read.c.to_uid == uid, read.c.sender.in_(peers))
                .group_by(read.c.sender)
                .subquery()
            )
            rows = conn.execute(
                select(m.sender, func.count())
                .select_from(s.messages.outerjoin(last_read, last_read.c.sender == m.sender))
                .where(m.to_uid == uid, m.sender.in_(peers), m.recalled_at.is_(None))
                .where(m.id > func.coalesce(last_read.c.last, 0))
                .group_by(m.sender)
            )
            return {sender: count for sender, count in rows}

        return self._db.run("messages.unread", thd)


def read_offline_page(conn: Connection, uid: str, after_seq: int, limit: int) -> list[tuple[int, Message]]:
    """
    C{uid}'s unacknowledged 1:1 messages past its inbox's C{after_seq},
    oldest first, each with its inbox sequence: the next page starts
    after the last one, whether or not this page is acknowledged.
    """
    i = s.inbox.c
    rows = conn.execute(
        select(i.seq, *_COLUMNS)
        .join(s.inbox, i.message_id == m.id)
        .where(i.uid == uid, i.seq > after_seq)
        .order_by(i.seq)
        .limit(limit)
    )
    return [(row.seq, _message(row)) for row in rows]


def read_group_offline(
    conn: Connection, uid: str, gid: str | None, limit: int, after: tuple[str, int] | None
) -> list[Message]:
    """L{MessageStore.group_offline}, in C{conn}'s transaction."""
    gm = s.group_members.c
    query = (
        select(*_COLUMNS)
        .join(s.group_members, and_(gm.gid == m.gid, gm.uid == uid))
        .where(m.group_seq > gm.synced_seq, m.sender != uid)
        .order_by(m.gid, m.group_seq)
        .limit(limit)
    )
    if gid is not None:
        query = query.where(m.gid == gid)
    if after is not None:
        query = query.where(tuple_(m.gid, m.group_seq) > tuple_(*after))
    return [_message(row) for row in conn.execute(query)]
