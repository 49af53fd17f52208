"""
The store process (imd.store.process and imd.store.worker): a real child
on a real database, on each backend; and whole servers whose messages go
through one, over the long connection.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import select
import signal

from twisted.internet import reactor
from twisted.internet.error import ProcessTerminated
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.python.failure import Failure
from twisted.trial import unittest

from imd.config import Config, ConfigError
from imd.store.batch import ItemFailed
from imd.store.messages import Ack, Send
from imd.store.persist import persist_direct_txn
from imd.store.process import _PICKLES, PIPE_SIZE, StoreProcess, StoreProcessLost
from imd.store.store import Store
from imd.store.worker import HEADER, frame, wall_ms
from tests import store_child
from tests.support import PostgresBackend, SQLiteBackend, child_env
from imd.channels.longconn import msgtypes as T
from tests.test_longconn import MessageTestsMixin, ReceiptRecallTestsMixin


def stuck_clock() -> int:
    return 1


class ProcessMixin:
    def setUp(self):
        self.url = self.database_url()
        store = Store(self.url, reactor=reactor)
        store.migrate()
        store.start()
        self.addCleanup(store.stop)
        self.store = store
        self.observed = []
        self.starts = 0
        self.process = self.start_process()

    def started(self):
        self.starts += 1

    def start_process(self) -> StoreProcess:
        process = StoreProcess(
            self.url, reactor, 10_000, observer=lambda *a: self.observed.append(a), env=child_env(), started=self.started
        )
        process.start()
        self.addCleanup(process.stop)
        return process

    @inlineCallbacks
    def users(self, *uids):
        for uid in uids:
            yield self.store.users.create(uid, None, wall_ms())

    @inlineCallbacks
    def test_a_batch_of_messages_and_acknowledgements(self):
        yield self.users("alice", "bob")
        sends = [Send("alice", "phone", "bob", f"m{i}", "text", f"hi {i}", "", stuck_clock) for i in range(3)]
        before = wall_ms()
        results = yield self.process.run_batch("messages.direct", persist_direct_txn, sends + [sends[0]])
        self.assertEqual([created for _, created in results], [True, True, True, False])
        self.assertEqual([m.body for m, _ in results], ["hi 0", "hi 1", "hi 2", "hi 0"])
        # The child reads its own clock, not the one the request carried.
        self.assertTrue(before <= results[0][0].created_at <= wall_ms())
        self.assertEqual([(name, ok) for name, _, ok in self.observed], [("messages.direct", True)])
        # Committed: this process's own connection sees them.
        offline = yield self.store.messages.offline("bob")
        self.assertEqual([m.msgid for m in offline], ["m0", "m1", "m2"])
        acked = yield self.process.run_batch("messages.direct", persist_direct_txn, [Ack("bob", "m1", "alice")])
        self.assertEqual(acked, [1])
        offline = yield self.store.messages.offline("bob")
        self.assertEqual([m.msgid for m in offline], ["m0", "m2"])

    @inlineCallbacks
    def test_answers_come_in_the_order_of_the_requests(self):
        answered = []
        requests = []
        for i in range(50):
            d = self.process.run_batch("echo", store_child.echo, [i])
            d.addCallback(answered.extend)
            requests.append(d)
        yield gatherResults(requests)
        self.assertEqual(answered, list(range(50)))

    @inlineCallbacks
    def test_a_batch_leaves_before_the_reactor_turns(self):
        # The turn that sends a batch may go on for a while (delivering the
        # answers of the one before): the child has the batch meanwhile,
        # and answers without this process's reactor having run.
        yield self.process.ping()
        answers = self.process._transport.pipes[1].fileno()
        d = self.process.run_batch("echo", store_child.echo, ["now"])
        readable, _, _ = select.select([answers], [], [], 10)
        self.assertEqual(readable, [answers])
        self.assertEqual((yield d), ["now"])

    @inlineCallbacks
    def test_the_pipes_hold_a_large_batch(self):
        yield self.process.ping()
        if not hasattr(fcntl, "F_GETPIPE_SZ"):
            raise unittest.SkipTest("pipe sizes are Linux's")
        pipes = self.process._transport.pipes
        self.assertEqual([fcntl.fcntl(pipes[fd].fileno(), fcntl.F_GETPIPE_SZ) for fd in (0, 1)], [PIPE_SIZE] * 2)

    @inlineCallbacks
    def test_a_large_answer(self):
        value = "x" * 3_000_000
        self.assertEqual((yield self.process.run_batch("echo", store_child.echo, [value])), [value])

    @inlineCallbacks
    def test_an_error_fails_its_batch_alone(self):
        failing = self.process.run_batch("fail", store_child.fail_on_errors, [KeyError("no such thing")])
        after = self.process.run_batch("echo", store_child.echo, ["fine"])
        error = yield self.assertFailure(failing, KeyError)
        self.assertEqual(error.args, ("no such thing",))
        self.assertEqual((yield after), ["fine"])
        self.assertIn(("fail", False), [(name, ok) for name, _, ok in self.observed])

    @inlineCallbacks
    def test_a_failed_batch_runs_each_request_alone(self):
        bad = KeyError("bad")
        results = yield self.process.run_batch("users", store_child.insert_then_fail_on_errors, ["u1", bad, "u2"])
        self.assertEqual(results[0::2], ["u1", "u2"])
        self.assertEqual(type(results[1]), ItemFailed)
        self.assertEqual(results[1].error.args, ("bad",))
        # The others committed, each in a transaction of its own.
        for uid in ("u1", "u2"):
            self.assertIsNotNone((yield self.store.users.get(uid)))

    @inlineCallbacks
    def test_an_error_that_does_not_pickle_is_told(self):
        error = yield self.assertFailure(self.process.run_batch("fail", store_child.fail_unpicklably, [1]), RuntimeError)
        self.assertIn("tests.store_child.Unpicklable: holds a lock", str(error))

    @inlineCallbacks
    def test_a_request_that_does_not_pickle_fails_alone(self):
        yield self.assertFailure(
            self.process.run_batch("echo", store_child.echo, [lambda: 1]), AttributeError, pickle.PicklingError
        )
        self.assertEqual((yield self.process.run_batch("echo", store_child.echo, [1])), [1])

    @inlineCallbacks
    def test_what_the_child_prints_does_not_spoil_an_answer(self):
        self.assertEqual((yield self.process.run_batch("chatter", store_child.chatter, ["noise"])), ["noise"])
        self.assertEqual((yield self.process.run_batch("echo", store_child.echo, [7])), [7])

    @inlineCallbacks
    def test_a_killed_child_fails_its_requests_and_is_replaced(self):
        (first,) = yield self.process.run_batch("pid", store_child.pid, [None])
        self.assertEqual(self.starts, 1)
        slow = self.process.run_batch("sleep", store_child.sleep, [5])
        queued = self.process.run_batch("echo", store_child.echo, [1])
        os.kill(first, signal.SIGKILL)
        yield self.assertFailure(slow, StoreProcessLost)
        yield self.assertFailure(queued, StoreProcessLost)
        self.assertEqual([(name, ok) for name, _, ok in self.observed][-2:], [("sleep", False), ("echo", False)])
        (second,) = yield self.process.run_batch("pid", store_child.pid, [None])
        self.assertNotEqual(second, first)
        self.assertEqual(self.starts, 2)
        self.assertEqual((yield self.process.run_batch("echo", store_child.echo, [2])), [2])

    @inlineCallbacks
    def test_stop_waits_for_the_answers(self):
        (child,) = yield self.process.run_batch("pid", store_child.pid, [None])
        slow = self.process.run_batch("sleep", store_child.sleep, [0.3])
        yield self.process.stop()
        self.assertEqual((yield slow), [0.3])
        self.assertRaises(ProcessLookupError, os.kill, child, 0)
        yield self.assertFailure(self.process.run_batch("echo", store_child.echo, [1]), RuntimeError)

    @inlineCallbacks
    def test_the_server_gone_the_child_goes(self):
        # A child whose input ends (its server killed) exits on its own.
        process = StoreProcess(self.url, reactor, 10_000, env=child_env())
        process.start()
        (child,) = yield process.run_batch("pid", store_child.pid, [None])
        ended = process._child.ended
        process._transport.closeStdin()
        yield ended
        self.assertRaises(ProcessLookupError, os.kill, child, 0)
        process._running = False

    @inlineCallbacks
    def test_signals_to_the_process_group_are_the_servers(self):
        (child,) = yield self.process.run_batch("pid", store_child.pid, [None])
        os.kill(child, signal.SIGINT)
        os.kill(child, signal.SIGTERM)
        self.assertEqual((yield self.process.run_batch("pid", store_child.pid, [None])), [child])


class SQLiteProcessTests(ProcessMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresProcessTests(ProcessMixin, PostgresBackend, unittest.TestCase):
    pass


class StartTests(unittest.TestCase):
    @inlineCallbacks
    def test_a_child_that_cannot_start_fails_requests_and_waits_longer_each_time(self):
        # A driver that is not installed: the child dies on its first request.
        process = StoreProcess("postgresql+nosuchdriver://x/y", reactor, 10_000, env=child_env())
        process.start()
        self.addCleanup(process.stop)
        error = yield self.assertFailure(process.run_batch("echo", store_child.echo, [1]), StoreProcessLost)
        self.assertIn("echo: the store process ended", str(error))
        self.assertEqual(process._delay, 0.5)
        yield self.assertFailure(process.run_batch("echo", store_child.echo, [1]), StoreProcessLost)
        self.assertEqual(process._delay, 1.0)

    @inlineCallbacks
    def test_a_child_that_cannot_be_spawned_fails_requests(self):
        process = StoreProcess("sqlite:///unused.sqlite3", reactor, 10_000, env=child_env())

        def no_fork(*args, **kwargs):
            raise OSError(11, "Resource temporarily unavailable")

        self.patch(reactor, "spawnProcess", no_fork)
        process.start()
        self.addCleanup(process.stop)
        error = yield self.assertFailure(process.run_batch("echo", store_child.echo, [1]), StoreProcessLost)
        self.assertIn("Resource temporarily unavailable", str(error))
        self.assertEqual(process._delay, 0.5)

    def test_stopped_before_the_child_started(self):
        process = StoreProcess("sqlite:///unused.sqlite3", reactor, 10_000, env=child_env())
        process.start()
        waiting = process.run_batch("echo", store_child.echo, [1])
        process.stop()
        self.assertFailure(waiting, StoreProcessLost)
        return waiting


class _ClosedInput:
    """A child's transport after the child closed its standard input, before it ended."""

    pipes: dict = {}

    def write(self, data):
        pass  # as Twisted's process transport: dropped without a pipe


