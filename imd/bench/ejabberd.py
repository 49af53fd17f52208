# -*- test-case-name: tests.test_bench_ejabberd -*-
"""
ejabberd as a peer of the benchmark (``--compare ejabberd``): Debian's
package, started from a throwaway config, spool and log directory as user
``ejabberd`` and measured over XMPP with the same scenario and generator
as imd.

What makes the comparison fair: no shaper on the c2s listener (Debian's
default one allows 3,000 B/s per connection), plain password storage (no
PBKDF2 per login, as imd's benchmark users log in with a token), stream
management (a sender's message is confirmed by the server's ``<a h>``, as
with imd over XMPP), ``mod_offline`` on and no archive.  ejabberd stores
nothing for a recipient who is online; imd commits every message before
its ack.  Users are created by in-band registration, allowed from
loopback only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from imd.bench.limits import descendants
from imd.bench.server import Target, free_ports, log_tail

CTL = "ejabberdctl"
USER = "ejabberd"
DOMAIN = "localhost"
START_TIMEOUT = 60.0
# Every benchmark user of ejabberd has this password (plain storage, so a
# login costs no key derivation, like imd's token logins).
PASSWORD = "bench-password"
INSTALL_HINT = (
    "ejabberd is not installed; it is optional: `apt-get install ejabberd` (Debian's package; "
    "the tool starts its own instance with a throwaway config and needs no running daemon)"
)

CONFIG = """\
# Written by imd.bench for one run; removed afterwards.
hosts:
  - {domain}
loglevel: warning
log_rotate_count: 0
certfiles: []
listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 262144
    shaper: none
    access: c2s
    starttls: false
    backlog: 1024
auth_method: internal
auth_password_format: plain
acl:
  loopback:
    ip:
      - 127.0.0.0/8
access_rules:
  c2s:
    allow: all
  register:
    allow: loopback
shaper_rules: {{}}
# One address registers every benchmark user.
registration_timeout: infinity
modules:
  mod_offline: {{}}
  mod_register:
    ip_access: register
  mod_stream_mgmt: {{}}
