"""
The benchmark tool (imd.bench) end to end with tiny numbers: every
scenario against a fresh child server and the bare relay, checked for a
result file with sane fields.  No timing is asserted: numbers belong in a
benchmark run, not in a test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from imd.bench.limits import cpu_seconds, descendants
from imd.bench.report import digest_profile, print_summary
from imd.bench.stats import Histogram
from tests.support import POSTGRES_URL, child_env


class HistogramTests(unittest.TestCase):
    def test_percentiles_within_one_percent(self):
        h = Histogram()
        for i in range(1, 1001):
            h.add(i / 1000.0)  # 1 ms .. 1 s
        self.assertEqual(h.count, 1000)
        # Buckets are 1 % wide (trial's assertAlmostEqual has no delta).
        self.assertLessEqual(abs(h.percentile(50) - 0.5), 0.5 * 0.011)
        self.assertLessEqual(abs(h.percentile(99) - 0.99), 0.99 * 0.011)
        self.assertEqual(h.percentile(100), 1.0)

    def test_merge_through_json(self):
        a, b = Histogram(), Histogram()
        for v in (0.001, 0.002):
            a.add(v)
        b.add(0.004)
        merged = Histogram.merged([json.loads(json.dumps(a.to_json())), b.to_json()])
        self.assertEqual(merged.count, 3)
        self.assertEqual(merged.max, 0.004)
        self.assertEqual(merged.min, 0.001)
        self.assertEqual(Histogram().summary(), {"count": 0})


class ProfileDigestTests(unittest.TestCase):
    def test_self_and_inclusive(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("run (twisted/internet/base.py:1);_handle (/x/imd/channels/longconn/protocol.py:5);loads (json/__init__.py:3) 3\n")
            f.write("run (twisted/internet/base.py:1);doPoll (twisted/internet/epollreactor.py:2) 1\n")
        digest = digest_profile(path)
        self.assertEqual(digest["samples"], 4)
        self.assertEqual(digest["top_self"][0]["samples"], 3)
        self.assertTrue(digest["top_self"][0]["function"].startswith("loads"))
        self.assertEqual(digest["top_inclusive"][0]["percent"], 100.0)

    def test_a_child_process_names_its_threads(self):
        server = 'process 10:"python -c import x; run() -n imd";'
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(server + "thread (10): MainThread;doPoll (twisted/internet/epollreactor.py:2) 2\n")
            f.write(server + 'process 11:"python -P -m imd.store.worker";thread (11): MainThread;execute (imd/store/raw.py:9) 5\n')
        threads = digest_profile(path)["threads"]
        self.assertEqual(list(threads), ["imd.store.worker: MainThread", "MainThread"])
        self.assertEqual(threads["imd.store.worker: MainThread"]["top_self"][0]["function"], "execute (imd/store/raw.py)")
        self.assertEqual(threads["MainThread"]["samples"], 2)


class ProcessTreeTests(unittest.TestCase):
    def test_a_process_counts_the_cpu_of_those_under_it(self):
        # A parent that only waits, and under it a child that spins: a
        # server that hands work to a process of its own is charged for it.
        spin = "import time\nt = time.time()\nwhile time.time() - t < 30: pass"
        parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {spin!r}])"])
        self.addCleanup(parent.wait)
        self.addCleanup(parent.kill)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (cpu_seconds(parent.pid) or 0) < 0.5:
            time.sleep(0.05)
        children = descendants(parent.pid)
        for child in children:
            self.addCleanup(os.kill, child, signal.SIGKILL)
        self.assertEqual(len(children), 1)
        self.assertGreaterEqual(cpu_seconds(parent.pid), 0.5)
        (child,) = children
        self.assertLess(cpu_seconds(parent.pid) - cpu_seconds(child), 0.4)
        self.assertIsNone(cpu_seconds(2**22 + 1))


class BenchSmokeTests(unittest.TestCase):
    timeout = 180

    @inlineCallbacks
    def test_all_scenarios(self):
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        result = os.path.join(cwd, "result.json")
        args = (
            "-m", "imd.bench", "all", "--users", "4", "--members", "4", "--friends", "2",
            "--duration", "0.5", "--warmup", "0.2", "--runs", "1", "--drain", "3",
            "--messages", "2", "--interval", "0.1", "--settle", "0.1",
            "--quiet", "--no-progress", "--json", result,
        )
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, args, env=child_env(), path=cwd, reactor=reactor
        )
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        with open(result) as f:
            doc = json.load(f)
        self.assertNotIn("error", doc)
        self.assertEqual(doc["machine"]["nproc"], os.cpu_count())
        self.assertEqual(doc["target"]["backend"], "sqlite")
        self.assertEqual(set(doc["scenarios"]), {"connect", "p2p", "group", "presence"})

        connect = doc["scenarios"]["connect"]["systems"]
        for system in ("imd", "relay"):
            self.assertEqual(connect[system]["established"], 4)
            self.assertEqual(connect[system]["failed"], 0)
            self.assertGreater(connect[system]["rss_after_kib"], 0)
            self.assertIn("kib_per_connection", connect[system])
        self.assertIn("memory per connection", doc["scenarios"]["connect"]["ratio"]["relay"])

        p2p = doc["scenarios"]["p2p"]
        for system in ("imd", "relay"):
            run = p2p["systems"][system]["runs"][0]
            self.assertGreater(run["throughput"], 0)
            self.assertGreater(run["delivered"], 0)
            self.assertEqual(run["undelivered"], 0)
            self.assertEqual(run["ack_errors"], 0, run["first_error"])
            self.assertEqual(run["disconnected"], 0)
            for what in ("delivery", "ack"):
                summary = run[what]
                self.assertGreater(summary["count"], 0)
                self.assertLessEqual(summary["p50"], summary["p99"])
                self.assertLessEqual(summary["p99"], summary["max"])
            self.assertEqual(p2p["systems"][system]["median"]["throughput"], run["throughput"])
        self.assertGreater(p2p["ratio"]["relay"]["throughput"], 0)
        self.assertGreater(p2p["systems"]["imd"]["median"]["per_cpu_second"], 0)
        self.assertGreater(p2p["systems"]["imd"]["median"]["generator_cpu"], 0)
        store = p2p["systems"]["imd"]["runs"][0]["store"]
        self.assertGreater(store["transactions_per_second"], 0)
        self.assertGreater(store["mean_ms"], 0)

        group = doc["scenarios"]["group"]["systems"]
        for system in ("imd", "relay"):
            self.assertEqual(group[system]["received"], group[system]["expected"])
            self.assertEqual(group[system]["expected"], 3 * 3)  # (2 + 1 warm-up) x 3 members
            self.assertEqual(group[system]["messages_reaching_all"], 2)
            self.assertEqual(len(group[system]["last_member_ms"]["each"]), 2)
            self.assertEqual(group[system]["ack_errors"], 0, group[system]["first_error"])

        presence = doc["scenarios"]["presence"]["systems"]["imd"]
        self.assertEqual(presence["completed"], 4)
        self.assertEqual(presence["failed"], 0)
        self.assertIsNotNone(presence["all_done_s"])
        self.assertEqual(doc["server_log_errors"], [])

        # The summary table renders from the file alone.
        text = print_summary(doc)
        self.assertIn("imd / relay", text)
        self.assertIn("result:", out.decode())


    @inlineCallbacks
    def test_a_kill_removes_what_the_run_started(self):
        # As a CI's timeout would: SIGTERM while the server the tool started runs.
        class Bench(ProcessProtocol):
            def __init__(self):
                self.err, self.started, self.ended = b"", Deferred(), Deferred()

            def errReceived(self, data):
                self.err += data
                found = re.search(rb"imd pid (\d+) listening", self.err)
                if found and not self.started.called:
                    self.started.callback(int(found.group(1)))

            def processEnded(self, reason):
                self.ended.callback(reason.value.exitCode)

        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        bench = Bench()
        args = ("-m", "imd.bench", "p2p", "--users", "4", "--duration", "60", "--compare", "none", "--no-progress")
        process = reactor.spawnProcess(bench, sys.executable, (sys.executable,) + args, env=child_env(), path=cwd)
        server = yield bench.started
        process.signalProcess("TERM")
        # Killed if it hangs, to say what it was doing, before trial's timeout.
        hung = reactor.callLater(90, process.signalProcess, "KILL")
        code = yield bench.ended
        if not hung.active():
            self.fail(f"the tool did not stop on SIGTERM: {bench.err.decode(errors='replace')[-3000:]}")
        hung.cancel()
        self.assertNotEqual(code, 0)
        self.assertIn(b"interrupted", bench.err)
        with self.assertRaises(ProcessLookupError):
            os.kill(server, 0)

    @inlineCallbacks
    def test_p2p_over_xmpp(self):
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        result = os.path.join(cwd, "result.json")
        args = (
            "-m", "imd.bench", "p2p", "--proto", "xmpp", "--users", "4", "--duration", "0.5", "--warmup", "0.2",
            "--runs", "1", "--drain", "3", "--quiet", "--no-progress", "--json", result,
        )
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, args, env=child_env(), path=cwd, reactor=reactor
        )
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        with open(result) as f:
            doc = json.load(f)
        self.assertEqual(doc["target"]["proto"], "xmpp")
        p2p = doc["scenarios"]["p2p"]
        self.assertEqual(set(p2p["systems"]), {"imd"})
        run = p2p["systems"]["imd"]["runs"][0]
        self.assertGreater(run["delivered"], 0)
        self.assertEqual((run["undelivered"], run["unacked"], run["ack_errors"], run["disconnected"]), (0, 0, 0, 0), run["first_error"])
        for what in ("delivery", "ack"):
            self.assertGreater(run[what]["count"], 0)
        self.assertEqual(doc["server_log_errors"], [])

    @inlineCallbacks
    def test_xmpp_is_for_connect_and_p2p(self):
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ("-m", "imd.bench", "group", "--proto", "xmpp"), env=child_env(), reactor=reactor
        )
        self.assertEqual(code, 2)
        self.assertIn(b"--proto xmpp measures the connect and p2p scenarios only", err)


class ArgumentTests(unittest.TestCase):
    """Arguments are checked before any server starts."""

    @inlineCallbacks
    def test_odd_users_refused_before_starting(self):
        for argv, text in (
            (("p2p", "--users", "21"), b"even number of users"),
            (("all", "--users", "3"), b"even number of users"),
            (("group", "--members", "1"), b"at least 2 members"),
            (("p2p", "--runs", "0"), b"--runs must be at least 1"),
            (("p2p", "--duration", "0"), b"--duration must be more than 0"),
        ):
            out, err, code = yield getProcessOutputAndValue(
                sys.executable, ("-m", "imd.bench", *argv), env=child_env(), reactor=reactor
            )
            self.assertEqual(code, 2, err)
            self.assertIn(text, err)
            self.assertNotIn(b"starting imd", err)

    def test_even_users_accepted(self):
        from imd.bench import cli

        args = cli.parser().parse_args(["p2p", "--users", "20"])
        self.assertIsNone(cli.check(args))


class BarTests(unittest.TestCase):
    def test_rate_is_a_moving_window(self):
        from imd.bench.coordinator import Bar

        bar = Bar(False, "x", timed=(0.0, 10.0))
        self.assertEqual(bar.rate(0.0, 0), 0.0)
        # 100/s for 3 s, then a burst: the rate covers the window, not the last sample pair.
        for t in range(1, 7):
            rate = bar.rate(t * 0.5, t * 50)
        self.assertEqual(rate, 100.0)
        self.assertEqual(bar.rate(3.1, 400), 400 / 3.1)
        # Samples older than the window are forgotten.
        self.assertEqual(bar.rate(10.0, 1000), (1000 - 400) / (10.0 - 3.1))


class HistoryTestsMixin:
    """--history: messages written before the runs, after which imd stores new ones as usual."""

    url: str

    def test_history_then_a_new_message(self):
        from imd.bench.population import Population
        from imd.store.database import Database
        from imd.store.messages import Send
        from imd.store.migrate import upgrade
        from imd.store.persist import persist_direct_txn

        upgrade(self.url)
        population = Population(self.url)
        self.addCleanup(population.close)
        population.add_users(["h1", "h2", "h3", "h4"])
        population.befriend([("h1", "h2"), ("h3", "h4")])
        self.assertEqual(population.add_history([("h1", "h2"), ("h3", "h4")], 0), 0)
        self.assertEqual(population.add_history([("h1", "h2"), ("h3", "h4")], 9), 9)
        counts = population.counts()
        # Nothing is left offline, and the next message follows the history.
        self.assertEqual((counts["messages"], counts["inbox"]), (9, 0))
        db = Database(self.url, pool_size=1)
        self.addCleanup(db.engine.dispose)
        [(message, created)] = db.run_raw_sync(
            "t", persist_direct_txn, [Send("h1", "r", "h2", "new", "text", "hi", "", lambda: 1)]
        )
        self.assertTrue(created)
        self.assertEqual(message.id, 10)
        seqs = dict(db.run_sync("t", lambda c: c.exec_driver_sql("SELECT uid, inbox_seq FROM users").all()))
        # Rounds alternate direction: h2 got rounds 1, 3, 5 and the new message.
        self.assertEqual(seqs, {"h1": 2, "h2": 4, "h3": 2, "h4": 2})


class SQLiteHistoryTests(HistoryTestsMixin, unittest.TestCase):
    def setUp(self):
        self.url = f"sqlite:///{os.path.abspath(self.mktemp())}.sqlite3"


class PostgresHistoryTests(HistoryTestsMixin, unittest.TestCase):
    if POSTGRES_URL is None:
        skip = "IMD_TEST_POSTGRES_URL is not set"

    def setUp(self):
        from imd.bench.population import fresh_database

        self.url, _, drop = fresh_database(POSTGRES_URL)
        self.addCleanup(drop)


class PostgresPopulationTests(unittest.TestCase):
    if POSTGRES_URL is None:
        skip = "IMD_TEST_POSTGRES_URL is not set"

    def test_fresh_schema_users_friends_group(self):
        from imd.bench.population import Population, fresh_database
        from imd.store.migrate import upgrade

        url, backend, drop = fresh_database(POSTGRES_URL)
        self.addCleanup(drop)
        self.assertEqual(backend, "postgresql")
        upgrade(url)
        population = Population(url)
        self.addCleanup(population.close)
        tokens = population.add_users(["a1", "a2", "a3"])
        self.assertEqual(set(tokens), {"a1", "a2", "a3"})
        population.befriend([("a1", "a2"), ("a2", "a1")])
        population.add_group("grp", "a1", ["a1", "a2", "a3"])
        counts = population.counts()
        self.assertEqual(
            (counts["users"], counts["tokens"], counts["friendships"], counts["groups"], counts["group_members"]),
            (3, 3, 2, 1, 3),
        )
        population.add_history([("a1", "a2")], 10)
        self.assertEqual(population.counts()["messages"], 10)
        population.remove_users(["a1", "a2", "a3"])
        counts = population.counts()
        self.assertEqual((counts["users"], counts["messages"], counts["inbox"]), (0, 0, 0))