class ClosedInputTests(unittest.TestCase):
    def test_a_batch_for_a_child_that_closed_its_input_waits_for_its_end(self):
        process = StoreProcess("sqlite:///unused.sqlite3", reactor, 10_000, env=child_env())
        process._running = True
        process._transport = _ClosedInput()
        d = process.run_batch("echo", store_child.echo, ["lost"])
        self.assertFalse(d.called)
        process._running = False  # no new child for this test
        process._ended(Failure(ProcessTerminated(exitCode=1)))
        self.failureResultOf(d, StoreProcessLost)


class FrameTests(unittest.TestCase):
    def test_a_send_crosses_with_the_childs_clock(self):
        send = Send("a", "", "b", "m", "text", "x", "", stuck_clock, "kind")
        data = frame((1, "n", persist_direct_txn, ([send],)), _PICKLES)
        (size,) = HEADER.unpack_from(data)
        self.assertEqual(size, len(data) - HEADER.size)
        (_, _, fn, ((crossed,),)) = pickle.loads(data[HEADER.size :])
        self.assertIs(fn, persist_direct_txn)
        self.assertEqual(crossed[:7], send[:7])
        self.assertEqual(crossed.outbox, "kind")
        self.assertIs(crossed.now, wall_ms)


class ConfigTests(unittest.TestCase):
    def database(self, **keys):
        return Config.from_dict({"database": keys}).database

    def test_auto_is_on_but_for_sqlite_in_memory(self):
        self.assertTrue(self.database(url="sqlite:///var/x.sqlite3").uses_store_process)
        self.assertTrue(self.database(url="postgresql://u@h/d").uses_store_process)
        self.assertFalse(self.database(url="sqlite://").uses_store_process)
        self.assertFalse(self.database(url="sqlite:///:memory:").uses_store_process)

    def test_on_and_off(self):
        self.assertTrue(self.database(url="sqlite:///x.sqlite3", store_process="on").uses_store_process)
        self.assertFalse(self.database(url="postgresql://u@h/d", store_process="off").uses_store_process)

    def test_on_refuses_a_database_in_memory(self):
        with self.assertRaises(ConfigError) as raised:
            self.database(url="sqlite://", store_process="on")
        self.assertIn("database.store_process = on needs a database file", str(raised.exception))

    def test_a_bad_value(self):
        with self.assertRaises(ConfigError) as raised:
            self.database(store_process="yes")
        self.assertIn("must be one of 'auto', 'on', 'off'", str(raised.exception))


