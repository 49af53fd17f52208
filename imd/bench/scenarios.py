# -*- test-case-name: tests.test_bench -*-
"""
The scenarios: each creates its users, starts its load generators against
imd (and, where the relay can play it, against the bare relay, in the same
run), and returns a JSON-able result.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import Any

from imd.bench.coordinator import Bar, BenchError, WorkerPool
from imd.bench.limits import cpu_seconds, loadavg
from imd.bench.population import Population
from imd.bench.report import digest_profile
from imd.bench.server import RelayProcess, Target
from imd.bench.stats import Histogram, median

DEFAULT_USERS = {"connect": 19_000, "p2p": 200, "group": 1_000, "presence": 1_000}
# connect and p2p measure every peer asked for (ejabberd over XMPP too);
# the others measure the relay only.
ALL_PEERS = ("relay", "ejabberd")


def split(items: list, k: int) -> list[list]:
    """Round-robin C{items} over C{k} lists."""
    return [items[i::k] for i in range(k)]


class Context:
    def __init__(self, args: Any, target: Target, population: Population, prefix: str) -> None:
        self.args = args
        self.target = target
        self.population = population
        self.prefix = prefix
        # The peers measured beside imd, started when first needed: name -> process.
        self.peer_processes: dict[str, Any] = {}
        self.created: list[str] = []
        self.profile: dict | None = None
        self.tag = f"{int(time.time()) % 100000}"

    @property
    def progress(self) -> bool:
        return self.args.progress

    def say(self, text: str) -> None:
        if not self.args.quiet:
            import sys

            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def users(self, letter: str, n: int) -> tuple[list[str], dict[str, str]]:
        uids = [f"{self.prefix}{letter}{i}" for i in range(1, n + 1)]
        started = time.monotonic()
        tokens = self.population.add_users(uids)
        self.created.extend(uids)
        self.say(f"  created {n:,} users {uids[0]}..{uids[-1]} in {time.monotonic() - started:.1f} s")
        return uids, tokens

    def peer(self, name: str) -> Target:
        process = self.peer_processes.get(name)
        if process is None:
            if name == "ejabberd":
                from imd.bench.ejabberd import EjabberdProcess

                process = EjabberdProcess()
                self.say("starting ejabberd …")
            else:
                process = RelayProcess()
            self.peer_processes[name] = process
            try:
                process.start()
            except RuntimeError as e:
                raise BenchError(str(e)) from None
        return process.target

    def targets(self, peers: tuple[str, ...] = ("relay",)) -> list[tuple[str, Target]]:
        """imd and the peers of C{peers} that were asked for (--compare)."""
        return [("imd", self.target)] + [(name, self.peer(name)) for name in self.args.peers if name in peers]

    def close(self) -> None:
        for process in self.peer_processes.values():
            process.stop()

    def login(self, pool: WorkerPool, n: int, label: str) -> dict:
        per = max(1, self.args.concurrency // len(pool))
        pool.broadcast({"cmd": "login", "concurrency": per})
        events = pool.wait("logged_in", timeout=max(600, n / 20), bar=Bar(self.progress, label, total=n, unit="logins"))
        auth = Histogram.merged(e["auth"] for e in events)
        ok = sum(e["ok"] for e in events)
        seconds = max(e["seconds"] for e in events)
        return {
            "requested": n,
            "established": ok,
            "failed": sum(e["failed"] for e in events),
            "errors": [err for e in events for err in e["errors"]][:10],
            "seconds": round(seconds, 3),
            "logins_per_second": round(ok / seconds, 1) if seconds else None,
            "auth": auth.summary(),
        }

    def close_pool(self, pool: WorkerPool) -> None:
        try:
            pool.broadcast({"cmd": "close"})
            pool.wait("closed", timeout=120)
        finally:
            pool.close()


def _require_all(login: dict, what: str) -> None:
    if login["failed"]:
        raise BenchError(f"{what}: {login['failed']} of {login['requested']} logins failed: {login['errors'][:3]}")


# -- connect -------------------------------------------------------------


def connect(ctx: Context) -> dict:
    """N idle authenticated connections; server memory per connection."""
    args = ctx.args
    n = args.users or DEFAULT_USERS["connect"]
    uids, tokens = ctx.users("c", n)
    result: dict[str, Any] = {"params": {"users": n, "procs": args.procs, "concurrency": args.concurrency}, "systems": {}}
    for system, target in ctx.targets(ALL_PEERS):
        ctx.say(f"connect: {n:,} clients to {system}")
        specs = [{"users": part, "tokens": {u: tokens[u] for u in part}} for part in split(uids, args.procs)]
        time.sleep(min(1.0, args.settle))
        before = target.rss_kib()
        pool = WorkerPool(target, specs)
        try:
            login = ctx.login(pool, n, f"connect {system}")
            time.sleep(args.settle)
            after = target.rss_kib()
            fds = _fd_count(target.pid)
            r = dict(login)
            r.update(
                rss_before_kib=before,
                rss_after_kib=after,
                server_open_fds=fds,
                server_fd_limit=target.describe().get("fd_limit"),
            )
            if before is not None and after is not None and login["established"]:
                r["kib_per_connection"] = round((after - before) / login["established"], 2)
        finally:
            ctx.close_pool(pool)
        result["systems"][system] = r
    result["ratio"] = ratios(result["systems"], {"memory per connection": lambda r: r.get("kib_per_connection")})
    return result


def ratios(systems: dict, figures: dict[str, Any]) -> dict[str, dict[str, float]]:
    """
    imd's figure over each peer's, peer by peer: C{figures} maps a name to
    the function that reads it from a system's result.
    """
    imd = systems.get("imd")
    out: dict[str, dict[str, float]] = {}
    for peer, r in systems.items():
        if peer == "imd" or imd is None:
            continue
        pairs = {name: (read(imd), read(r)) for name, read in figures.items()}
        values = {name: round(a / b, 3) for name, (a, b) in pairs.items() if a and b}
        if values:
            out[peer] = values
    return out


def _fd_count(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


# -- p2p -----------------------------------------------------------------


def p2p(ctx: Context) -> dict:
    """Pairs writing to each other, closed loop (max) or open loop (fixed)."""
    args = ctx.args
    n = args.users or DEFAULT_USERS["p2p"]
    uids, tokens = ctx.users("u", n)
    pairs = [(uids[i], uids[i + 1]) for i in range(0, n, 2)]
    ctx.population.befriend(pairs)
    if args.history:
        started = time.monotonic()
        ctx.population.add_history(pairs, args.history)
        ctx.say(f"  wrote {args.history:,} messages of history in {time.monotonic() - started:.1f} s")
    partner = {a: b for a, b in pairs} | {b: a for a, b in pairs}
    specs = []
    for part in split(pairs, args.procs):
        users = [u for pair in part for u in pair]
        specs.append({"users": users, "tokens": {u: tokens[u] for u in users}, "partner": {u: partner[u] for u in users}})
    params = {
        "mode": args.mode,
        "users": n,
        "inflight": args.inflight if args.mode == "max" else None,
        "rate": args.rate if args.mode == "fixed" else None,
        "duration": args.duration,
        "warmup": args.warmup,
        "runs": args.runs,
        "procs": args.procs,
        "history": args.history,
    }
    result: dict[str, Any] = {"params": params, "systems": {}}
    pools: dict[str, tuple[Target, WorkerPool]] = {}
    try:
        for system, target in ctx.targets(ALL_PEERS):
            pool = WorkerPool(target, specs)
            pools[system] = (target, pool)
            login = ctx.login(pool, n, f"login {system}")
            _require_all(login, f"p2p on {system}")
            result["systems"][system] = {"login": login, "runs": []}
        for run in range(args.runs):
            for system, (target, pool) in pools.items():
                r = _p2p_run(ctx, system, target, pool, run, n)
                result["systems"][system]["runs"].append(r)
    finally:
        for target, pool in pools.values():
            ctx.close_pool(pool)
    for system, r in result["systems"].items():
        r["median"] = _median_run(r["runs"])
    figures = {
        "server CPU": lambda r: r["median"].get("server_cpu"),
        "messages per server CPU-second": lambda r: r["median"].get("per_cpu_second"),
    }
    if args.mode == "max":
        figures["throughput"] = lambda r: r["median"].get("throughput")
    else:
        for key in ("p50", "p99"):
            figures[f"delivery {key}"] = lambda r, key=key: r["median"]["delivery"].get(key)
    result["ratio"] = ratios(result["systems"], figures)
    return result


def _p2p_run(ctx: Context, system: str, target: Target, pool: WorkerPool, run: int, n: int) -> dict:
    args = ctx.args
    start_at = time.monotonic() + 0.5
    window_start = start_at + args.warmup
    window_end = window_start + args.duration
    cpu: dict[str, Any] = {}  # readings at the window's start and end
    generators = [process.pid for process in pool.processes]

    def read_cpu(at: str) -> None:
        cpu[at] = cpu_seconds(target.pid) if target.pid else None
        # The load generator's own CPU says whether it, not the server, set the pace.
        cpu[f"generator_{at}"] = sum(cpu_seconds(pid) or 0.0 for pid in generators)
        if target.kind == "imd" and target.info.get("http"):
            cpu[f"store_{at}"] = store_transactions(target.info["http"])

    hooks = [(window_start, lambda: read_cpu("start")), (window_end, lambda: read_cpu("end"))]
    profiler: list = []
    if ctx.args.profile and system == "imd" and run == 0 and target.pid:
        hooks.append((window_start, lambda: profiler.append(_start_profiler(ctx, target.pid, args.duration))))
    pool.broadcast(
        {
            "cmd": "p2p",
            "mode": args.mode,
            "inflight": args.inflight,
            "rate": args.rate,
            "users_total": n,
            "start_at": start_at,
            "warmup": args.warmup,
            "duration": args.duration,
            "drain": args.drain,
            "seed": args.seed + run,
            "tag": f"b{ctx.tag}r{run}{system[0]}",
        }
    )
    label = f"p2p {args.mode} {system} {run + 1}/{args.runs}"
    events = pool.wait(
        "result",
        timeout=args.warmup + args.duration + args.drain + 120,
        bar=Bar(ctx.progress, label, timed=(start_at, args.warmup + args.duration), unit="msg"),
        at=hooks,
    )
    if profiler:
        _finish_profiler(ctx, profiler[0])
    delivery = Histogram.merged(e["delivery"] for e in events)
    ack = Histogram.merged(e["ack"] for e in events)
    lag = Histogram.merged(e["lag"] for e in events)
    total = lambda key: sum(e[key] for e in events)
    r = {
        "throughput": round(total("delivered_in_window") / args.duration, 1),
        "ack_throughput": round(total("acked_in_window") / args.duration, 1),
        "sent": total("sent"),
        "delivered": total("delivered"),
        "undelivered": total("undelivered"),
        "unacked": total("unacked"),
        "ack_errors": total("ack_errors"),
        "first_error": next((e["first_error"] for e in events if e["first_error"]), ""),
        "disconnected": total("disconnected"),
        "delivery": delivery.summary(),
        "ack": ack.summary(),
        "loadavg": loadavg(),
    }
    if args.mode == "fixed":
        r["offered_rate"] = args.rate
        r["schedule_lag"] = lag.summary()
    if "generator_end" in cpu:
        r["generator_cpu"] = round((cpu["generator_end"] - cpu["generator_start"]) / args.duration, 3)
    if cpu.get("store_start") and cpu.get("store_end"):
        (n0, s0), (n1, s1) = cpu["store_start"], cpu["store_end"]
        if n1 > n0:
            # How many messages a commit serves, and how long one takes.
            r["store"] = {
                "transactions_per_second": round((n1 - n0) / args.duration, 1),
                "mean_ms": round(1000 * (s1 - s0) / (n1 - n0), 3),
            }
    if cpu.get("start") is not None and cpu.get("end") is not None:
        r["server_cpu"] = round((cpu["end"] - cpu["start"]) / args.duration, 3)
        if r["server_cpu"]:
            r["per_cpu_second"] = round(r["throughput"] / r["server_cpu"], 1)
    ctx.say(
        f"  {system} run {run + 1}: {r['throughput']:,.0f} msg/s delivered, delivery p50/p99 "
        f"{r['delivery'].get('p50')}/{r['delivery'].get('p99')} ms, ack p50/p99 {r['ack'].get('p50')}/{r['ack'].get('p99')} ms"
        + (f", server CPU {r['server_cpu']:.0%}" if "server_cpu" in r else "")
    )
    return r


def store_transactions(http: str) -> tuple[float, float] | None:
    """(count, total seconds) of imd's 1:1 message transactions so far, from its /metrics."""
    import urllib.request

    count = total = None
    try:
        with urllib.request.urlopen(http + "/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if 'op="messages.direct"' in line:
                    if line.startswith("imd_store_seconds_count"):
                        count = float(line.rsplit(" ", 1)[1])
                    elif line.startswith("imd_store_seconds_sum"):
                        total = float(line.rsplit(" ", 1)[1])
    except (OSError, ValueError):
        return None
    return None if count is None or total is None else (count, total)


def _median_run(runs: list[dict]) -> dict:
    if not runs:
        return {}
    out: dict[str, Any] = {}
    for key in ("throughput", "ack_throughput", "server_cpu", "per_cpu_second", "generator_cpu"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = None if not values else round(median(values), 3)
    for what in ("delivery", "ack"):
        out[what] = {}
        for key in ("p50", "p95", "p99", "max"):
            values = [r[what][key] for r in runs if r[what].get(key) is not None]
            out[what][key] = None if not values else round(median(values), 3)
        out[what]["count"] = sum(r[what].get("count", 0) for r in runs)
    out["undelivered"] = sum(r["undelivered"] for r in runs)
    out["ack_errors"] = sum(r["ack_errors"] for r in runs)
    return out


def _start_profiler(ctx: Context, pid: int, duration: float) -> tuple[subprocess.Popen, str] | None:
    # The one installed beside this Python (a virtualenv's bin) counts too.
    exe = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
    if exe is None:
        ctx.say("  --profile: py-spy is not installed (pip install py-spy); no profile")
        return None
    path = ctx.args.profile
    process = subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--duration", str(int(max(1, duration))), "--rate", "100",
         "--nonblocking", "--threads", "--subprocesses", "--format", "raw", "--output", path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return process, path


def _finish_profiler(ctx: Context, started: tuple[subprocess.Popen, str] | None) -> None:
    if started is None:
        return
    process, path = started
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    if not os.path.exists(path):
        ctx.say(f"  py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")
        return
    ctx.profile = {"file": os.path.abspath(path), **digest_profile(path)}


# -- group ---------------------------------------------------------------


def group(ctx: Context) -> dict:
    """One member writes to a group of M online members; time to the last."""
    args = ctx.args
    m = args.members or args.users or DEFAULT_USERS["group"]
    uids, tokens = ctx.users("g", m)
    gid = f"{ctx.prefix}bench-group-{ctx.tag}"
    ctx.population.add_group(gid, uids[0], uids)
    specs = [{"users": part, "tokens": {u: tokens[u] for u in part}} for part in split(uids, args.procs)]
    result: dict[str, Any] = {
        "params": {"members": m, "messages": args.messages, "interval": args.interval, "procs": args.procs},
        "systems": {},
    }
    for system, target in ctx.targets():
        pool = WorkerPool(target, specs)
        try:
            login = ctx.login(pool, m, f"login {system}")
            _require_all(login, f"group on {system}")
            start_at = time.monotonic() + 0.5
            total = args.messages + 1
            pool.broadcast(
                {
                    "cmd": "group",
                    "gid": gid,
                    "sender": uids[0],
                    "messages": args.messages,
                    "warmup_messages": 1,
                    "interval": args.interval,
                    "start_at": start_at,
                    "drain": args.drain,
                    "tag": f"b{ctx.tag}{system[0]}",
                }
            )
            events = pool.wait(
                "result",
                timeout=total * args.interval + args.drain + 120,
                bar=Bar(ctx.progress, f"group {system}", total=total * (m - 1), unit="deliveries"),
            )
        finally:
            ctx.close_pool(pool)
        per_message: dict[int, list] = {}
        for e in events:
            for k, (count, worst) in e["per_message"].items():
                entry = per_message.setdefault(int(k), [0, 0.0])
                entry[0] += count
                entry[1] = max(entry[1], worst)
        counted = [per_message[k] for k in sorted(per_message) if k >= 1]
        last = [worst * 1000 for count, worst in counted]
        complete = sum(1 for count, _ in counted if count >= m - 1)
        r = {
            "login": login,
            "members_online": login["established"],
            "messages": args.messages,
            "messages_reaching_all": complete,
            "received": sum(e["received"] for e in events),
            "expected": sum(e["expected"] for e in events),
            "last_member_ms": {
                "p50": round(median(last), 3) if last else None,
                "max": round(max(last), 3) if last else None,
                "min": round(min(last), 3) if last else None,
                "each": [round(x, 3) for x in last],
            },
            "latency": Histogram.merged(e["latency"] for e in events).summary(),
            "ack": Histogram.merged(e["ack"] for e in events).summary(),
            "ack_errors": sum(e["ack_errors"] for e in events),
            "first_error": next((e["first_error"] for e in events if e["first_error"]), ""),
            "disconnected": sum(e["disconnected"] for e in events),
        }
        ctx.say(
            f"  {system}: last of {m - 1:,} members after p50 {r['last_member_ms']['p50']} ms, "
            f"max {r['last_member_ms']['max']} ms; {complete}/{len(counted)} messages reached everyone"
        )
        result["systems"][system] = r
    result["ratio"] = ratios(result["systems"], {"time to last member p50": lambda r: r["last_member_ms"]["p50"]})
    return result


# -- presence ------------------------------------------------------------


def presence(ctx: Context) -> dict:
    """N users (F friends each, in a ring) come online together."""
    args = ctx.args
    n = args.users or DEFAULT_USERS["presence"]
    f = min(args.friends, n - 1)
    if f % 2:
        f -= 1
    uids, tokens = ctx.users("s", n)
    friends: dict[str, list[str]] = {u: [] for u in uids}
    pairs = []
    for i, u in enumerate(uids):
        for d in range(1, f // 2 + 1):
            v = uids[(i + d) % n]
            if v != u and v not in friends[u]:
                friends[u].append(v)
                friends[v].append(u)
                pairs.append((u, v))
    ctx.population.befriend(pairs)
    specs = [
        {"users": part, "tokens": {u: tokens[u] for u in part}, "friends": {u: friends[u] for u in part}}
        for part in split(uids, args.procs)
    ]
    pool = WorkerPool(ctx.target, specs)
    try:
        ctx.say(f"presence: {n:,} users with {f} friends each come online")
        start_at = time.monotonic() + 0.5
        pool.broadcast(
            lambda i: {
                "cmd": "presence",
                "start_at": start_at,
                "concurrency": max(1, args.concurrency // len(pool)),
                "timeout": args.timeout,
            }
        )
        events = pool.wait(
            "result", timeout=args.timeout + 120, bar=Bar(ctx.progress, "presence imd", total=n, unit="users")
        )
    finally:
        ctx.close_pool(pool)
    complete = Histogram.merged(e["complete"] for e in events)
    r = {
        "users": n,
        "friends_each": f,
        "completed": sum(e["completed"] for e in events),
        "failed": sum(e["failed"] for e in events),
        "errors": [x for e in events for x in e["errors"]][:10],
        "all_done_s": round(max(e["last_complete"] for e in events), 3),
        "complete": complete.summary(),
        "login": Histogram.merged(e["login"] for e in events).summary(),
        "online_ack": Histogram.merged(e["online_ack"] for e in events).summary(),
        "presence_frames": sum(e["presence_frames"] for e in events),
    }
    if r["completed"] < n:
        r["all_done_s"] = None
    ctx.say(
        f"  imd: {r['completed']:,}/{n:,} users told of every friend; all after {r['all_done_s']} s "
        f"(login p50 {r['login'].get('p50')} ms)"
    )
    return {"params": {"users": n, "friends": f, "procs": args.procs, "concurrency": args.concurrency}, "systems": {"imd": r}}


SCENARIOS = {"connect": connect, "p2p": p2p, "group": group, "presence": presence}
