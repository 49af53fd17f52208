# -*- test-case-name: tests.test_store_messages -*-
"""
Messages: 1:1 messages through each recipient's inbox, group messages
stored once with a per-group sequence, receipts and recall.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from imd.store import schema as s
from imd.store.batch import Batcher
from imd.store.database import Database
from imd.store.raw import Raw, chunks, marks

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


_COLUMNS = [getattr(m, f) for f in Message.__dataclass_fields__]


def _message(row) -> Message:
    return Message(**{f: row._mapping[f] for f in Message.__dataclass_fields__})


def _find(conn: Connection, sender: str, msgid: str) -> Message | None:
    row = conn.execute(select(*_COLUMNS).where(m.sender == sender, m.msgid == msgid)).first()
    return None if row is None else _message(row)


class MessageStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # 1:1 sends and acknowledgements share a transaction (one commit,
        # one fsync on SQLite, for both); group sends have their own.
        self._direct = Batcher(db, "messages.direct", _direct_many)
        self._group = Batcher(db, "messages.send_group", _group_many)

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
        """
        return self._direct.submit(_Send(sender, sender_res, to_uid, msgid, kind, body, client_time, now))

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
    ) -> "Deferred[tuple[Message, bool] | None]":
        """Commit a group message under the group's next sequence; see L{send_direct}."""
        return self._group.submit(_Send(sender, sender_res, gid, msgid, kind, body, client_time, now))

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
        self, uid: str, msgid: str, sender: str | None = None
    ) -> "Deferred[int]":
        """
        C{uid} acknowledged C{msgid} (from C{sender}, when the client says):
        it leaves C{uid}'s offline messages.  Returns how many of C{uid}'s
        messages it names.  Acknowledgements are committed in batches.
        """
        return self._direct.submit(_Ack(uid, msgid, sender))

    def offline(self, uid: str, limit: int = 500) -> "Deferred[list[Message]]":
        """C{uid}'s unacknowledged 1:1 messages, oldest first."""

        def thd(conn: Connection) -> list[Message]:
            rows = conn.execute(
                select(*_COLUMNS)
                .join(s.inbox, s.inbox.c.message_id == m.id)
                .where(s.inbox.c.uid == uid, s.inbox.c.received.is_(False))
                .order_by(s.inbox.c.seq)
                .limit(limit)
            )
            return [_message(row) for row in rows]

        return self._db.run("messages.offline", thd)

    def mark_received_until(self, uid: str, until: int) -> "Deferred[int]":
        """Acknowledge every offline message of C{uid} stored at or before C{until} (ms)."""

        def thd(conn: Connection) -> int:
            ids = select(m.id).where(m.to_uid == uid, m.created_at <= until)
            return conn.execute(
                update(s.inbox)
                .where(s.inbox.c.uid == uid, s.inbox.c.received.is_(False))
                .where(s.inbox.c.message_id.in_(ids))
                .values(received=True)
            ).rowcount

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
        self, uid: str, gid: str | None = None, limit: int = 500
    ) -> "Deferred[list[Message]]":
        """
        Others' group messages past C{uid}'s cursor, in each of its groups
        (or in C{gid}), oldest first per group.
        """

        def thd(conn: Connection) -> list[Message]:
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
            return [_message(row) for row in conn.execute(query)]

        return self._db.run("messages.group_offline", thd)

    def group_acked(self, uid: str, gid: str, seq: int) -> "Deferred[None]":
        """
        A live group message reached C{uid}: its cursor in C{gid} moves to
        C{seq} (never back, never past the last message).  Batched with
        the other writes of L{send_direct}.
        """
        return self._direct.submit(_GroupAck(uid, gid, seq))

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

    def recall(self, message_id: int, now: int) -> "Deferred[bool]":
        """Mark a message recalled; False when it already was."""

        def thd(conn: Connection) -> bool:
            return conn.execute(
                update(s.messages)
                .where(m.id == message_id, m.recalled_at.is_(None))
                .values(recalled_at=now)
            ).rowcount == 1

        return self._db.run("messages.recall", thd)

    def add_receipt(self, message_id: int, uid: str, kind: str, now: int) -> "Deferred[bool]":
        """Record C{uid}'s C{kind} receipt; False when it was already recorded."""

        def thd(conn: Connection) -> bool:
            r = s.receipts.c
            if conn.execute(
                select(r.at).where(r.message_id == message_id, r.uid == uid, r.kind == kind)
            ).first():
                return False
            conn.execute(
                insert(s.receipts).values(message_id=message_id, uid=uid, kind=kind, at=now)
            )
            return True

        return self._db.run("messages.add_receipt", thd)


