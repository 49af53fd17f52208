# -*- test-case-name: tests.test_store_batch,tests.test_store_crash,tests.test_store_outbox -*-
"""
What one batch of messages writes, in one transaction.

Every send and acknowledgement of L{imd.store.messages.MessageStore} goes
through here, many at a time (L{imd.store.batch.Batcher}).  A transaction
is a short list of steps, one helper per group of tables, each a few
set-based statements on the driver's cursor (L{imd.store.raw}) however
large the batch: this is the measured hot path.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple, Sequence

from imd.store import outbox
from imd.store.messages import Ack, GroupAck, Message, Send, message_data
from imd.store.raw import Raw, chunks, marks


def persist_direct_txn(raw: Raw, items: Sequence[Send | Ack | GroupAck]) -> list:
    """1:1 sends and acknowledgements, in one transaction (L{imd.store.database.Database.run_raw}); results in order."""
    sends = [i for i, item in enumerate(items) if isinstance(item, Send)]
    acks = [i for i, item in enumerate(items) if isinstance(item, Ack)]
    group_acks = [item for item in items if isinstance(item, GroupAck)]
    results: list[Any] = [None] * len(items)
    if group_acks:
        _move_group_cursors_txn(raw, group_acks)
    if sends:
        for i, result in zip(sends, _send_txn(raw, [items[i] for i in sends], _INBOX_SEQ)):
            results[i] = result
    if acks:
        for i, result in zip(acks, _mark_received_txn(raw, [items[i] for i in acks])):
            results[i] = result
    return results


def persist_group_txn(raw: Raw, items: Sequence[Send]) -> list:
    """Group sends, in one transaction (L{imd.store.database.Database.run_raw}); results in order."""
    return _send_txn(raw, items, _GROUP_SEQ)


class _Sequence(NamedTuple):
    """Where the sequence numbers of a message's target are counted."""

    table: str
    key: str
    counter: str


_INBOX_SEQ = _Sequence("users", "uid", "inbox_seq")
_GROUP_SEQ = _Sequence("groups", "gid", "last_seq")


def _send_txn(raw: Raw, items: Sequence[Send], sequence: _Sequence) -> list:
    """
    Store the messages of C{items}; one result per item, as
    L{imd.store.messages.MessageStore.send_direct} describes.
    """
    known = _find_messages_txn(raw, items)
    seqs = _lock_sequences_txn(raw, sequence, sorted({it.target for it in items if (it.sender, it.msgid) not in known}))
    # The time is read once the targets are locked; see send_direct.
    results, new, repeats, last = _number(items, known, seqs, sequence is _GROUP_SEQ, items[0].now())
    if new:
        stored = _insert_messages_txn(raw, new)
        if sequence is _INBOX_SEQ:
            _insert_inbox_txn(raw, stored)
        _write_sequences_txn(raw, sequence, last)
        _add_to_outbox_txn(raw, items, stored)
        for i, message, _ in stored:
            results[i] = (message, True)
    for i, j in repeats:
        results[i] = (results[new[j][0]][0], False)
    return results


_SELECT = "SELECT " + ", ".join("m." + f for f in Message.__dataclass_fields__)
_WIDTH = len(Message.__dataclass_fields__)


def _find_messages_txn(raw: Raw, items: Sequence[Send]) -> dict[tuple[str, str], Message]:
    """The messages already stored under the (sender, msgid) of C{items}."""
    known: dict[tuple[str, str], Message] = {}
    query = f"{_SELECT} FROM k JOIN messages m ON m.sender = k.a AND m.msgid = k.b"
    for row in _joined(raw, query, _WIDTH, list(dict.fromkeys((it.sender, it.msgid) for it in items))):
        known[(row[2], row[1])] = Message(*row)
    return known


