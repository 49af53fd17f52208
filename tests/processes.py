"""
Real imd processes for tests: spawn ``twistd imd`` (and the CLI) as
children on free loopback ports, wait until they are healthy, talk HTTP
to them, and make sure they are gone after the test whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, returnValue, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from imd.bench.server import free_ports  # noqa: F401 (tests import it from here)

# twisted.scripts.twistd has no __main__ block, so "python -m
# twisted.scripts.twistd" would silently do nothing; this is what the
# installed twistd script runs.
TWISTD = "from twisted.scripts.twistd import run; run()"
# Generous bounds for a loaded machine; a healthy start takes a few seconds.
START_TIMEOUT = 30
EXIT_TIMEOUT = 30
POLL_INTERVAL = 0.1


class ChildProcess(ProcessProtocol):
    """A child process whose output is kept and whose end can be waited for."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.reason: BaseException | None = None
        self._waiters: list[Deferred] = []

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason) -> None:
        self.reason = reason.value
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if not d.called:  # it may have timed out
                d.callback(self.reason)

    @property
    def running(self) -> bool:
        return self.reason is None

    @property
    def exit_code(self) -> int | None:
        return getattr(self.reason, "exitCode", None)

    @property
    def exit_signal(self) -> int | None:
        return getattr(self.reason, "signal", None)

    def output(self) -> str:
        return (
            "--- stdout\n" + self.out.decode(errors="replace")
            + "--- stderr\n" + self.err.decode(errors="replace")
        )

    def signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)
        except ProcessExitedAlready:
            pass

    def ended(self, timeout: float = EXIT_TIMEOUT) -> Deferred:
        """Fires with the reason the process ended; fails after C{timeout} s."""
        if self.reason is not None:
            return succeed(self.reason)
        d = Deferred()
        self._waiters.append(d)
        return d.addTimeout(timeout, reactor)


def spawn(testcase: unittest.TestCase, args: list[str], env: dict, cwd: str) -> ChildProcess:
    """Run C{python ARGS}; the process is killed after the test whatever happens."""
    child = ChildProcess()
    reactor.spawnProcess(child, sys.executable, [sys.executable, *args], env=env, path=cwd)

    def kill() -> Deferred:
        if child.running:
            child.signal("KILL")
        return child.ended()

    testcase.addCleanup(kill)
    return child


def listener_env(ports: list[int]) -> dict:
    """
    Every listener on loopback, HTTP on C{ports[0]}: a test never meets
    another server or test run on the default ports.
    """
    names = ("HTTP", "LONGCONN", "SOCKET", "XMPP")
    return {f"IMD_{name}_ENDPOINT": f"tcp:{port}:interface=127.0.0.1" for name, port in zip(names, ports)}


class ProcessTestMixin:
    def empty_dir(self) -> str:
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path

    def twistd(self, cwd: str, env: dict, *imd_args: str) -> ChildProcess:
        # No pidfile: one left behind by a killed server would be judged
        # stale or not by whether its pid has been reused.
        return spawn(self, ["-c", TWISTD, "-n", "--pidfile=", "imd", *imd_args], env, cwd)

    @inlineCallbacks
    def cli(self, cwd: str, env: dict, *args: str):
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ("-m", "imd", *args), env=env, path=cwd, reactor=reactor
        )
        self.assertEqual(code, 0, f"python -m imd {' '.join(args)}:\n{out.decode()}{err.decode()}")
        returnValue(out.decode())

    @inlineCallbacks
    def start_imd(self, cwd: str, env: dict):
        """Start C{twistd imd} and wait until it is healthy: (child, base URL, health)."""
        ports = free_ports(4)
        child = self.twistd(cwd, {**env, **listener_env(ports)})
        base = f"http://127.0.0.1:{ports[0]}"
        health = yield self.wait_healthy(child, base)
        returnValue((child, base, health))

    @inlineCallbacks
    def wait_healthy(self, child: ChildProcess, base: str):
        deadline = reactor.seconds() + START_TIMEOUT
        last = "no answer"
        while True:
            if not child.running:
                self.fail(f"imd ended ({child.reason}) before it was healthy:\n{child.output()}")
            try:
                response = yield treq.get(base + "/healthz", persistent=False, timeout=5)
                body = yield response.content()
                if response.code == 200:
                    returnValue(json.loads(body))
                last = f"{response.code} {body!r}"
            except Exception as e:
                # Not listening yet.
                last = repr(e)
            if reactor.seconds() > deadline:
                self.fail(f"imd not healthy after {START_TIMEOUT} s (last: {last}):\n{child.output()}")
            yield deferLater(reactor, POLL_INTERVAL, lambda: None)

    @inlineCallbacks
    def http(self, base: str, method: str, path: str, body: Any = None, token: str | None = None):
        headers = {b"Content-Type": [b"application/json"]}
        if token is not None:
            headers[b"Authorization"] = [b"Bearer " + token.encode()]
        response = yield treq.request(
            method,
            base + path,
            data=None if body is None else json.dumps(body).encode(),
            headers=headers,
            persistent=False,
            timeout=10,
        )
        content = yield response.content()
        try:
            decoded = json.loads(content)
        except ValueError:
            decoded = content
        returnValue((response.code, decoded))

    @inlineCallbacks
    def stop(self, child: ChildProcess):
        """SIGTERM, and check that the server shut down cleanly."""
        child.signal("TERM")
        yield child.ended()
        # twistd stops the reactor, then ends itself with the signal it got.
        self.assertIn((child.exit_code, child.exit_signal), [(0, None), (None, signal.SIGTERM)], child.output())
        self.assertNotIn("Traceback", child.output())
        self.assertIn("Server Shut Down.", child.output())
