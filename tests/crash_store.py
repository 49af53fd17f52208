"""
A store that dies in the middle of a batch, for L{tests.test_store_crash}.

Run as C{python -m tests.crash_store URL KILL_AT}: it commits a first
batch of 1:1 messages (each printed as "acked sender msgid" once its
transaction committed, as the server would acknowledge it), then runs a
second batch of sends and acknowledgements, and sends itself SIGKILL just
before its statement number C{KILL_AT} on the driver's cursor (counting
from 1, over both batches).  With a C{KILL_AT} past the last statement it
prints "statements N" and exits.
"""

from __future__ import annotations

import os
import signal
import sys

from imd.store.database import Database
from imd.store.messages import Ack, Send
from imd.store.persist import persist_direct_txn
from imd.store.raw import Raw

NOW = 1_700_000_000_000
# Two batches as a loaded server commits them: several senders and
# recipients, a resend inside the batch, acks of earlier messages.
FIRST = [("alice", "bob", f"a{i}") for i in range(5)] + [("carol", "bob", f"c{i}") for i in range(3)]
SECOND = (
    [("alice", "bob", f"a{i}") for i in range(5, 9)]
    + [("bob", "alice", f"b{i}") for i in range(4)]
    + [("carol", "alice", "c9"), ("carol", "alice", "c9"), ("alice", "bob", "a2")]
)
SECOND_ACKS = [("bob", "a0", "alice"), ("bob", "c1", None)]


def send(sender: str, to: str, msgid: str) -> Send:
    return Send(sender, "phone", to, msgid, "text", f"{sender}->{to} {msgid}", "", lambda: NOW)


def main(url: str, kill_at: int) -> None:
    count = 0

    def counted(method):
        def run(self, *args, **kwargs):
            nonlocal count
            count += 1
            if count == kill_at:
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return method(self, *args, **kwargs)

        return run

    Raw.execute = counted(Raw.execute)
    db = Database(url, pool_size=1)
    results = db.run_raw_sync("first", persist_direct_txn, [send(*item) for item in FIRST])
    for (sender, _, msgid), result in zip(FIRST, results):
        assert result is not None
        print("acked", sender, msgid, flush=True)
    items = [send(*item) for item in SECOND] + [Ack(*ack) for ack in SECOND_ACKS]
    db.run_raw_sync("second", persist_direct_txn, items)
    for sender, _, msgid in SECOND:
        print("acked", sender, msgid, flush=True)
    print("statements", count, flush=True)
    db.engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