"""

# ejabberdctl's own settings: where the pid file goes, enough Erlang ports
# for the connect scenario's connections.
CTL_CONFIG = """\
ERLANG_NODE={node}
ERL_MAX_PORTS=250000
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"
EJABBERD_PID_PATH={workdir}/ejabberd.pid
"""


class EjabberdMissing(Exception):
    """ejabberd cannot be run here; the message says what to do."""


def config(port: int, domain: str = DOMAIN) -> str:
    """The ejabberd.yml of one run: a c2s listener on loopback C{port}."""
    return CONFIG.format(port=port, domain=domain)


def command(ctl: str, workdir: str, node: str, as_root: bool) -> list[str]:
    """The command line that runs ejabberd in the foreground from C{workdir}."""
    args = [
        ctl,
        "--ctl-config", os.path.join(workdir, "ejabberdctl.cfg"),
        "--config", os.path.join(workdir, "ejabberd.yml"),
        "--spool", os.path.join(workdir, "spool"),
        "--logs", os.path.join(workdir, "logs"),
        "--node", node,
        "foreground",
    ]
    if as_root:
        # Not su: pam_limits under su resets the open-file limit to 1,024.
        return ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", *args]
    return args


def find_ctl(search: str | None = None) -> str:
    """
    The path of ejabberdctl on C{search} (by default $PATH and /usr/sbin,
    where Debian puts it), or EjabberdMissing saying how to get it, or why
    it cannot run here.
    """
    if search is None:
        search = os.pathsep.join(filter(None, (os.environ.get("PATH"), "/usr/sbin")))
    ctl = shutil.which(CTL, path=search)
    if ctl is None:
        raise EjabberdMissing(INSTALL_HINT)
    try:
        pwd.getpwnam(USER)
    except KeyError:
        raise EjabberdMissing(f"{ctl} is there but its user {USER!r} is not; reinstall the package") from None
    if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != USER:
        raise EjabberdMissing(f"ejabberd runs as user {USER!r}: run the tool as root (it uses setpriv) or as {USER!r}")
    return ctl


def _pids_named(name: str) -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == name:
                        pids.add(int(entry))
            except OSError:
                pass
    return pids


def _descendant_named(root: int, name: str) -> int | None:
    """The first process named C{name} under C{root} (ejabberdctl runs erl, which runs beam.smp)."""
    under = descendants(root)
    for pid in sorted(_pids_named(name)):
        if pid in under:
            return pid
    return None


class EjabberdProcess:
    """One throwaway ejabberd: start() gives its c2s target, stop() ends it and its epmd if it started one."""

    def __init__(self) -> None:
        self.ctl = find_ctl()
        self.workdir = tempfile.mkdtemp(prefix="imd-bench-ejabberd-")
        self.node = f"imdbench{os.getpid()}@localhost"
        self.process: subprocess.Popen | None = None
        self.beam: int | None = None
        self.target: Target | None = None
        self._epmd_started: set[int] = set()

    def start(self) -> Target:
        (port,) = free_ports(1)
        as_root = os.geteuid() == 0
        for sub in ("spool", "logs"):
            os.makedirs(os.path.join(self.workdir, sub))
        with open(os.path.join(self.workdir, "ejabberd.yml"), "w") as f:
            f.write(config(port))
        with open(os.path.join(self.workdir, "ejabberdctl.cfg"), "w") as f:
            f.write(CTL_CONFIG.format(node=self.node, workdir=self.workdir))
        if as_root:
            entry = pwd.getpwnam(USER)
            os.chmod(self.workdir, 0o755)
            for base, dirs, files in os.walk(self.workdir):
                for name in [*dirs, *files]:
                    os.chown(os.path.join(base, name), entry.pw_uid, entry.pw_gid)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        epmd_before = _pids_named("epmd")
        # Erlang keeps its cookie in $HOME: the spool, which the user owns.
        env = dict(os.environ, HOME=os.path.join(self.workdir, "spool"))
        self.process = subprocess.Popen(
            command(self.ctl, self.workdir, self.node, as_root),
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=open(os.path.join(self.workdir, "stdout.txt"), "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"ejabberd exited with {self.process.returncode}:\n{self.log_tail()}")
            self.beam = self.beam or _descendant_named(self.process.pid, "beam.smp")
            if self.beam is not None and _accepts(port):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ejabberd not listening after {START_TIMEOUT} s:\n{self.log_tail()}")
            time.sleep(0.2)
        self._epmd_started = _pids_named("epmd") - epmd_before
        self.target = Target(
            "ejabberd",
            "127.0.0.1",
            port,
            pid=self.beam,
            backend="mnesia",
            info={"version": self.version(), "log": os.path.join(self.workdir, "logs")},
            proto="xmpp",
            login={"tokens": {}, "password": PASSWORD, "register": True, "plain": True, "domain": DOMAIN},
        )
        return self.target

    def version(self) -> str | None:
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "ejabberd"], capture_output=True, text=True, timeout=10)
            return out.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.workdir, ("stdout.txt", "logs/ejabberd.log", "logs/error.log"), lines)

    def stop(self) -> None:
        if self.beam is not None:
            # Erlang stops cleanly on SIGTERM, in a few seconds.
            _end(self.beam, lambda sig: os.kill(self.beam, sig), lambda: os.path.exists(f"/proc/{self.beam}"))
            self.beam = None
        if self.process is not None:
            # The session started above: ejabberdctl's shell and erl.
            _end(self.process.pid, lambda sig: os.killpg(self.process.pid, sig), lambda: self.process.poll() is None)
        # erl starts epmd when none runs; leave one that was there before.
        for pid in self._epmd_started & _pids_named("epmd"):
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        shutil.rmtree(self.workdir, ignore_errors=True)


def _end(pid: int, send, alive, timeout: float = 30.0) -> None:
    """SIGTERM through C{send}, then SIGKILL if still C{alive} after C{timeout} seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not alive():
            return
        try:
            send(sig)
        except OSError:
            return
        deadline = time.monotonic() + timeout
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
