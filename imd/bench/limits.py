# -*- test-case-name: tests.test_bench -*-
"""Process limits and memory readings the benchmark needs on Linux."""

from __future__ import annotations

import os
import resource


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int | None:
    """VmRSS of process C{pid} in KiB (None: not readable)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def process_fd_limit(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/C{pid}/stat after the command's name (None: gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Past the CPU times (fields 11 and 12), which every reader here needs.
    return fields if len(fields) > 12 else None


def parents() -> dict[int, int]:
    """Each running process's parent, from /proc."""
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(entry)) is not None:
            found[int(entry)] = int(fields[1])
    return found


def descendants(root: int) -> set[int]:
    """The running processes under C{root}, at any depth."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents().items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def cpu_seconds(pid: int) -> float | None:
    """
    User + system CPU time so far of process C{pid} and the processes
    running under it: a server's CPU is its whole tree's, whatever part of
    its work it hands to a process of its own.
    """
    own = _own_cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(_own_cpu_seconds(child) or 0.0 for child in descendants(pid))


def _own_cpu_seconds(pid: int) -> float | None:
    fields = _stat(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> dict:
    import platform
    import sys

    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_mib": None if mem_kib is None else mem_kib // 1024,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "fd_limit": fd_limit(),
        "python_executable": sys.executable,
    }


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
