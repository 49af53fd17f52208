"""
The benchmark's ejabberd peer (``--compare ejabberd``): its throwaway
configuration and command line, what the tool says when ejabberd is
missing, and, where Debian's ejabberd is installed, a tiny p2p run of
imd beside it.  No figure is asserted.
"""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from imd.bench import cli, ejabberd
from tests.support import child_env


def _usable() -> str | None:
    try:
        ejabberd.find_ctl()
    except ejabberd.EjabberdMissing as e:
        return str(e)
    return None


class ConfigTests(unittest.TestCase):
    def test_fair_settings(self):
        text = ejabberd.config(5999)
        lines = [line.strip() for line in text.splitlines()]
        # One loopback c2s listener, no TLS, no shaper (Debian's default
        # c2s shaper allows 3,000 B/s per connection).
        self.assertIn("port: 5999", lines)
        self.assertIn('ip: "127.0.0.1"', lines)
        self.assertIn("module: ejabberd_c2s", lines)
        self.assertIn("shaper: none", lines)
        self.assertIn("starttls: false", lines)
        self.assertEqual(text.count("module:"), 1)
        # Plain storage: no key derivation per login; registration from loopback only.
        self.assertIn("auth_password_format: plain", lines)
        self.assertIn("ip_access: register", lines)
        self.assertEqual(lines[lines.index("register:") + 1], "allow: loopback")
        self.assertIn("registration_timeout: infinity", lines)
        for module in ("mod_offline: {}", "mod_stream_mgmt: {}"):
            self.assertIn(module, lines)
        self.assertNotIn("mod_mam", text)

    def test_command_as_root_uses_setpriv(self):
        args = ejabberd.command("/usr/sbin/ejabberdctl", "/tmp/w", "n@localhost", as_root=True)
        # Not su: pam_limits under su resets the open-file limit.
        self.assertEqual(args[:4], ["setpriv", "--reuid=ejabberd", "--regid=ejabberd", "--init-groups"])
        self.assertEqual(args[-1], "foreground")
        for flag, value in (("--config", "/tmp/w/ejabberd.yml"), ("--spool", "/tmp/w/spool"), ("--node", "n@localhost")):
            self.assertEqual(args[args.index(flag) + 1], value)
        self.assertEqual(ejabberd.command("/x/ejabberdctl", "/tmp/w", "n", as_root=False)[0], "/x/ejabberdctl")

    def test_missing_says_how_to_install(self):
        with self.assertRaises(ejabberd.EjabberdMissing) as caught:
            ejabberd.find_ctl(search=self.mktemp())
        self.assertIn("apt-get install ejabberd", str(caught.exception))


class CompareArgumentTests(unittest.TestCase):
    def args(self, *argv: str):
        args = cli.parser().parse_args(list(argv))
        return args, cli.check(args)

    def test_peers(self):
        args, problem = self.args("p2p")
        self.assertIsNone(problem)
        self.assertEqual(args.peers, ["relay"])
        args, problem = self.args("p2p", "--compare", "none")
        self.assertEqual((args.peers, problem), ([], None))
        args, problem = self.args("p2p", "--compare", "relay", "--no-relay")
        self.assertEqual((args.peers, args.relay), ([], False))
        args, problem = self.args("p2p", "--compare", "relay", "--proto", "xmpp")
        self.assertEqual(args.peers, [])
        args, problem = self.args("p2p", "--compare", "openfire")
        self.assertIn("unknown openfire", problem)

    def test_ejabberd_missing(self):
        def missing(search=None):
            raise ejabberd.EjabberdMissing(ejabberd.INSTALL_HINT)

        self.patch(ejabberd, "find_ctl", missing)
        args, problem = self.args("p2p", "--compare", "ejabberd,relay")
        self.assertIn("apt-get install ejabberd", problem)

    def test_ejabberd_scenarios(self):
        self.patch(ejabberd, "find_ctl", lambda search=None: "/usr/sbin/ejabberdctl")
        args, problem = self.args("p2p", "--compare", "ejabberd,relay")
        self.assertIsNone(problem)
        self.assertEqual(args.peers, ["ejabberd", "relay"])
        self.assertIn("connect and p2p", self.args("group", "--compare", "ejabberd")[1])
        self.assertIn("--host", self.args("p2p", "--compare", "ejabberd", "--host", "h", "--database", "postgresql://x/y")[1])


class EjabberdRunTests(unittest.TestCase):
    """A tiny run of imd beside a real ejabberd where it is installed: two servers start, so several seconds."""

    timeout = 120
    skip = _usable()

    @inlineCallbacks
    def test_p2p_beside_ejabberd(self):
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        result = os.path.join(cwd, "result.json")
        args = (
            "-m", "imd.bench", "p2p", "--compare", "ejabberd", "--users", "4", "--duration", "0.3",
            "--warmup", "0.1", "--runs", "1", "--drain", "3", "--quiet", "--no-progress", "--json", result,
        )
        out, err, code = yield getProcessOutputAndValue(sys.executable, args, env=child_env(), path=cwd, reactor=reactor)
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        with open(result) as f:
            doc = json.load(f)
        p2p = doc["scenarios"]["p2p"]
        self.assertEqual(set(p2p["systems"]), {"imd", "ejabberd"})
        run = p2p["systems"]["ejabberd"]["runs"][0]
        self.assertGreater(run["delivered"], 0)
        self.assertEqual((run["undelivered"], run["unacked"], run["ack_errors"], run["disconnected"]), (0, 0, 0, 0), run["first_error"])
        self.assertGreater(run["server_cpu"], 0)
        self.assertEqual(p2p["systems"]["ejabberd"]["login"]["established"], 4)
        self.assertIn("throughput", p2p["ratio"]["ejabberd"])
        self.assertIn("imd / ejabberd", out.decode())
