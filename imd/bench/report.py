# -*- test-case-name: tests.test_bench -*-
"""The summary table on stdout, the JSON result file and py-spy profile digests."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from typing import Any


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def table(rows: list[tuple[str, ...]], headers: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    out = [line, "  ".join(str(h).ljust(w) for h, w in zip(headers, widths)), line]
    for r in rows:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    out.append(line)
    return "\n".join(out)


def _lat(summary: dict | None, key: str) -> str:
    if not summary or not summary.get("count"):
        return "-"
    return _fmt(summary.get(key), "ms")


def summary_rows(name: str, result: dict) -> list[tuple[str, ...]]:
    """Rows (scenario, system, metric, value) for one scenario's result."""
    rows: list[tuple[str, ...]] = []
    systems = result.get("systems", {})
    for system, r in systems.items():
        if name == "p2p":
            m = r.get("median", {})
            rows.append((name, system, "throughput (delivered/s, median of runs)", _fmt(m.get("throughput"), "msg/s")))
            for what in ("delivery", "ack"):
                lat = m.get(what, {})
                rows.append((name, system, f"{what} latency p50/p95/p99", " / ".join(_lat(lat, k) for k in ("p50", "p95", "p99"))))
            rows.append((name, system, "server CPU (of one core)", _fmt(m.get("server_cpu"))))
            rows.append((name, system, "messages per server CPU-second", _fmt(m.get("per_cpu_second"))))
            rows.append((name, system, "load generator CPU (of one core)", _fmt(m.get("generator_cpu"))))
            store = [run["store"] for run in r.get("runs", []) if run.get("store")]
            if store:
                rows.append((name, system, "1:1 store transactions per second / mean ms (first run)",
                             f"{_fmt(store[0]['transactions_per_second'])} / {_fmt(store[0]['mean_ms'])}"))
            rows.append((name, system, "lost / ack errors", f"{m.get('undelivered', 0)} / {m.get('ack_errors', 0)}"))
        elif name == "connect":
            rows.append((name, system, "authenticated connections", f"{_fmt(r.get('established'))} of {_fmt(r.get('requested'))}"))
            rows.append((name, system, "server memory per connection", _fmt(r.get("kib_per_connection"), "KiB")))
            rows.append((name, system, "server RSS before / after", f"{_fmt(r.get('rss_before_kib'))} / {_fmt(r.get('rss_after_kib'))} KiB"))
            rows.append((name, system, "logins per second", _fmt(r.get("logins_per_second"))))
            rows.append((name, system, "login latency p50/p99", " / ".join(_lat(r.get("auth"), k) for k in ("p50", "p99"))))
        elif name == "group":
            rows.append((name, system, f"to last of {r.get('members_online', 0) - 1:,} members p50/max", " / ".join(_fmt(r.get("last_member_ms", {}).get(k), "ms") for k in ("p50", "max"))))
            rows.append((name, system, "any member p50/p99", " / ".join(_lat(r.get("latency"), k) for k in ("p50", "p99"))))
            rows.append((name, system, "sender ack p50", _lat(r.get("ack"), "p50")))
            rows.append((name, system, "delivered / expected", f"{_fmt(r.get('received'))} / {_fmt(r.get('expected'))}"))
        elif name == "presence":
            rows.append((name, system, "all users online and told", _fmt(r.get("all_done_s"), "s")))
            rows.append((name, system, "user told of all friends p50/p99", " / ".join(_fmt((r.get("complete") or {}).get(k), "ms") for k in ("p50", "p99"))))
            rows.append((name, system, "login latency p50/p99", " / ".join(_lat(r.get("login"), k) for k in ("p50", "p99"))))
            rows.append((name, system, "completed / users", f"{_fmt(r.get('completed'))} / {_fmt(r.get('users'))}"))
    for peer, values in result.get("ratio", {}).items():
        for key, value in values.items():
            rows.append((name, f"imd / {peer}", key, _fmt(value)))
    return rows


