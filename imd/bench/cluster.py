"""
Routed traffic per instance in a cluster.

    python -m imd.bench.cluster --instances 3 --users 300 --duration 10 \\
        --database postgresql://postgres@127.0.0.1:5432/test --redis redis://127.0.0.1:6379/0

Starts that many ``twistd imd`` instances on a fresh Postgres schema and
Redis prefix, spreads the users evenly over them (user i on instance
i mod N), has every user send to random partners anywhere in the cluster
(one message in flight each) for the duration, and then reads each
instance's ``imd_redis_received_total`` — the events it received from the
other instances — against the events all of them published.  With
per-user channels an instance's input is the share of the traffic whose
recipients it holds: about 1/N, where a broadcast design would give
every instance all of it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import sys
import tempfile
import time

from twisted.internet import defer, task
from twisted.internet.protocol import ProcessProtocol

from imd.bench.server import free_ports
from imd.store.scratch import scratch_schema

TWISTD = "from twisted.scripts.twistd import run; run()"


class _Child(ProcessProtocol):
    def __init__(self) -> None:
        self.ended = defer.Deferred()
        self.output = bytearray()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        del self.output[:-65536]

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.ended.callback(None)


def _populate(url: str, n: int) -> dict[str, str]:
    """n users with tokens made here: no password hashing on the way."""
    from imd.store.database import create_imd_engine
    from imd.store import migrate, schema as s
    from imd.core.accounts import token_hash

    migrate.upgrade(url)
    engine = create_imd_engine(url, 1)
    tokens = {f"c{i}": secrets.token_urlsafe(24) for i in range(n)}
    now = int(time.time() * 1000)
    with engine.begin() as conn:
        conn.execute(
            s.users.insert(),
            [dict(uid=uid, name=uid, created_at=now, updated_at=now) for uid in tokens],
        )
        conn.execute(
            s.tokens.insert(),
            [
                dict(token_hash=token_hash(t), uid=uid, created_at=now, expires_at=now + 86_400_000)
                for uid, t in tokens.items()
            ],
        )
    engine.dispose()
    return tokens


def _metric(text_: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", text_, re.M)
    return float(match.group(1)) if match else 0.0


@defer.inlineCallbacks
def run(reactor, args) -> dict:
    import treq

    from imd.channels.longconn.client import connect

    url, drop_schema = scratch_schema(args.database, "imd_bench")
    children: list[_Child] = []
    clients = []
    try:
        tokens = _populate(url, args.users)
        prefix = f"imdbench{secrets.token_hex(4)}"
        instances = []
        for i in range(args.instances):
            http, longconn = free_ports(2)
            env = {k: v for k, v in os.environ.items() if not k.startswith("IMD_")}
            env.update(
                PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
                IMD_DATABASE_URL=url,
                IMD_DATABASE_MIGRATE_ON_START="false",
                IMD_REDIS_URL=args.redis,
                IMD_REDIS_PREFIX=prefix,
                IMD_INSTANCE_ID=f"bench{i}",
                IMD_HTTP_ENDPOINT=f"tcp:{http}:interface=127.0.0.1",
                IMD_LONGCONN_ENDPOINT=f"tcp:{longconn}:interface=127.0.0.1",
                IMD_SOCKET_ENDPOINT="",
                IMD_XMPP_ENDPOINT="",
            )
            child = _Child()
            reactor.spawnProcess(
                child, sys.executable, [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "imd"],
                env=env, path=tempfile.mkdtemp(prefix="imd-bench-"),
            )
            children.append(child)
            instances.append((http, longconn))
        for http, _ in instances:
            for _ in range(300):
                try:
                    response = yield treq.get(f"http://127.0.0.1:{http}/healthz", persistent=False)
                    body = json.loads((yield response.content()))
                    if body.get("redis", {}).get("status") == "ok":
                        break
                except Exception:
                    pass
                yield task.deferLater(reactor, 0.1, lambda: None)
            else:
                raise SystemExit(f"instance on port {http} did not become healthy")

        uids = list(tokens)
        for i, uid in enumerate(uids):
            _, port = instances[i % args.instances]
            client = yield connect(reactor, "127.0.0.1", port)
            client.on_push = _acker(client)
            yield client.auth(uid, token=tokens[uid])
            clients.append(client)
        # Subscriptions are made asynchronously after login.
        yield task.deferLater(reactor, 1.0, lambda: None)

        before = yield _scrape(treq, instances)
        sent = 0
        deadline = reactor.seconds() + args.duration
        rng = random.Random(1)

        @defer.inlineCallbacks
        def talker(client):
            nonlocal sent
            while reactor.seconds() < deadline:
                partner = rng.choice(uids)
                if partner == client.uid:
                    continue
                yield client.send_message(partner, "x")
                sent += 1

        yield defer.gatherResults([talker(c) for c in clients], consumeErrors=True)
        yield task.deferLater(reactor, 0.5, lambda: None)
        after = yield _scrape(treq, instances)
        published = sum(a["published"] - b["published"] for a, b in zip(after, before))
        received_total = sum(a["received"] - b["received"] for a, b in zip(after, before))
        rows = []
        for i, (a, b) in enumerate(zip(after, before)):
            received = a["received"] - b["received"]
            rows.append(
                {
                    "instance": f"bench{i}",
                    "users": len(uids[i :: args.instances]),
                    "received": int(received),
                    "published": int(a["published"] - b["published"]),
                    "share_of_all_published": round(received / published, 3) if published else 0,
                    "share_of_cluster_input": round(received / received_total, 3) if received_total else 0,
                }
            )
        return {
            "scenario": "cluster",
            "instances": args.instances,
            "users": args.users,
            "duration_s": args.duration,
            "messages": sent,
            "published_total": int(published),
            "per_instance": rows,
            "broadcast_design_share": 1.0,
        }
    except BaseException:
        for i, child in enumerate(children):
            sys.stderr.write(f"--- instance bench{i}, last lines of its log\n")
            sys.stderr.write(bytes(child.output[-4000:]).decode(errors="replace") + "\n")
        raise
    finally:
        for client in clients:
            client.transport.loseConnection()
        for child in children:
            try:
                child.transport.signalProcess("TERM")
            except Exception:
                pass
        for child in children:
            yield child.ended
        drop_schema()


def _acker(client):
    from imd.channels.longconn.msgtypes import IM_MESSAGE

    def on_push(msgtype, body):
        if msgtype == IM_MESSAGE:
            client.ack_message(body["msgid"], body["from"])
        # Nothing is kept: a benchmark must not grow its own memory.
        return True

    return on_push


@defer.inlineCallbacks
def _scrape(treq, instances):
    result = []
    for http, _ in instances:
        response = yield treq.get(f"http://127.0.0.1:{http}/metrics", persistent=False)
        body = (yield response.content()).decode()
        result.append(
            {
                "received": _metric(body, "imd_redis_received_total"),
                "published": _metric(body, "imd_redis_published_total"),
            }
        )
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m imd.bench.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--database", default=os.environ.get("IMD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--redis", default=os.environ.get("IMD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--json", help="write the result here too")
    args = parser.parse_args(argv)
    task.react(lambda reactor: run(reactor, args).addCallback(_print, args.json))


def _print(result: dict, path: str | None) -> None:
    print(f"{result['instances']} instances, {result['users']} users, {result['messages']} messages in {result['duration_s']} s")
    print(f"events published to Redis in all: {result['published_total']}")
    print(f"{'instance':<10} {'users':>6} {'received':>10} {'of published':>13} {'of input':>9}")
    for row in result["per_instance"]:
        print(
            f"{row['instance']:<10} {row['users']:>6} {row['received']:>10} "
            f"{row['share_of_all_published']:>13.3f} {row['share_of_cluster_input']:>9.3f}"
        )
    print("(a design that sends every event to every instance: 1.000 of published each)")
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
