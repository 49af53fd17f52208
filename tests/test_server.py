"""
``twistd imd`` as a real process: the plugin, start-up with no config file,
durability across SIGKILL, and the one-line failures at start-up.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

import imd
from imd.server import GC_THRESHOLDS, GIL_SWITCH_INTERVAL, Server
from imd.store.migrate import current_revision, head_revision
from tests.processes import TWISTD, ProcessTestMixin, free_ports, listener_env
from tests.support import PostgresBackend, child_env, make_config, sqlite_url


class PluginTests(ProcessTestMixin, unittest.TestCase):
    @inlineCallbacks
    def test_help_lists_config(self):
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ("-c", TWISTD, "imd", "--help"),
            env=child_env(), path=self.empty_dir(), reactor=reactor,
        )
        self.assertEqual(code, 0, out + err)
        self.assertIn(b"--config", out)
        # An installed imd has no etc/: the help names what it does have.
        self.assertNotIn(b"etc/imd.toml", out)
        self.assertIn(b"python -m imd config defaults", out)

    @inlineCallbacks
    def test_version(self):
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ("-c", TWISTD, "imd", "--version"),
            env=child_env(), path=self.empty_dir(), reactor=reactor,
        )
        self.assertEqual((code, out), (0, f"imd {imd.__version__}\n".encode()), err)

    @inlineCallbacks
    def test_starts_without_config(self):
        cwd = self.empty_dir()
        child, base, health = yield self.start_imd(cwd, child_env())
        self.assertEqual(health["status"], "ok")
        self.assertEqual(health["store"]["status"], "ok")
        self.assertEqual(health["store"]["backend"], "sqlite")
        database = os.path.join(cwd, "var", "imd.sqlite3")
        self.assertTrue(os.path.isfile(database), os.listdir(cwd))
        self.assertEqual(current_revision(f"sqlite:///{database}"), head_revision())
        yield self.stop(child)

    @inlineCallbacks
    def test_config_error(self):
        cwd = self.empty_dir()
        child = self.twistd(cwd, child_env(**{**listener_env(free_ports(4)), "IMD_HTTP_ENDPOINT": "nonsense:1"}))
        yield child.ended()
        self.assertNotIn(child.exit_code, (0, None), child.output())
        lines = child.err.decode().splitlines()
        self.assertEqual(len(lines), 1, child.output())
        self.assertIn("http.endpoint", lines[0])
        self.assertIn("nonsense:1", lines[0])
        self.assertNotIn("Traceback", child.output())
        # Nothing was started, not even the database.
        self.assertEqual(os.listdir(cwd), [])

    @inlineCallbacks
    def test_missing_config_file(self):
        cwd = self.empty_dir()
        child = self.twistd(cwd, child_env(**listener_env(free_ports(4))), "--config", "no-such.toml")
        yield child.ended()
        self.assertNotIn(child.exit_code, (0, None), child.output())
        lines = child.err.decode().splitlines()
        self.assertEqual(len(lines), 1, child.output())
        self.assertIn("config error", lines[0])
        self.assertIn("no-such.toml", lines[0])

    @inlineCallbacks
    def test_port_in_use(self):
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cwd = self.empty_dir()
        child = self.twistd(cwd, child_env(**listener_env([port, *free_ports(3)])))
        # Before the fix in imd/tap.py the store's threads kept the process
        # alive after the error, so this wait is what fails on a regression.
        yield child.ended()
        self.assertNotIn(child.exit_code, (0, None), child.output())
        self.assertIn(f"cannot listen for http on tcp:{port}", child.output())


class DurabilityMixin(ProcessTestMixin):
    """A token handed out just before SIGKILL works after a restart."""

    def database_env(self) -> dict:
        raise NotImplementedError()

    @inlineCallbacks
    def test_token_survives_sigkill(self):
        cwd = self.empty_dir()
        env = child_env(**self.database_env())
        yield self.cli(cwd, env, "db", "upgrade")
        yield self.cli(cwd, env, "user", "add", "alice", "--password", "secret1")

        child, base, _ = yield self.start_imd(cwd, env)
        code, body = yield self.http(base, "POST", "/auth/login", {"uid": "alice", "password": "secret1"})
        self.assertEqual(code, 200, body)
        token = body["token"]
        code, body = yield self.http(base, "GET", "/auth/whoami", token=token)
        self.assertEqual((code, body), (200, {"uid": "alice"}))

        child.signal("KILL")
        yield child.ended()
        self.assertEqual(child.exit_signal, signal.SIGKILL, child.output())

        child, base, _ = yield self.start_imd(cwd, env)
        code, body = yield self.http(base, "GET", "/auth/whoami", token=token)
        self.assertEqual((code, body), (200, {"uid": "alice"}), child.output())
        code, body = yield self.http(base, "POST", "/auth/login", {"uid": "alice", "password": "secret1"})
        self.assertEqual(code, 200, body)
        self.assertNotEqual(body["token"], token)
        code, body = yield self.http(base, "GET", "/auth/whoami", token=body["token"])
        self.assertEqual((code, body), (200, {"uid": "alice"}))
        yield self.stop(child)


class SQLiteDurabilityTests(DurabilityMixin, unittest.TestCase):
    def database_env(self) -> dict:
        # The default database, var/imd.sqlite3 under the working directory.
        return {}


class PostgresDurabilityTests(DurabilityMixin, PostgresBackend, unittest.TestCase):
    def database_env(self) -> dict:
        return {"IMD_DATABASE_URL": self.database_url()}


class InterpreterTests(unittest.TestCase):
    def test_the_interpreter_is_set_for_a_server(self):
        # Process-wide settings: the test's own are restored afterwards.
        self.addCleanup(gc.set_threshold, *gc.get_threshold())
        self.addCleanup(sys.setswitchinterval, sys.getswitchinterval())
        gc.set_threshold(700, 10, 10)
        sys.setswitchinterval(0.005)
        server = Server(make_config(sqlite_url(self)), reactor)
        self.addCleanup(server.store.db.engine.dispose)
        server.make_service()
        self.assertEqual(gc.get_threshold(), GC_THRESHOLDS)
        self.assertAlmostEqual(sys.getswitchinterval(), GIL_SWITCH_INTERVAL)
