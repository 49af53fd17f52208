# -*- test-case-name: tests.test_bench -*-
"""
The servers the benchmark measures, as child processes: a fresh imd
(``twistd -n imd`` on free loopback ports, a temporary working directory,
cheap password hashing, its open-file limit raised to the hard limit) and
the bare relay.  Or a server that is already running (``--host``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

from imd.bench.limits import process_fd_limit, rss_kib

START_TIMEOUT = 60.0

# twistd after raising the open-file limit to the hard limit (the server
# cannot hold more connections than its limit allows).
TWISTD = (
    "import resource; s, h = resource.getrlimit(resource.RLIMIT_NOFILE); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (h, h)); "
    "from twisted.scripts.twistd import run; run()"
)


def repo_root() -> str:
    import imd

    return os.path.dirname(os.path.dirname(os.path.abspath(imd.__file__)))


def free_ports(n: int) -> list[int]:
    """
    C{n} loopback ports free now, for a child process to listen on.  They
    are drawn below the kernel's ephemeral range: a port from bind(0) is
    one the kernel also hands to outgoing connections, so another process
    connecting anywhere could take it before the child listens.
    """
    low, _ = _ephemeral_range()
    ports: list[int] = []
    tries = 0
    while len(ports) < n and tries < 1000:
        tries += 1
        port = random.randrange(10000, low)
        if port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    return ports


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(v) for v in f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return max(low, 10001), high


def log_tail(workdir: str, names: tuple[str, ...], lines: int) -> str:
    """The last C{lines} of each of a server's files C{names} that exist, headed by its name."""
    out = []
    for name in names:
        try:
            with open(os.path.join(workdir, name), errors="replace") as f:
                out.append(f"--- {name}\n" + "".join(f.readlines()[-lines:]))
        except OSError:
            pass
    return "\n".join(out)


@dataclass
class Target:
    """What the load generators connect to."""

    kind: str  # "imd" (started here), "remote", "relay" or "ejabberd"
    host: str
    port: int
    pid: int | None = None
    backend: str | None = None
    info: dict = field(default_factory=dict)
    # What the load generators speak: "longconn" (seed 001) or "xmpp".
    proto: str = "longconn"
    # How its users log in, over the scenario's spec: e.g. a password and
    # in-band registration instead of imd's tokens (ejabberd).
    login: dict = field(default_factory=dict)

    def rss_kib(self) -> int | None:
        return None if self.pid is None else rss_kib(self.pid)

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "host": self.host,
            "port": self.port,
            "pid": self.pid,
            "backend": self.backend,
            "proto": self.proto,
            "fd_limit": None if self.pid is None else process_fd_limit(self.pid),
            **self.info,
        }


class ImdProcess:
    """A fresh imd server on a database URL, started and stopped by the tool."""

    def __init__(self, database_url: str, backend: str, env: dict[str, str] | None = None, proto: str = "longconn") -> None:
        self.database_url = database_url
        self.backend = backend
        self.proto = proto
        self.extra_env = dict(env or {})
        self.workdir = tempfile.mkdtemp(prefix="imd-bench-server-")
        self.logfile = os.path.join(self.workdir, "twistd.log")
        self.process: subprocess.Popen | None = None
        self.target: Target | None = None

    def env(self, http_port: int, longconn_port: int, xmpp_port: int | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMD_")}
        root = repo_root()
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.update(
            IMD_HTTP_ENDPOINT=f"tcp:{http_port}:interface=127.0.0.1",
            IMD_LONGCONN_ENDPOINT=f"tcp:{longconn_port}:interface=127.0.0.1",
            IMD_SOCKET_ENDPOINT="",
            IMD_XMPP_ENDPOINT="" if xmpp_port is None else f"tcp:{xmpp_port}:interface=127.0.0.1",
            # The benchmark's users log in with tokens (SASL PLAIN) on loopback.
            IMD_XMPP_PLAIN_WITHOUT_TLS="true",
            IMD_DATABASE_URL=self.database_url,
            IMD_AUTH_HASH_TIME_COST="1",
            IMD_AUTH_HASH_MEMORY_KIB="1024",
            # Every client of the load generator comes from 127.0.0.1, up to
            # --concurrency of them logging in at once (19,000 in connect).
            IMD_LIMITS_UNAUTHENTICATED_PER_ADDRESS="1000000",
        )
        env.update(self.extra_env)
        return env

    def start(self) -> Target:
        http_port, longconn_port, xmpp_port = free_ports(3)
        args = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", f"--logfile={self.logfile}", "imd"]
        self.process = subprocess.Popen(
            args,
            cwd=self.workdir,
            env=self.env(http_port, longconn_port, xmpp_port if self.proto == "xmpp" else None),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.workdir, "stderr.txt"), "wb"),
        )
        base = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer"
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"imd exited with {self.process.returncode} before it was healthy:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
                    health = json.loads(response.read())
                    if response.status == 200:
                        break
            except Exception as e:
                last = repr(e)
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"imd not healthy after {START_TIMEOUT} s ({last}):\n{self.log_tail()}")
            time.sleep(0.1)
        self.target = Target(
            "imd",
            "127.0.0.1",
            xmpp_port if self.proto == "xmpp" else longconn_port,
            pid=self.process.pid,
            backend=self.backend,
            info={"http": base, "version": health.get("version"), "log": self.logfile},
            proto=self.proto,
        )
        return self.target

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.workdir, ("stderr.txt", "twistd.log"), lines)

    def errors_in_log(self) -> list[str]:
        """Lines of the server log that report a traceback or a failure."""
        found = []
        try:
            with open(self.logfile, errors="replace") as f:
                for line in f:
                    if "Traceback" in line or "Unhandled" in line or "internal error" in line:
                        found.append(line.rstrip())
        except OSError:
            pass
        return found[:20]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def remove(self) -> None:
        import shutil

        shutil.rmtree(self.workdir, ignore_errors=True)


class RelayProcess:
    """The bare relay as a child process (python -m imd.bench relay-server)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.target: Target | None = None

    def start(self) -> Target:
        (port,) = free_ports(1)
        env = dict(os.environ)
        root = repo_root()
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "imd.bench", "relay-server", "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        line = self.process.stdout.readline().decode()
        if "listening" not in line:
            self.stop()
            raise RuntimeError(f"the relay did not start: {line!r}")
        self.target = Target("relay", "127.0.0.1", port, pid=self.process.pid, backend=None)
        return self.target

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