def _lock_sequences_txn(raw: Raw, sequence: _Sequence, targets: list[str]) -> dict[str, int]:
    """The last sequence number of each of C{targets} that exists, locked until commit."""
    table, key, counter = sequence
    seqs: dict[str, int] = {}
    # Locked in a fixed order, so two instances' batches never deadlock;
    # the lock orders writers per inbox (or group), see users.inbox_seq.
    # NO KEY UPDATE: the rows stay open to the key-share locks of the
    # writes whose foreign keys name them (a login's token, a receipt, a
    # group message's group), which plain FOR UPDATE would make wait for
    # this batch's commit.
    lock = " FOR NO KEY UPDATE" if raw.postgres else ""
    for chunk in chunks(targets, raw.chunk):
        seqs.update(
            raw.rows(f"SELECT {key}, {counter} FROM {table} WHERE {key} IN ({marks(len(chunk))}) ORDER BY {key}{lock}", chunk, 2)
        )
    return seqs


def _number(
    items: Sequence[Send], known: dict[tuple[str, str], Message], seqs: dict[str, int], group: bool, now: int
) -> tuple[list, list[tuple[int, tuple, int]], list[tuple[int, int]], dict[str, int]]:
    """
    Which of C{items} are new messages, and their sequence numbers (C{seqs}
    moves on): (results so far, with the known messages; the new ones as
    (item, row of _NEW, seq); the repeats of a new one inside the batch as
    (item, index in new); each target's last sequence number).  An item
    whose target does not exist stays None.
    """
    results: list[Any] = [None] * len(items)
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
    return results, new, repeats, last


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


def _insert_messages_txn(raw: Raw, new: list[tuple[int, tuple, int]]) -> list[tuple[int, Message, int]]:
    """Insert the C{new} messages of L{_number}: each as (item, stored message, seq)."""
    if not raw.postgres:
        # One writer at a time (BEGIN IMMEDIATE): the ids after the largest
        # are this transaction's to give, and RETURNING (a step per row)
        # is not needed; see imd.store.raw.
        (top,) = raw.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
        rows = [(top + n,) + row for n, (_, row, _) in enumerate(new, 1)]
        raw.insert("messages", {"id": "bigint", **_NEW}, rows)
        return [(i, Message(*row, None), seq) for row, (i, _, seq) in zip(rows, new)]
    ids: dict[tuple[str, str], int] = {}
    for chunk in chunks(new, raw.chunk):
        cte, params = raw.table("k", _NEW, [row for _, row, _ in chunk])
        # RETURNING promises no row order: ids are matched by key.
        for id_, sender, msgid in raw.rows(f"WITH {cte} {_INSERT}", params, 3):
            ids[(sender, msgid)] = id_
    return [(i, Message(ids[(row[1], row[0])], *row, None), seq) for i, row, seq in new]


def _insert_inbox_txn(raw: Raw, stored: list[tuple[int, Message, int]]) -> None:
    raw.insert(
        "inbox",
        {"uid": "text", "seq": "bigint", "message_id": "bigint", "msgid": "text"},
        [(message.to_uid, seq, message.id, message.msgid) for _, message, seq in stored],
    )


def _write_sequences_txn(raw: Raw, sequence: _Sequence, last: dict[str, int]) -> None:
    table, key, counter = sequence
    _with_rows(raw, f"UPDATE {table} SET {counter} = k.b FROM k WHERE {table}.{key} = k.a", {"a": "text", "b": "bigint"}, list(last.items()))


def _add_to_outbox_txn(raw: Raw, items: Sequence[Send], stored: list[tuple[int, Message, int]]) -> None:
    """An outbox row for each new message whose request asks for one."""
    rows = [
        # The fields of the live event, so a webhook sees what a client sees.
        (items[i].outbox, json.dumps(message_data(message), ensure_ascii=False, separators=(",", ":")), message.created_at)
        for i, message, _ in stored
        if items[i].outbox is not None
    ]
    if rows:
        outbox.add_many_txn(raw, rows)