class _GroupAck(NamedTuple):
    uid: str
    gid: str
    seq: int


class _Ack(NamedTuple):
    uid: str
    msgid: str
    sender: str | None


class _Send(NamedTuple):
    sender: str
    sender_res: str
    target: str  # the recipient's uid, or the group's gid
    msgid: str
    kind: str
    body: str
    client_time: str
    now: Callable[[], int]


_SELECT = "SELECT " + ", ".join("m." + f for f in Message.__dataclass_fields__)
_NEW = {
    "msgid": "text",
    "sender": "text",
    "sender_res": "text",
    "to_uid": "text",
    "gid": "text",
    "group_seq": "bigint",
    "kind": "text",
    "body": "text",
    "client_time": "text",
    "created_at": "bigint",
}
_INSERT = f"INSERT INTO messages ({', '.join(_NEW)}) SELECT * FROM k RETURNING id, sender, msgid"


def _joined(raw: Raw, select: str, column: str, pairs: list[tuple[str, str]]) -> list[tuple]:
    """
    The rows of C{select} whose (C{column}, msgid) is one of C{pairs}.  A
    join on a list of the pairs is answered from the (C{column}, msgid)
    index on both databases, one probe per pair, where SQLite would probe
    every combination of two IN lists and Postgres without statistics scans.
    """
    rows: list[tuple] = []
    for chunk in chunks(pairs, raw.chunk):
        cte, params = raw.table("k", {"a": "text", "b": "text"}, chunk)
        rows += raw.rows(f"WITH {cte} {select} FROM k JOIN messages m ON m.{column} = k.a AND m.msgid = k.b", params)
    return rows


def _send_many(raw: Raw, items: Sequence[_Send], group: bool) -> list:
    """
    Commit C{items} in one transaction with a few set-based statements;
    one result per item, as L{MessageStore.send_direct} describes.
    """
    results: list[Any] = [None] * len(items)
    known: dict[tuple[str, str], Message] = {}
    for row in _joined(raw, _SELECT, "sender", list(dict.fromkeys((it.sender, it.msgid) for it in items))):
        known[(row[2], row[1])] = Message(*row)
    if group:
        table, key, counter = "groups", "gid", "last_seq"
    else:
        table, key, counter = "users", "uid", "inbox_seq"
    targets = sorted({it.target for it in items if (it.sender, it.msgid) not in known})
    seqs: dict[str, int] = {}
    # Locked in a fixed order, so two instances' batches never deadlock;
    # the lock orders writers per inbox (or group), see users.inbox_seq.
    # NO KEY UPDATE: inserting a message takes a key-share lock on its
    # sender's row (the foreign key), which plain FOR UPDATE would block,
    # and two batches sending to each other's users would deadlock.
    lock = " FOR NO KEY UPDATE" if raw.postgres else ""
    for chunk in chunks(targets, raw.chunk):
        seqs.update(
            raw.rows(f"SELECT {key}, {counter} FROM {table} WHERE {key} IN ({marks(len(chunk))}) ORDER BY {key}{lock}", chunk)
        )
    now = items[0].now()
    new: list[tuple[int, tuple, int]] = []
    first_of: dict[tuple[str, str], int] = {}
    repeats: list[tuple[int, int]] = []
    last: dict[str, int] = {}
    for i, it in enumerate(items):
        k = (it.sender, it.msgid)
        if k in known:
            results[i] = (known[k], False)
        elif k in first_of:
            # The same msgid twice in one batch: a resend racing its original.
            repeats.append((i, first_of[k]))
        elif it.target in seqs:
            seq = seqs[it.target] = last[it.target] = seqs[it.target] + 1
            if group:
                row = (it.msgid, it.sender, it.sender_res, None, it.target, seq)
            else:
                row = (it.msgid, it.sender, it.sender_res, it.target, None, None)
            first_of[k] = len(new)
            new.append((i, row + (it.kind, it.body, it.client_time, now), seq))
    if new:
        ids: dict[tuple[str, str], int] = {}
        for chunk in chunks(new, raw.chunk):
            cte, params = raw.table("k", _NEW, [row for _, row, _ in chunk])
            # RETURNING promises no row order: ids are matched by key.
            for id_, sender, msgid in raw.rows(f"WITH {cte} {_INSERT}", params):
                ids[(sender, msgid)] = id_
        stored = [(i, Message(ids[(row[1], row[0])], *row, None), seq) for i, row, seq in new]
        if not group:
            raw.insert(
                "inbox",
                {"uid": "text", "seq": "bigint", "message_id": "bigint"},
                [(message.to_uid, seq, message.id) for _, message, seq in stored],
            )
        raw.executemany(f"UPDATE {table} SET {counter} = ? WHERE {key} = ?", [(v, k) for k, v in last.items()])
        for i, message, _ in stored:
            results[i] = (message, True)
    for i, j in repeats:
        results[i] = (results[new[j][0]][0], False)
    return results


