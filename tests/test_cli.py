"""``python -m imd``, run as the administrator runs it: a child process."""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks, returnValue
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from imd.config import AuthConfig, SmsConfig
from imd.core.accounts import AccountService
from imd.core.sms import NoGateway
from imd.errors import BadCredentials, InvalidToken
import imd
from imd.store.migrate import describe, head_revision
from imd.store.store import Store
from tests.support import PostgresBackend, SQLiteBackend, child_env


class CliMixin:
    def setUp(self):
        self.url = self.database_url()
        self.cwd = os.path.abspath(self.mktemp())
        os.makedirs(self.cwd)

    @inlineCallbacks
    def imd(self, *args: str, **env: str):
        """Run C{python -m imd ARGS}: (exit code, stdout, stderr) as text."""
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            ("-m", "imd", *args),
            env=child_env(**{"IMD_DATABASE_URL": self.url, **env}),
            path=self.cwd,
            reactor=reactor,
        )
        returnValue((code, out.decode(), err.decode()))

    @inlineCallbacks
    def ok(self, *args: str):
        code, out, err = yield self.imd(*args)
        self.assertEqual(code, 0, f"python -m imd {' '.join(args)}: {out}{err}")
        self.assertEqual(err.splitlines()[0], f"database: {describe(self.url)}")
        returnValue(out)

    def with_stdin(self, stdin: str, *args: str):
        """Run C{python -m imd ARGS} with C{stdin} piped in: a CompletedProcess."""
        return deferToThread(
            subprocess.run, [sys.executable, "-m", "imd", *args], input=stdin, capture_output=True,
            text=True, cwd=self.cwd, env=child_env(IMD_DATABASE_URL=self.url), timeout=60,
        )

    def assertOneLineError(self, err: str, *fragments: str) -> None:
        # The first line names the database, once the configuration is read.
        lines = [line for line in err.splitlines() if not line.startswith("database: ")]
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith("imd: "), err)
        for fragment in fragments:
            self.assertIn(fragment, lines[0])

    def accounts(self) -> AccountService:
        """An AccountService on the database the commands use."""
        store = Store(self.url, reactor=reactor)
        store.start()
        self.addCleanup(store.stop)
        return AccountService(
            store,
            AuthConfig(hash_time_cost=1, hash_memory_kib=1024),
            SmsConfig(),
            NoGateway(),
            reactor,
        )

    @inlineCallbacks
    def test_user_add_and_list(self):
        yield self.ok("db", "upgrade")
        out = yield self.ok("user", "add", "alice", "--password", "secret1",
                            "--telephone", "13800000000", "--name", "Alice")
        self.assertEqual(out, "created alice\n")
        yield self.ok("user", "add", "bob", "--password", "secret1")
        out = yield self.ok("user", "list")
        self.assertEqual(out.splitlines(), ["UID\tTELEPHONE\tNAME", "alice\t13800000000\tAlice", "bob\t-\t-"])

    @inlineCallbacks
    def test_commands_refuse_a_database_that_does_not_exist(self):
        for args in (("user", "add", "alice", "--password", "secret1"), ("user", "list"),
                     ("app", "list"), ("directory", "show"), ("outbox", "show")):
            code, out, err = yield self.imd(*args)
            self.assertEqual(code, 1, out + err)
            self.assertEqual(err.splitlines()[0], f"database: {describe(self.url)}")
            self.assertOneLineError(err, "no imd database", "python -m imd db upgrade")
        if self.backend == "sqlite":
            self.assertFalse(os.path.exists(self.url[len("sqlite:///"):]))
            # A relative URL is named by its absolute path: where it was looked for.
            code, out, err = yield self.imd("user", "list", IMD_DATABASE_URL="sqlite:///var/x.sqlite3")
            self.assertIn(f"database: sqlite:///{self.cwd}/var/x.sqlite3", err)
            self.assertFalse(os.path.exists(os.path.join(self.cwd, "var")))
        yield self.ok("db", "upgrade")
        yield self.ok("user", "add", "alice", "--password", "secret1")

    @inlineCallbacks
    def test_password_from_stdin(self):
        yield self.ok("db", "upgrade")
        done = yield self.with_stdin("secret1\n", "user", "add", "alice")
        self.assertEqual((done.returncode, done.stdout), (0, "created alice\n"), done.stderr)
        # Nothing on the command line, so nothing in ps or the shell's history.
        session = yield self.accounts().login("alice", "secret1")
        self.assertEqual(session.uid, "alice")
        done = yield self.with_stdin("newsecret\n", "user", "passwd", "alice")
        self.assertEqual(done.returncode, 0, done.stderr)
        session = yield self.accounts().login("alice", "newsecret")
        self.assertEqual(session.uid, "alice")
        done = yield self.with_stdin("", "user", "add", "bob")
        self.assertEqual(done.returncode, 2, done.stderr)
        self.assertOneLineError(done.stderr, "no password")

    @inlineCallbacks
    def test_config_defaults(self):
        import tomllib

        from imd.config import Config, describe

        code, out, err = yield self.imd("config", "defaults")
        self.assertEqual(code, 0, err)
        parsed = tomllib.loads(out)
        self.assertEqual([(s, k, parsed[s][k]) for s, k, _, _ in describe()],
                         [(s, k, d) for s, k, d, _ in describe()])
        self.assertEqual(Config.from_dict(parsed), Config.from_dict({}))

    @inlineCallbacks
    def test_version(self):
        code, out, err = yield self.imd("--version")
        self.assertEqual((code, out), (0, f"imd {imd.__version__}\n"), err)

    @inlineCallbacks
    def test_added_user_logs_in(self):
        yield self.ok("db", "upgrade")
        yield self.ok("user", "add", "alice", "--password", "secret1")
        session = yield self.accounts().login("alice", "secret1")
        self.assertEqual(session.uid, "alice")

    @inlineCallbacks
    def test_list_empty(self):
        yield self.ok("db", "upgrade")
        out = yield self.ok("user", "list")
        self.assertEqual(out, "UID\tTELEPHONE\tNAME\n")

    @inlineCallbacks
    def test_duplicate_user(self):
        yield self.ok("db", "upgrade")
        yield self.ok("user", "add", "alice", "--password", "secret1")
        code, out, err = yield self.imd("user", "add", "alice", "--password", "secret2")
        self.assertEqual(code, 1, out + err)
        self.assertOneLineError(err, "alice", "already exists")
        out = yield self.ok("user", "list")
        self.assertEqual(out.splitlines()[1:], ["alice\t-\t-"])

    @inlineCallbacks
    def test_invalid_uid(self):
        yield self.ok("db", "upgrade")
        for uid in ("has space", "x" * 51, "ünï"):
            code, out, err = yield self.imd("user", "add", uid, "--password", "secret1")
            self.assertEqual(code, 1, out + err)
            self.assertOneLineError(err, "uid")
        out = yield self.ok("user", "list")
        self.assertEqual(out.splitlines()[1:], [])

    @inlineCallbacks
    def test_short_password(self):
        yield self.ok("db", "upgrade")
        code, out, err = yield self.imd("user", "add", "alice", "--password", "short")
        self.assertEqual(code, 1, out + err)
        self.assertOneLineError(err, "password")

    @inlineCallbacks
    def test_user_passwd(self):
        yield self.ok("db", "upgrade")
        yield self.ok("user", "add", "alice", "--password", "secret1")
        accounts = self.accounts()
        session = yield accounts.login("alice", "secret1")
        out = yield self.ok("user", "passwd", "alice", "--password", "newsecret")
        self.assertIn("alice", out)
        yield self.assertFailure(accounts.login("alice", "secret1"), BadCredentials)
        renewed = yield accounts.login("alice", "newsecret")
        self.assertEqual(renewed.uid, "alice")
        # An administrative reset logs the user out everywhere.
        yield self.assertFailure(accounts.authenticate(session.token), InvalidToken)

    @inlineCallbacks
    def test_user_admin_flag(self):
        yield self.ok("db", "upgrade")
        out = yield self.ok("user", "add", "root", "--password", "secret1", "--admin")
        self.assertEqual(out, "created root\nroot is an administrator\n")
        yield self.ok("user", "add", "alice", "--password", "secret1")
        out = yield self.ok("user", "admin", "alice")
        self.assertEqual(out, "alice is an administrator\n")
        accounts = self.accounts()
        for uid in ("root", "alice"):
            user = yield accounts.get_user(uid)
            self.assertTrue(user.admin, uid)
        yield self.ok("user", "admin", "alice", "--off")
        user = yield accounts.get_user("alice")
        self.assertFalse(user.admin)
        code, out, err = yield self.imd("user", "admin", "nobody")
        self.assertEqual(code, 1, out + err)
        self.assertOneLineError(err, "nobody")

    @inlineCallbacks
    def test_passwd_unknown_user(self):
        yield self.ok("db", "upgrade")
        code, out, err = yield self.imd("user", "passwd", "nobody", "--password", "newsecret")
        self.assertEqual(code, 1, out + err)
        self.assertOneLineError(err, "nobody")

    @inlineCallbacks
    def test_db_upgrade_and_current(self):
        head = head_revision()
        self.assertEqual(head, "0011")
        out = yield self.ok("db", "current")
        self.assertEqual(out, f"no imd database (head is {head}): run `python -m imd db upgrade` "
                              "(with the server's --config) to create it\n")
        if self.backend == "sqlite":
            # Asking does not create it.
            self.assertFalse(os.path.exists(self.url[len("sqlite:///"):]))
        out = yield self.ok("db", "upgrade")
        self.assertEqual(out, f"{head} (head): upgraded from no database\n")
        out = yield self.ok("db", "current")
        self.assertEqual(out, f"{head} (head)\n")
        # Upgrading a database that is at the head changes nothing.
        out = yield self.ok("db", "upgrade")
        self.assertEqual(out, f"{head} (head): already the newest revision, nothing to do\n")

    @inlineCallbacks
    def test_db_behind_head(self):
        from imd.store.migrate import upgrade

        yield deferToThread(upgrade, self.url, "0001")
        out = yield self.ok("db", "current")
        self.assertEqual(out, f"0001 (head is {head_revision()}): run `python -m imd db upgrade` to migrate\n")
        out = yield self.ok("db", "upgrade")
        self.assertEqual(out, f"{head_revision()} (head): upgraded from 0001\n")

    @inlineCallbacks
    def test_bad_database_url(self):
        for args in (("db", "current"), ("user", "list")):
            code, out, err = yield self.imd(*args, IMD_DATABASE_URL="mysql://localhost/imd")
            self.assertEqual(code, 2, out + err)
            self.assertOneLineError(err, "config error", "database.url", "IMD_DATABASE_URL")

    @inlineCallbacks
    def test_missing_config_file(self):
        code, out, err = yield self.imd("--config", "no-such.toml", "user", "list")
        self.assertEqual(code, 2, out + err)
        self.assertOneLineError(err, "config error", "no-such.toml")

    @inlineCallbacks
    def test_config_file(self):
        with open(os.path.join(self.cwd, "imd.toml"), "w") as f:
            f.write("[auth]\nhash_time_cost = 1\nhash_memory_kib = 1024\n")
        yield self.ok("--config", "imd.toml", "db", "upgrade")
        yield self.ok("--config", "imd.toml", "user", "add", "alice", "--password", "secret1")
        out = yield self.ok("--config", "imd.toml", "user", "list")
        self.assertEqual(out.splitlines()[1:], ["alice\t-\t-"])

    @inlineCallbacks
    def test_app_add_list_remove(self):
        yield self.ok("db", "upgrade")
        out = yield self.ok("app", "add", "shop")
        key_line, secret_line = out.splitlines()
        self.assertTrue(key_line.startswith("AppKey: ") and secret_line.startswith("AppSecret: "), out)
        key, secret = key_line.split(": ")[1], secret_line.split(": ")[1]
        self.assertEqual((len(key), len(secret)), (32, 32))
        store = Store(self.url, reactor=reactor)
        store.start()
        self.addCleanup(store.stop)
        app = yield store.apps.get(key)
        self.assertEqual((app.name, app.secret), ("shop", secret))
        code, out, err = yield self.imd("app", "add", "shop")
        self.assertEqual(code, 1, out + err)
        self.assertOneLineError(err, "shop", "already exists")
        out = yield self.ok("app", "list")
        self.assertEqual(out, f"NAME\tAPPKEY\nshop\t{key}\n")
        self.assertNotIn(secret, out)
        yield self.ok("app", "remove", key)
        self.assertEqual((yield self.ok("app", "list")), "NAME\tAPPKEY\n")
        code, out, err = yield self.imd("app", "remove", "shop")
        self.assertEqual(code, 1, out + err)

    @inlineCallbacks
    def test_outbox_show_retry_drop(self):
        yield self.ok("db", "upgrade")
        store = Store(self.url, reactor=reactor)
        store.start()
        self.addCleanup(store.stop)
        outbox = store.outbox
        yield outbox.add_many([("message", "{}", 1), ("message", "{}", 2), ("message", "{}", 3)])
        rows = yield outbox.claim("x", 10, 1000)
        yield outbox.failed(rows[0].id, "x", "receiver said 500", 20, 15)
        out = yield self.ok("outbox", "show")
        self.assertEqual(out.splitlines(), [
            "ID\tKIND\tSTATE\tATTEMPTS\tLAST ERROR",
            f"{rows[0].id}\tmessage\tdead\t1\treceiver said 500",
            f"{rows[1].id}\tmessage\tpending\t0\t-",
            f"{rows[2].id}\tmessage\tpending\t0\t-",
        ])
        self.assertEqual((yield self.ok("outbox", "show", "--dead")).splitlines()[1].split("\t")[0], str(rows[0].id))
        code, out, err = yield self.imd("outbox", "retry")
        self.assertEqual(code, 2, out + err)
        self.assertEqual((yield self.ok("outbox", "retry", str(rows[0].id))), "1 rows to be sent again\n")
        self.assertEqual(len((yield self.ok("outbox", "show", "--dead")).splitlines()), 1)
        yield outbox.failed(rows[0].id, "x", "again", 20, 15)
        self.assertEqual((yield self.ok("outbox", "drop", "--all")), "1 rows dropped\n")
        self.assertEqual(len((yield self.ok("outbox", "show")).splitlines()), 3)


class SQLiteCliTests(CliMixin, SQLiteBackend, unittest.TestCase):
    pass


class PostgresCliTests(CliMixin, PostgresBackend, unittest.TestCase):
    pass