class OverTheWireMixin(MessageTestsMixin, ReceiptRecallTestsMixin):
    """The long connection's message tests, on a server whose batches go through a store process."""

    def start_server(self, **sections):
        sections["database"] = {**sections.get("database", {}), "store_process": "on"}
        server = super().start_server(**sections)
        self.assertIsNotNone(server.store.process)
        return server


    @inlineCallbacks
    def test_a_store_process_killed_under_load_loses_nothing(self):
        server = self.start_server()
        alice = yield self.user(server, "alice")
        bob = yield self.user(server, "bob")
        yield alice.send_message("bob", "first", msgid="m")
        batcher = server.store.messages._direct
        run = batcher._run
        batches = []

        def kill_after_the_second(name, fn, items):
            d = run(name, fn, items)
            batches.append(len(items))
            if len(batches) == 2:
                os.kill(server.store.process._transport.pid, signal.SIGKILL)
            return d

        self.patch(batcher, "_run", kill_after_the_second)
        msgids = [f"m{i}" for i in range(40)]
        acks = yield gatherResults([alice.send_message("bob", msgid, msgid=msgid) for msgid in msgids])
        # The batch the child had was lost with it, and counted so ...
        self.assertGreaterEqual(server.metrics.store_failures.labels("messages.direct")._value.get(), 1)
        # ... and run again, a request at a time, by a new child; whatever
        # failed all the same was told so and is sent again, as a client
        # does with an error.
        for msgid in [ack["msgid"] for ack in acks if ack["err"]]:
            ack = yield alice.send_message("bob", msgid, msgid=msgid)
            self.assertEqual(ack["err"], "")
        yield bob.ping()
        live = [body["msgid"] for _, body in bob.take(T.IM_MESSAGE)]
        offline = [m.msgid for m in (yield server.messages.offline("bob", limit=1000))]
        self.assertEqual(len(offline), len(set(offline)))
        # Stored once each, and each reaches bob: live, or (if the lost
        # child had committed it, so its resend was not new) offline.
        self.assertEqual(set(live) | set(offline), {"m", *msgids})
        # The replacement is counted for the operator.
        code, text, _ = yield self.http(server, "GET", "/metrics")
        self.assertIn("imd_store_process_starts_total 2.0", text.decode())


    @inlineCallbacks
    def test_healthz_asks_the_store_process(self):
        server = self.start_server()
        pings = []
        observe = server.store.process._observer
        self.patch(server.store.process, "_observer", lambda name, *a: (pings.append(name), observe(name, *a)))
        code, body, _ = yield self.http(server, "GET", "/healthz")
        self.assertEqual((code, body["store"]["status"]), (200, "ok"))
        self.assertEqual(pings, ["ping"])
        # A store process that cannot answer: the instance is unavailable.
        yield server.store.process.stop()
        code, body, _ = yield self.http(server, "GET", "/healthz")
        self.assertEqual((code, body["status"], body["store"]["status"]), (503, "unavailable", "unreachable"))
        self.assertEqual(body["store"]["error"], "the store process is stopped")


class SQLiteOverTheWireTests(OverTheWireMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresOverTheWireTests(OverTheWireMixin, PostgresBackend, unittest.TestCase):
    pass
