# -*- test-case-name: tests.test_bench -*-
"""
The coordinator's side of the load generators: worker processes (``python
-m imd.bench worker``) driven by JSON lines, and the progress bar.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from typing import Callable

from imd.bench.server import Target, repo_root


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


class Bar:
    """One line on stderr, redrawn in place: a bar, a count and a rate."""

    WIDTH = 30
    WINDOW = 3.0

    def __init__(self, enabled: bool, label: str, total: float | None = None, timed: tuple[float, float] | None = None, unit: str = "") -> None:
        """
        C{total}: the count that fills the bar; C{timed}: (start, length)
        in monotonic seconds, for runs whose bar is time.
        """
        self.enabled = enabled
        self.label = label
        self.total = total
        self.timed = timed
        self.unit = unit
        # (time, count) of the updates inside the last WINDOW seconds.
        self._samples: deque[tuple[float, int]] = deque()
        self._drawn = False

    def rate(self, now: float, done: int) -> float:
        """Per second over the last WINDOW seconds (a moving window, not the last two samples)."""
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and now - samples[1][0] >= self.WINDOW:
            samples.popleft()
        t0, n0 = samples[0]
        return (done - n0) / (now - t0) if now > t0 else 0.0

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        self._rate = self.rate(now, done)
        if self.timed is not None:
            start, length = self.timed
            fraction = (now - start) / length if length > 0 else 1.0
            text = f"{max(0.0, now - start):5.1f}/{length:.0f} s  {done:>9,} {self.unit}  {self._rate:9,.0f} {self.unit}/s"
        else:
            fraction = done / self.total if self.total else 0.0
            text = f"{done:>7,}/{self.total or 0:,} {self.unit}  {self._rate:8,.0f}/s"
        fraction = min(1.0, max(0.0, fraction))
        filled = int(fraction * self.WIDTH)
        sys.stderr.write(f"\r  {self.label:<24} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {text}   ")
        sys.stderr.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled and self._drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


class WorkerPool:
    """K worker processes, one spec each, all aimed at one target."""

    def __init__(self, target: Target, specs: list[dict], progress: bool = True) -> None:
        self.target = target
        self.progress = progress
        self.events: "queue.Queue[tuple[int, dict]]" = queue.Queue()
        self.processes: list[subprocess.Popen] = []
        self.stderr_files: list[str] = []
        env = dict(os.environ)
        root = repo_root()
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        for i, spec in enumerate(specs):
            fd, path = tempfile.mkstemp(prefix=f"imd-bench-worker{i}-", suffix=".err")
            self.stderr_files.append(path)
            process = subprocess.Popen(
                [sys.executable, "-m", "imd.bench", "worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=fd,
                env=env,
            )
            os.close(fd)
            self.processes.append(process)
            threading.Thread(target=self._read, args=(i, process), daemon=True).start()
            self.send(i, {"index": i, "host": target.host, "port": target.port, "proto": target.proto, **spec, **target.login})
        self.wait("hello", timeout=60)

    def _read(self, i: int, process: subprocess.Popen) -> None:
        for line in process.stdout:
            try:
                self.events.put((i, json.loads(line)))
            except ValueError:
                self.events.put((i, {"event": "error", "error": f"bad line {line[:200]!r}"}))
        self.events.put((i, {"event": "exit"}))

    def __len__(self) -> int:
        return len(self.processes)

    def send(self, i: int, message: dict) -> None:
        process = self.processes[i]
        try:
            process.stdin.write((json.dumps(message) + "\n").encode())
            process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise BenchError(f"worker {i} is gone:\n{self.stderr(i)}") from None

    def broadcast(self, message: dict | Callable[[int], dict]) -> None:
        for i in range(len(self.processes)):
            self.send(i, message(i) if callable(message) else message)

    def stderr(self, i: int) -> str:
        try:
            with open(self.stderr_files[i], errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def wait(
        self,
        event: str,
        timeout: float = 600,
        bar: Bar | None = None,
        at: list[tuple[float, Callable[[], None]]] | None = None,
    ) -> list[dict]:
        """
        The next C{event} of every worker (in worker order), drawing
        C{bar} from their progress and calling each C{at} hook when its
        monotonic time comes.
        """
        results: dict[int, dict] = {}
        progress: dict[int, int] = {}
        hooks = sorted(at or [], key=lambda h: h[0])
        deadline = time.monotonic() + timeout
        try:
            while len(results) < len(self.processes):
                now = time.monotonic()
                while hooks and hooks[0][0] <= now:
                    hooks.pop(0)[1]()
                if now > deadline:
                    raise BenchError(f"no {event!r} from the load generators after {timeout:.0f} s")
                wait = min(0.2, deadline - now, *(h[0] - now for h in hooks[:1]))
                try:
                    i, message = self.events.get(timeout=max(0.001, wait))
                except queue.Empty:
                    if bar is not None:
                        bar.update(sum(progress.values()))
                    continue
                kind = message.get("event")
                if kind == "progress":
                    progress[i] = message.get("done", 0)
                    if bar is not None:
                        bar.update(sum(progress.values()))
                elif kind == event:
                    results[i] = message
                    progress[i] = message.get("done", progress.get(i, 0))
                elif kind == "error":
                    raise BenchError(f"load generator {i}: {message.get('error')}\n{self.stderr(i)}")
                elif kind == "exit":
                    raise BenchError(f"load generator {i} exited:\n{self.stderr(i)}")
            while hooks:
                hooks.pop(0)[1]()
        finally:
            if bar is not None:
                bar.close()
        return [results[i] for i in range(len(self.processes))]

    def close(self) -> None:
        for i, process in enumerate(self.processes):
            if process.poll() is None:
                try:
                    self.send(i, {"cmd": "quit"})
                except BenchError:
                    pass
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for path in self.stderr_files:
            try:
                os.unlink(path)
            except OSError:
                pass
