# -*- test-case-name: tests.test_bench -*-
"""``python -m imd.bench``: the command line."""

from __future__ import annotations

import argparse
import datetime
import secrets
import shlex
import signal
import sys

SCENARIO_HELP = {
    "connect": "N idle authenticated connections; server memory per connection",
    "p2p": "users in pairs writing to each other: --mode max (closed loop) or fixed (open loop at --rate)",
    "group": "one member writes to a group of M online members; time until the last has it",
    "presence": "N users with friends come online together; time until all know who is online",
    "all": "every scenario above, one after another, against one server",
}

EPILOG = """\
examples:
  python -m imd.bench p2p --mode max --users 200 --inflight 5 --duration 20 --warmup 2 --runs 3 --database sqlite
  python -m imd.bench p2p --mode fixed --rate 1000 --database postgres
  python -m imd.bench connect --users 19000 --database sqlite
  python -m imd.bench group --members 1000 --messages 10
  python -m imd.bench presence --users 1000 --friends 10
  python -m imd.bench p2p --host 10.0.0.5 --port 8283 --database postgresql://imd@10.0.0.5/imd --server-pid 4242
  python -m imd.bench p2p --proto xmpp --mode fixed --rate 500
  python -m imd.bench p2p --compare ejabberd,relay

Without --host the tool starts a fresh imd itself (twistd -n imd on free loopback ports, a new
SQLite file or a new Postgres schema, dropped afterwards) and the bare relay for comparison;
--compare ejabberd,relay adds a throwaway ejabberd, measured over XMPP in the same run.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m imd.bench",
        description="Benchmark imd's long connection against a fresh or a running server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="scenario", metavar="SCENARIO")
    common = argparse.ArgumentParser(add_help=False)

    g = common.add_argument_group("load")
    g.add_argument("--users", type=int, default=None, metavar="N",
                   help="users (connect 19000, p2p 200, presence 1000; group: members, 1000)")
    g.add_argument("--procs", type=int, default=1, metavar="K",
                   help="load-generator processes to spread the users over (default 1)")
    g.add_argument("--concurrency", type=int, default=200, metavar="C",
                   help="logins in flight at once, over all processes (default 200)")

    g = common.add_argument_group("server")
    g.add_argument("--database", default="sqlite", metavar="DB",
                   help="fresh server: sqlite (default), postgres (a new schema in $IMD_BENCH_POSTGRES_URL, "
                        "default postgresql://postgres@127.0.0.1:5432/test) or a postgresql:// URL (a new schema "
                        "in it); with --host: the URL of that server's database, where the users are written")
    g.add_argument("--server-env", action="append", default=[], metavar="IMD_KEY=VALUE",
                   help="extra environment for the server the tool starts (repeatable), e.g. IMD_DATABASE_POOL_SIZE=10")
    g.add_argument("--host", default=None, help="benchmark a running server on this host instead of starting one")
    g.add_argument("--port", type=int, default=None,
                   help="its long-connection port (default 8283), or its XMPP port with --proto xmpp (default 5222)")
    g.add_argument("--proto", choices=("longconn", "xmpp"), default="longconn",
                   help="what the clients speak: the seed-001 long connection (default) or XMPP "
                        "(SASL PLAIN with a token, stream management; connect and p2p only, no relay)")
    g.add_argument("--server-pid", type=int, default=None, metavar="PID",
                   help="with --host on this machine: the server's pid, to read its memory and CPU")
    g.add_argument("--keep-users", action="store_true", help="with --host: leave the benchmark's users in the database")
    g.add_argument("--compare", default="relay", metavar="PEERS",
                   help="what to measure beside imd in the same run, comma-separated: relay (the bare relay, "
                        "the default), ejabberd (Debian's package over XMPP, connect and p2p; apt-get install "
                        "ejabberd), or none")
    g.add_argument("--no-relay", dest="relay", action="store_false",
                   help="do not measure the bare relay alongside imd (the same as leaving it out of --compare)")

    g = common.add_argument_group("p2p")
    g.add_argument("--mode", choices=("max", "fixed"), default="max")
    g.add_argument("--inflight", type=int, default=5, help="max: messages each user keeps undelivered (default 5)")
    g.add_argument("--rate", type=float, default=1000.0, help="fixed: total messages per second (default 1000)")
    g.add_argument("--duration", type=float, default=20.0, help="seconds counted (default 20)")
    g.add_argument("--warmup", type=float, default=2.0, help="seconds before counting (default 2)")
    g.add_argument("--runs", type=int, default=3, help="runs; the median is reported (default 3)")
    g.add_argument("--drain", type=float, default=5.0, help="seconds to wait for the last deliveries (default 5)")
    g.add_argument("--seed", type=int, default=1, help="seed of the fixed mode's phases")
    g.add_argument("--history", type=int, default=0, metavar="N",
                   help="messages between the pairs written into imd's database before the runs, all received "
                        "(a deployment's database holds history: deeper indexes, a larger file; default 0)")
    g.add_argument("--profile", default=None, metavar="FILE",
                   help="record the server with py-spy during the first imd run (collapsed stacks to FILE)")

    g = common.add_argument_group("connect")
    g.add_argument("--settle", type=float, default=2.0, help="seconds between the last login and reading memory")

    g = common.add_argument_group("group")
    g.add_argument("--members", type=int, default=None, help="group members, all online (default 1000)")
    g.add_argument("--messages", type=int, default=10, help="messages counted (after one uncounted; default 10)")
    g.add_argument("--interval", type=float, default=1.0, help="seconds between them (default 1)")

    g = common.add_argument_group("presence")
    g.add_argument("--friends", type=int, default=10, help="friends of each user, in a ring (default 10)")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for everyone (default 60)")

    g = common.add_argument_group("output")
    g.add_argument("--json", default=None, metavar="FILE",
                   help="result file (default bench-SCENARIO-BACKEND-TIME.json in the current directory)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g.add_argument("--quiet", action="store_true", help="only the summary")

    for name, text in SCENARIO_HELP.items():
        sub.add_parser(name, parents=[common], help=text, description=text, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_parser("worker")
    relay = sub.add_parser("relay-server", help="run the bare relay alone (the floor of imd's stack)")
    relay.add_argument("--port", type=int, default=0)
    relay.add_argument("--interface", default="127.0.0.1")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    args = p.parse_args(argv)
    if args.scenario is None:
        p.print_help()
        return 2
    if args.scenario == "worker":
        from imd.bench.worker import main as worker_main

        return worker_main()
    if args.scenario == "relay-server":
        from imd.bench.relay import serve

        serve(args.port, args.interface)
        return 0
    problem = check(args)
    if problem:
        p.error(problem)
    return run(args, argv)


PEERS = ("relay", "ejabberd")
# The scenarios ejabberd plays over XMPP (imd's XMPP client speaks no group chat or rosters).
EJABBERD_SCENARIOS = ("connect", "p2p", "all")


def check(args: argparse.Namespace) -> str | None:
    """
    What is wrong with C{args}, before any server starts (None: nothing).
    Sets C{args.peers}, the systems measured beside imd.
    """
    names = [n.strip() for n in args.compare.split(",") if n.strip() and n.strip() != "none"]
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        return f"--compare: unknown {', '.join(unknown)} (choose from {', '.join(PEERS)} or none)"
    if not args.relay or args.proto == "xmpp":
        # The bare relay speaks the long connection only.
        names = [n for n in names if n != "relay"]
    args.peers = list(dict.fromkeys(names))
    args.relay = "relay" in args.peers
    positive = {"--procs": args.procs, "--concurrency": args.concurrency, "--runs": args.runs, "--inflight": args.inflight}
    for flag, value in positive.items():
        if value < 1:
            return f"{flag} must be at least 1"
    for flag, value in {"--duration": args.duration, "--rate": args.rate, "--interval": args.interval}.items():
        if value <= 0:
            return f"{flag} must be more than 0"
    for flag, value in {"--warmup": args.warmup, "--drain": args.drain, "--settle": args.settle}.items():
        if value < 0:
            return f"{flag} must not be negative"
    if args.history < 0:
        return "--history must not be negative"
    if args.users is not None and args.users < 1:
        return "--users must be at least 1"
    if args.scenario in ("p2p", "all") and args.users is not None and (args.users < 2 or args.users % 2):
        return "p2p needs an even number of users, at least 2 (--users)"
    members = args.members or (args.users if args.scenario in ("group", "all") else None)
    if members is not None and members < 2:
        return "a group needs at least 2 members (--members)"
    if args.proto == "xmpp" and args.scenario not in ("connect", "p2p"):
        return "--proto xmpp measures the connect and p2p scenarios only"
    if "ejabberd" in args.peers:
        if args.scenario not in EJABBERD_SCENARIOS:
            return "--compare ejabberd measures the connect and p2p scenarios only"
        if args.host:
            return "--compare ejabberd starts its own ejabberd and imd: leave out --host"
        from imd.bench.ejabberd import EjabberdMissing, find_ctl

        try:
            find_ctl()
        except EjabberdMissing as e:
            return str(e)
    return None


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, argv: list[str]) -> int:
    from imd.bench.coordinator import BenchError
    from imd.bench.limits import loadavg, machine, raise_fd_limit
    from imd.bench.population import Population, fresh_database
    from imd.bench.report import print_summary, write_json
    from imd.bench.scenarios import SCENARIOS, Context
    from imd.bench.server import ImdProcess, Target

    raise_fd_limit()
    # A kill (a CI's timeout, say) stops the run as ^C does, so that the
    # servers, peers and schema it made are removed, not left running.
    signal.signal(signal.SIGTERM, _interrupted)
    # A bar only on a terminal (IMD_BENCH_PROGRESS=1 forces it).
    args.progress = args.progress and (sys.stderr.isatty() or _forced_progress())
    started = datetime.datetime.now()
    doc: dict = {
        "tool": "imd.bench",
        "format": 1,
        "command": "python -m imd.bench " + shlex.join(argv),
        "started_at": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "loadavg_start": loadavg(),
        "source": _source(),
        "scenarios": {},
    }
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    server = None
    cleanup_db = None
    population = None
    ctx = None
    failed = None
    try:
        if args.host:
            if not args.database or "://" not in args.database:
                raise BenchError("with --host, --database must be the URL of that server's database (to create users)")
            port = args.port or (5222 if args.proto == "xmpp" else 8283)
            target = Target("remote", args.host, port, pid=args.server_pid,
                            backend=args.database.split(":", 1)[0].split("+")[0], proto=args.proto)
            population = Population(args.database, time_cost=3, memory_kib=65536)
            prefix = f"b{secrets.token_hex(2)}"
        else:
            url, backend, cleanup_db = fresh_database(args.database)
            env = dict(kv.split("=", 1) for kv in args.server_env)
            server = ImdProcess(url, backend, env, proto=args.proto)
            _say(args, f"starting imd on {backend} …")
            target = server.start()
            _say(args, f"imd pid {target.pid} listening on {target.host}:{target.port}")
            population = Population(url)
            prefix = ""
        doc["target"] = target.describe()
        ctx = Context(args, target, population, prefix)
        for name in names:
            _say(args, f"== {name}")
            doc["scenarios"][name] = SCENARIOS[name](ctx)
        if ctx.profile:
            doc["profile"] = ctx.profile
    except BenchError as e:
        failed = str(e)
    except KeyboardInterrupt:
        failed = "interrupted"
    finally:
        if ctx is not None:
            ctx.close()
            if args.host and not args.keep_users and ctx.created:
                try:
                    population.remove_users(ctx.created)
                except Exception as e:  # the result still counts
                    _say(args, f"could not remove the benchmark's users: {e}")
        if population is not None:
            population.close()
        if server is not None:
            server.stop()
            doc["server_log_errors"] = server.errors_in_log()
            if failed:
                _say(args, server.log_tail())
            server.remove()
        if cleanup_db is not None:
            cleanup_db()
    doc["finished_at"] = datetime.datetime.now().isoformat(timespec="seconds")
    doc["loadavg_end"] = loadavg()
    if failed:
        doc["error"] = failed
    backend = doc.get("target", {}).get("backend") or "none"
    path = args.json or f"bench-{args.scenario}-{backend}-{started.strftime('%Y%m%d-%H%M%S')}.json"
    write_json(doc, path)
    if doc["scenarios"]:
        print(print_summary(doc))
    print(f"result: {path}")
    if failed:
        sys.stderr.write(f"imd.bench: {failed}\n")
        return 1
    return 0


def _source() -> dict:
    """The imd tree measured: its commit and how many of its files differ from it."""
    import subprocess

    from imd.bench.server import repo_root

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", repo_root(), *args], capture_output=True, text=True, timeout=10
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [
        line[3:] for line in git("status", "--porcelain", "--", "imd").splitlines() if not line[3:].startswith("imd/bench/")
    ]
    # Porcelain lines begin with a two-column status that may be a space.
    return {"commit": git("rev-parse", "HEAD").strip() or None, "uncommitted_imd_files": changed[:50]}


def _forced_progress() -> bool:
    import os

    return os.environ.get("IMD_BENCH_PROGRESS") == "1"


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
