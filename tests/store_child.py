"""
Batches for L{tests.test_store_process} to run in the store process: it
imports them by name, as it does L{imd.store.persist}'s.  Each takes the
items of a batch and answers one result per item.
"""

from __future__ import annotations

import os
import threading
import time


def echo(raw, items):
    return list(items)


def pid(raw, items):
    return [os.getpid() for _ in items]


def sleep(raw, items):
    for seconds in items:
        time.sleep(seconds)
    return list(items)


def fail_on_errors(raw, items):
    """Each item, unless one is an exception: then the batch fails with it."""
    for item in items:
        if isinstance(item, BaseException):
            raise item
    return list(items)


def fail_unpicklably(raw, items):
    raise Unpicklable(threading.Lock())


def insert_then_fail_on_errors(raw, items):
    """Stores each item as a user, in the batch's transaction; fails as L{fail_on_errors} does."""
    for item in items:
        if not isinstance(item, BaseException):
            raw.execute("INSERT INTO users (uid, created_at, updated_at) VALUES (?, 1, 1)", [item])
    return fail_on_errors(raw, items)


def chatter(raw, items):
    # What a careless library might do: print, on the descriptor the answers once used.
    for text in items:
        print(text, flush=True)
        os.write(1, text.encode() + b"\n")
    return list(items)


class Unpicklable(Exception):
    def __init__(self, lock):
        super().__init__("holds a lock")
        self.lock = lock