def print_summary(doc: dict) -> str:
    rows: list[tuple[str, ...]] = []
    for name, result in doc["scenarios"].items():
        rows.extend(summary_rows(name, result))
    target = doc.get("target", {})
    head = (
        f"imd.bench: {', '.join(doc['scenarios'])} on {target.get('kind')} "
        f"({target.get('backend') or '?'}), {doc['machine']['nproc']} CPUs {doc['machine']['cpu_model']}, "
        f"Python {doc['machine']['python']}, load average {doc.get('loadavg_start')} -> {doc.get('loadavg_end')}"
    )
    text = head + "\n" + table(rows, ("scenario", "system", "metric", "value"))
    profile = doc.get("profile")
    if profile and profile.get("top_self"):
        prows = []
        for name, thread in (profile.get("threads") or {"all": profile}).items():
            share = thread.get("percent", 100.0)
            for p in thread["top_self"][:10]:
                prows.append((f"{name} ({share:.0f} %)", f"{p['percent']:.1f} %", p["function"]))
        text += (
            f"\nserver profile during p2p (py-spy, {profile['samples']:,} samples; self time as % of each thread's samples):\n"
            + table(prows, ("thread (share of samples)", "self", "function"))
        )
    return text


def write_json(doc: dict, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=False)
        f.write("\n")


# A process's frame, its pid and command line; a child's stack names its
# parent's process first.  The module of a "python -m MODULE" child names
# its threads (the server's own stay unprefixed).
_PROCESS = re.compile(r'(?:process \d+:"(.*?)";)+(?=thread \()')
_MODULE = re.compile(r" -m (\S+)")


def digest_profile(path: str, top: int = 25) -> dict:
    """
    Top functions of a py-spy ``--format raw`` recording (collapsed
    stacks, one ``frame;frame;… count`` per line): by self samples (the
    innermost frame) and by inclusive samples (anywhere on the stack),
    over all threads and per thread (``--threads`` recordings begin each
    stack with ``thread (id): name``; pool threads are counted together;
    a child process's, as ``module: name``).
    """
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    threads: dict[str, Counter[str]] = {}
    thread_totals: Counter[str] = Counter()
    total = 0
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, n = line.rpartition(" ")
            try:
                n_samples = int(n)
            except ValueError:
                continue
            # --subprocesses: each stack first names its process, whose
            # command line may itself hold semicolons.
            process = _PROCESS.match(stack)
            if process:
                stack = stack[process.end() :]
            frames = [fr for fr in stack.split(";") if fr]
            thread = "all"
            if frames and frames[0].startswith("thread ("):
                thread = re.sub(r"[-_ ]?\d+$", "", frames[0].split(": ", 1)[-1]) or "thread"
                frames = frames[1:]
            module = process and _MODULE.search(process.group(1))
            if module:
                thread = f"{module.group(1)}: {thread}"
            if not frames:
                continue
            total += n_samples
            leaf = _short(frames[-1])
            self_counts[leaf] += n_samples
            threads.setdefault(thread, Counter())[leaf] += n_samples
            thread_totals[thread] += n_samples
            for fr in set(_short(fr) for fr in frames):
                incl_counts[fr] += n_samples

    def rows(counter: Counter[str], of: int) -> list[dict]:
        return [
            {"function": fn, "samples": n, "percent": round(100.0 * n / of, 1) if of else 0.0}
            for fn, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "top_self": rows(self_counts, total),
        "top_inclusive": rows(incl_counts, total),
        "threads": {
            name: {
                "samples": thread_totals[name],
                "percent": round(100.0 * thread_totals[name] / total, 1) if total else 0.0,
                "top_self": rows(counter, thread_totals[name])[:12],
            }
            for name, counter in sorted(threads.items(), key=lambda kv: -thread_totals[kv[0]])
        },
    }


def _short(frame: str) -> str:
    # py-spy frames read "function (path/to/module.py:line)"; keep the
    # function and the file from site-packages or the package root on.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/lib/python3", "/work/main/", "/imd/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            if marker == "/imd/":
                where = "imd/" + where
            break
    where = where.rsplit(":", 1)[0]
    return f"{name} ({where})" if where else name