def _move_group_cursors_txn(raw: Raw, items: Sequence[GroupAck]) -> None:
    """See L{imd.store.messages.MessageStore.group_acked}."""
    targets: dict[tuple[str, str], int] = {}
    for uid, gid, seq in items:
        targets[(uid, gid)] = max(seq, targets.get((uid, gid), 0))
    last: dict[str, int] = {}
    for chunk in chunks(sorted({gid for _, gid in targets}), raw.chunk):
        last.update(raw.rows(f"SELECT gid, last_seq FROM groups WHERE gid IN ({marks(len(chunk))})", chunk, 2))
    # One row per (uid, gid): an UPDATE ... FROM with two would pick either.
    rows = [(gid, uid, min(seq, last.get(gid, 0))) for (uid, gid), seq in targets.items()]
    _with_rows(
        raw,
        "UPDATE group_members SET synced_seq = k.s FROM k"
        " WHERE group_members.gid = k.g AND group_members.uid = k.u AND group_members.synced_seq < k.s",
        {"g": "text", "u": "text", "s": "bigint"},
        rows,
    )


def _mark_received_txn(raw: Raw, items: Sequence[Ack]) -> list[int]:
    """Acknowledgements of many users; see L{imd.store.messages.MessageStore.mark_received}."""
    found: dict[tuple[str, str], list[tuple[int, str]]] = {}
    pairs = list(dict.fromkeys((uid, msgid) for uid, msgid, _ in items))
    query = (
        "SELECT i.message_id, i.uid, i.msgid, m.sender FROM k"
        " JOIN inbox i ON i.uid = k.a AND i.msgid = k.b JOIN messages m ON m.id = i.message_id"
    )
    for id_, to_uid, msgid, sender in _joined(raw, query, 4, pairs):
        found.setdefault((to_uid, msgid), []).append((id_, sender))
    results: list[int] = []
    acknowledged: dict[int, None] = {}
    for uid, msgid, sender in items:
        ids = [id_ for id_, by in found.get((uid, msgid), ()) if sender is None or by == sender]
        results.append(len(ids))
        acknowledged.update(dict.fromkeys(ids))
    # A 1:1 message has one inbox row, its recipient's, until it is
    # acknowledged: found above by (uid, msgid), deleted here by the
    # message's id.  Deleted, not marked: the inbox holds what is still to
    # be delivered, so it and its indexes stay small however long the
    # history (revision 0010).  On Postgres through a join (an IN list
    # without statistics is not looked up in the index); on SQLite through
    # an IN list, since a join with hundreds of rows made it index the
    # whole inbox anew for each statement (an automatic index;
    # docs/benchmarks.rst, round 6).
    if raw.postgres:
        _with_rows(raw, "DELETE FROM inbox USING k WHERE inbox.message_id = k.id", {"id": "bigint"}, [(id_,) for id_ in acknowledged])
    else:
        for chunk in chunks(list(acknowledged), raw.chunk):
            raw.execute(f"DELETE FROM inbox WHERE message_id IN ({marks(len(chunk))})", chunk)
    return results


def _joined(raw: Raw, query: str, width: int, pairs: list[tuple[str, str]]) -> list[Sequence]:
    """
    The rows of C{query} (C{width} columns), which joins C{k(a, b)}, the
    list of C{pairs}, on an index of (a, b).  A join on such a list is
    answered from that index on both databases, one probe per pair, where
    SQLite would probe every combination of two IN lists and Postgres
    without statistics scans.
    """
    rows: list[Sequence] = []
    for chunk in chunks(pairs, raw.chunk):
        cte, params = raw.table("k", {"a": "text", "b": "text"}, chunk)
        rows += raw.rows(f"WITH {cte} {query}", params, width)
    return rows


def _with_rows(raw: Raw, statement: str, columns: dict[str, str], rows: Sequence[Sequence]) -> None:
    """C{statement}, which reads C{rows} as C{k} (C{columns} as for L{Raw.table}): one statement a chunk."""
    for chunk in chunks(rows, raw.chunk):
        cte, params = raw.table("k", columns, chunk)
        raw.execute(f"WITH {cte} {statement}", params)