def _direct_many(conn: Connection, items: Sequence[_Send | _Ack | _GroupAck]) -> list:
    """1:1 sends and acknowledgements, in one transaction; results in order."""
    sends = [i for i, item in enumerate(items) if isinstance(item, _Send)]
    acks = [i for i, item in enumerate(items) if isinstance(item, _Ack)]
    group_acks = [items[i] for i, item in enumerate(items) if isinstance(item, _GroupAck)]
    results: list[Any] = [None] * len(items)
    with Raw(conn) as raw:
        if group_acks:
            _group_acked_many(raw, group_acks)
        if sends:
            for i, result in zip(sends, _send_many(raw, [items[i] for i in sends], False)):
                results[i] = result
        if acks:
            for i, result in zip(acks, _mark_received_many(raw, [items[i] for i in acks])):
                results[i] = result
    return results


def _group_many(conn: Connection, items: Sequence[_Send]) -> list:
    """Group sends, in one transaction; results in order."""
    with Raw(conn) as raw:
        return _send_many(raw, items, True)


def _group_acked_many(raw: Raw, items: Sequence[_GroupAck]) -> None:
    targets: dict[tuple[str, str], int] = {}
    for uid, gid, seq in items:
        targets[(uid, gid)] = max(seq, targets.get((uid, gid), 0))
    last: dict[str, int] = {}
    for chunk in chunks(sorted({gid for _, gid in targets}), raw.chunk):
        last.update(raw.rows(f"SELECT gid, last_seq FROM groups WHERE gid IN ({marks(len(chunk))})", chunk))
    rows = []
    for (uid, gid), seq in targets.items():
        seq = min(seq, last.get(gid, 0))
        rows.append((seq, gid, uid, seq))
    raw.executemany("UPDATE group_members SET synced_seq = ? WHERE gid = ? AND uid = ? AND synced_seq < ?", rows)


def _mark_received_many(raw: Raw, items: Sequence[_Ack]) -> list[int]:
    """Acknowledgements of many users in one transaction; see L{MessageStore.mark_received}."""
    found: dict[tuple[str, str], list[tuple[int, str]]] = {}
    pairs = list(dict.fromkeys((uid, msgid) for uid, msgid, _ in items))
    for id_, to_uid, msgid, sender in _joined(raw, "SELECT m.id, m.to_uid, m.msgid, m.sender", "to_uid", pairs):
        found.setdefault((to_uid, msgid), []).append((id_, sender))
    results: list[int] = []
    to_mark: dict[int, None] = {}
    for uid, msgid, sender in items:
        ids = [id_ for id_, by in found.get((uid, msgid), ()) if sender is None or by == sender]
        results.append(len(ids))
        to_mark.update(dict.fromkeys(ids))
    # A 1:1 message has one inbox row, its recipient's: its id finds it.
    if raw.postgres:
        # One statement, not one per row; a join on the list is answered
        # from the message_id index (an IN list without statistics is not).
        for chunk in chunks(list(to_mark), raw.chunk):
            raw.execute(
                "UPDATE inbox SET received = TRUE FROM unnest(?::bigint[]) AS k(id)"
                " WHERE inbox.message_id = k.id AND inbox.received = FALSE",
                [chunk],
            )
    else:
        raw.executemany(
            "UPDATE inbox SET received = TRUE WHERE message_id = ? AND received = FALSE",
            [(id_,) for id_ in to_mark],
        )
    return results
