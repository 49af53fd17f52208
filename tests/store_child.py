"""
Functions for L{tests.test_store_process} to run in the store process: it
imports them by name, as it does L{imd.store.persist}'s.
"""

from __future__ import annotations

import os
import threading
import time


def echo(raw, value):
    return value


def pid(raw):
    return os.getpid()


def sleep(raw, seconds):
    time.sleep(seconds)
    return seconds


def fail(raw, error):
    raise error


def fail_unpicklably(raw):
    raise Unpicklable(threading.Lock())


def chatter(raw, text):
    # What a careless library might do: print, on the descriptor the answers once used.
    print(text, flush=True)
    os.write(1, text.encode() + b"\n")
    return text


def count_messages(raw):
    (n,) = raw.execute("SELECT count(*) FROM messages").fetchone()
    return n


class Unpicklable(Exception):
    def __init__(self, lock):
        super().__init__("holds a lock")
        self.lock = lock
