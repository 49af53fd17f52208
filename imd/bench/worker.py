# -*- test-case-name: tests.test_bench -*-
"""
One load-generator process: ``python -m imd.bench worker``.

It reads a JSON spec (the target, its users and their tokens) as the
first line of stdin, then one JSON command per line, and writes one JSON
event per line to stdout.  Every client is an :class:`imd.channels.longconn.client.LongConnClient`;
on the hot path it writes frames itself and reads acks and pushes through
``on_push``, so a message costs no Deferred and no timer.

Times are ``time.monotonic()``, which on Linux is the system-wide
CLOCK_MONOTONIC: a send stamped in one process is comparable with its
receipt in another.
"""

from __future__ import annotations

import json
import random
import sys
import time
from itertools import count
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import DeferredList, DeferredSemaphore, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.protocols.basic import LineReceiver

from imd.bench.limits import raise_fd_limit
from imd.bench.stats import Histogram
from imd.channels.longconn.msgtypes import IM_MESSAGE, IM_MESSAGE_ACK, IM_PING, IM_PRESENCE
from imd.channels.longconn.client import LongConnClient, connect
from imd.channels.xmpp.client import XmppClient, connect_xmpp

MESSAGE_TYPE = str(IM_MESSAGE)
PROGRESS_EVERY = 0.5
KEEPALIVE_EVERY = 60.0
monotonic = time.monotonic


def _drop(msgtype: int, body: dict) -> bool:
    return True


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _error_text(failure: Any) -> str:
    value = getattr(failure, "value", failure)
    return f"{type(value).__name__}: {value}"[:200]


class Worker:
    def __init__(self, spec: dict) -> None:
        self.index = spec.get("index", 0)
        self.host = spec["host"]
        self.port = spec["port"]
        self.tokens: dict[str, str] = spec.get("tokens", {})
        self.password = spec.get("password")
        self.partner: dict[str, str] = spec.get("partner", {})
        self.friends: dict[str, list[str]] = spec.get("friends", {})
        self.users: list[str] = spec["users"]
        self.proto = spec.get("proto", "longconn")
        # XMPP peers other than imd (ejabberd): their domain, whether each
        # user registers in-band first, and SASL PLAIN with the password.
        self.domain = spec.get("domain", "localhost")
        self.register = bool(spec.get("register"))
        self.plain = bool(spec.get("plain"))
        self.clients: dict[str, LongConnClient] = {}
        self.disconnected = 0
        self.run: Any = None
        self.keepalive = LoopingCall(self._keepalive)
        self.keepalive.start(KEEPALIVE_EVERY, now=False)

    def _keepalive(self) -> None:
        # The server closes a connection silent for idle_timeout (180 s).
        if self.run is None:
            for client in self.clients.values():
                if not client._lost:
                    client.send_frame(IM_PING, {})

    # -- commands -----------------------------------------------------------

    def command(self, cmd: dict) -> None:
        name = cmd.get("cmd")
        handler = getattr(self, f"cmd_{name}", None)
        if handler is None:
            emit("error", error=f"unknown command {name!r}")
            return
        try:
            d = handler(cmd)
        except Exception as e:
            emit("error", error=f"{name}: {type(e).__name__}: {e}")
            return
        if d is not None and hasattr(d, "addErrback"):
            d.addErrback(lambda f: emit("error", error=f"{name}: {_error_text(f)}"))

    @inlineCallbacks
    def _login_one(self, uid: str, hist: Histogram, errors: list, on_push: Any = None):
        started = monotonic()
        if self.proto == "xmpp":
            client = yield self._login_xmpp(uid, errors)
            if client is None:
                return None
            client.on_push = on_push or _drop
            client.closed.addCallback(self._lost, uid, client)
            hist.add(monotonic() - started)
            self.clients[uid] = client
            return client
        try:
            client = yield connect(reactor, self.host, self.port, timeout=30)
        except Exception as e:
            errors.append(f"connect: {type(e).__name__}: {e}"[:200])
            return None
        # Nagle's algorithm would hold a small frame behind an unacknowledged
        # one (40 ms with the peer's delayed ACK): a client must not add that.
        client.transport.setTcpNoDelay(True)
        client.on_push = on_push or _drop
        client.closed.addCallback(self._lost, uid, client)
        try:
            if self.tokens.get(uid):
                yield client.auth(uid, token=self.tokens[uid], res="bench")
            else:
                yield client.auth(uid, password=self.password, res="bench")
        except Exception as e:
            errors.append(f"auth: {type(e).__name__}: {e}"[:200])
            client.close()
            return None
        hist.add(monotonic() - started)
        self.clients[uid] = client
        return client

    @inlineCallbacks
    def _login_xmpp(self, uid: str, errors: list):
        try:
            xmpp = yield connect_xmpp(reactor, self.host, self.port, self.domain, timeout=30)
        except Exception as e:
            errors.append(f"connect: {type(e).__name__}: {e}"[:200])
            return None
        try:
            if self.tokens.get(uid):
                yield xmpp.login(uid, self.tokens[uid], "bench", plain=True)
            else:
                yield xmpp.login(uid, self.password, "bench", plain=self.plain, register=self.register)
        except Exception as e:
            errors.append(f"auth: {type(e).__name__}: {e}"[:200])
            xmpp.close()
            return None
        return XmppAsLongConn(xmpp)

    def _lost(self, _: Any, uid: str, client: LongConnClient) -> None:
        if self.clients.get(uid) is client:
            del self.clients[uid]
            self.disconnected += 1

    @inlineCallbacks
    def cmd_login(self, cmd: dict):
        """Connect and authenticate every user, C{concurrency} at a time."""
        users = [u for u in self.users if u not in self.clients]
        hist = Histogram()
        errors: list[str] = []
        sem = DeferredSemaphore(max(1, int(cmd.get("concurrency", 100))))
        started = monotonic()
        progress = LoopingCall(lambda: emit("progress", done=hist.count + len(errors)))
        progress.start(PROGRESS_EVERY, now=False)
        yield DeferredList([sem.run(self._login_one, uid, hist, errors) for uid in users])
        progress.stop()
        emit(
            "logged_in",
            ok=hist.count,
            failed=len(errors),
            errors=errors[:10],
            seconds=monotonic() - started,
            auth=hist.to_json(),
        )

    @inlineCallbacks
    def cmd_close(self, cmd: dict):
        clients = list(self.clients.values())
        self.clients.clear()
        for client in clients:
            client.close()
        yield DeferredList([c.closed for c in clients])
        emit("closed", n=len(clients))

    def cmd_quit(self, cmd: dict) -> None:
        reactor.stop()

    def cmd_p2p(self, cmd: dict) -> None:
        self.run = P2PRun(self, cmd)
        self.run.start()

    def cmd_group(self, cmd: dict) -> None:
        self.run = GroupRun(self, cmd)
        self.run.start()

    def cmd_presence(self, cmd: dict) -> None:
        self.run = PresenceRun(self, cmd)
        self.run.start()

    def finished(self, event: str, **fields: Any) -> None:
        self.run = None
        emit(event, disconnected=self.disconnected, **fields)


class XmppAsLongConn:
    """
    An XMPP client as the runs drive a long-connection client: a message
    sent as an IM_MESSAGE frame, its confirmation (the server's <a h>
    counting it, once committed) pushed as IM_MESSAGE_ACK, and messages
    received as IM_MESSAGE.  Received messages are acknowledged by stream
    management, so the runs' own acknowledgements are not sent.
    """

    def __init__(self, client: XmppClient) -> None:
        self.client = client
        self.transport = client.transport
        self.closed = client.closed
        self.on_push: Any = _drop
        client.on_message = lambda sender, msgid, body: self.on_push(IM_MESSAGE, {"msgid": msgid, "from": sender, "body": body})
        client.on_error = lambda msgid, text: self.on_push(
            IM_MESSAGE_ACK, {"type": MESSAGE_TYPE, "msgid": msgid, "err": text or "refused"}
        )

    @property
    def _lost(self) -> bool:
        return self.client._lost

    def send_frame(self, msgtype: int, body: dict) -> None:
        if msgtype == IM_MESSAGE:
            msgid = body["msgid"]
            d = self.client.send_message(body["to"], body["body"], msgid)
            d.addCallbacks(
                lambda _: self.on_push(IM_MESSAGE_ACK, {"type": MESSAGE_TYPE, "msgid": msgid, "err": ""}),
                lambda f: None,
            )
        elif msgtype == IM_PING:
            # Whitespace keeps an XMPP stream alive.
            self.client.write(" ")

    def close(self) -> Any:
        return self.client.close()


def at(when: float, fn: Any, *args: Any) -> Any:
    """Call C{fn} at monotonic time C{when}."""
    return reactor.callLater(max(0.0, when - monotonic()), fn, *args)


class P2PRun:
    """
    Every user writes to its partner (in this process): in ``max`` mode it
    keeps C{inflight} messages undelivered, in ``fixed`` mode it sends at
    C{rate / users_total} per second from its own phase, open loop (the
    latency counts from the planned send time).
    """

    def __init__(self, worker: Worker, cmd: dict) -> None:
        self.w = worker
        self.mode = cmd.get("mode", "max")
        self.inflight = int(cmd.get("inflight", 5))
        self.rate = float(cmd.get("rate", 1000))
        self.users_total = int(cmd.get("users_total", len(worker.users)))
        self.start_at = float(cmd["start_at"])
        self.window_start = self.start_at + float(cmd.get("warmup", 2))
        self.window_end = self.window_start + float(cmd.get("duration", 20))
        self.drain = float(cmd.get("drain", 5))
        self.tag = f"{cmd.get('tag', 'r')}w{worker.index}."
        self.rng = random.Random(int(cmd.get("seed", 1)) * 1000 + worker.index)
        self.counter = count()
        self.sent_at: dict[str, float] = {}
        self.delivery = Histogram()
        self.ack = Histogram()
        self.lag = Histogram()
        self.sent = self.sent_in_window = 0
        self.delivered = self.delivered_in_window = self.acked_in_window = 0
        self.ack_errors = 0
        self.first_error = ""
        self.stray = 0
        self.sending = True
        self.done = False
        self.progress = LoopingCall(lambda: emit("progress", done=self.delivered))

    def start(self) -> None:
        senders = [u for u in self.w.users if u in self.w.clients and self.w.partner.get(u) in self.w.clients]
        for uid in self.w.clients:
            self.w.clients[uid].on_push = self._handler(uid)
        self.progress.start(PROGRESS_EVERY, now=False)
        if self.mode == "max":
            def burst() -> None:
                for uid in senders:
                    for _ in range(self.inflight):
                        self.send(uid, monotonic())
            at(self.start_at, burst)
        else:
            period = self.users_total / self.rate
            for uid in senders:
                phase = self.rng.uniform(0, period)
                at(self.start_at + phase, self._tick, uid, self.start_at + phase, period)
        at(self.window_end, self._stop_sending)
        at(self.window_end + self.drain, self.finish)

    def send(self, uid: str, stamp: float) -> None:
        msgid = self.tag + str(next(self.counter))
        self.sent_at[msgid] = stamp
        self.sent += 1
        if self.window_start <= stamp < self.window_end:
            self.sent_in_window += 1
        self.w.clients[uid].send_frame(
            IM_MESSAGE, {"msgid": msgid, "to": self.w.partner[uid], "type": "0", "body": repr(stamp)}
        )

    def _tick(self, uid: str, planned: float, period: float) -> None:
        if not self.sending or planned >= self.window_end:
            return
        if uid in self.w.clients:
            self.lag.add(max(0.0, monotonic() - planned))
            self.send(uid, planned)
        at(planned + period, self._tick, uid, planned + period, period)

    def _handler(self, uid: str):
        client = self.w.clients[uid]
        sent_at = self.sent_at
        tag = self.tag

        def on_push(msgtype: int, body: dict) -> bool:
            if msgtype == IM_MESSAGE_ACK:
                if body.get("type") == MESSAGE_TYPE:
                    stamp = sent_at.pop(body.get("msgid"), None)
                    if stamp is not None:
                        if body.get("err"):
                            self.ack_errors += 1
                            self.first_error = self.first_error or str(body.get("err"))
                        elif self.window_start <= stamp < self.window_end:
                            self.ack.add(monotonic() - stamp)
                            self.acked_in_window += 1
                        if not self.sending and not sent_at and self.delivered >= self.sent:
                            self.finish()
                return True
            if msgtype == IM_MESSAGE:
                now = monotonic()
                msgid = body.get("msgid", "")
                client.send_frame(IM_MESSAGE_ACK, {"type": IM_MESSAGE, "msgid": msgid, "from": body.get("from")})
                if not msgid.startswith(tag):
                    self.stray += 1
                    return True
                stamp = float(body["body"])
                self.delivered += 1
                if self.window_start <= now < self.window_end:
                    self.delivered_in_window += 1
                if self.window_start <= stamp < self.window_end:
                    self.delivery.add(now - stamp)
                if self.mode == "max":
                    sender = body.get("from")
                    if self.sending and now < self.window_end and sender in self.w.clients:
                        self.send(sender, now)
                if not self.sending and self.delivered >= self.sent and not sent_at:
                    self.finish()
            return True

        return on_push

    def _stop_sending(self) -> None:
        self.sending = False
        if self.delivered >= self.sent and not self.sent_at:
            self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.progress.stop()
        for client in self.w.clients.values():
            client.on_push = _drop
        self.w.finished(
            "result",
            sent=self.sent,
            sent_in_window=self.sent_in_window,
            delivered=self.delivered,
            delivered_in_window=self.delivered_in_window,
            acked_in_window=self.acked_in_window,
            unacked=len(self.sent_at),
            undelivered=self.sent - self.delivered,
            ack_errors=self.ack_errors,
            first_error=self.first_error,
            stray=self.stray,
            delivery=self.delivery.to_json(),
            ack=self.ack.to_json(),
            lag=self.lag.to_json(),
        )


class GroupRun:
    """
    One member (the sender, in one of the processes) writes C{messages}
    group messages C{interval} s apart after C{warmup} uncounted ones;
    every member acknowledges each with its gid and seq, as clients do.
    """

    def __init__(self, worker: Worker, cmd: dict) -> None:
        self.w = worker
        self.gid = cmd["gid"]
        self.sender = cmd["sender"]
        self.messages = int(cmd.get("messages", 10))
        self.warmup = int(cmd.get("warmup_messages", 1))
        self.interval = float(cmd.get("interval", 1.0))
        self.start_at = float(cmd["start_at"])
        self.timeout = float(cmd.get("drain", 10))
        self.tag = f"{cmd.get('tag', 'g')}."
        total = self.messages + self.warmup
        self.expected = total * len([u for u in worker.clients if u != self.sender])
        self.received = 0
        self.per_message: dict[int, list] = {}  # index -> [count, max latency, first]
        self.latency = Histogram()
        self.ack = Histogram()
        self.sent_at: dict[str, float] = {}
        self.sent = 0
        self._acks: list[tuple[LongConnClient, dict]] = []
        self.ack_errors = 0
        self.first_error = ""
        self.done = False
        self.progress = LoopingCall(lambda: emit("progress", done=self.received))

    def start(self) -> None:
        for uid, client in self.w.clients.items():
            client.on_push = self._handler(uid, client)
        self.progress.start(PROGRESS_EVERY, now=False)
        total = self.messages + self.warmup
        if self.sender in self.w.clients:
            for k in range(total):
                at(self.start_at + k * self.interval, self._send, k)
        at(self.start_at + (total - 1) * self.interval + self.timeout, self.finish)
        if self.expected == 0 and self.sender not in self.w.clients:
            self.finish()

    def _send(self, k: int) -> None:
        client = self.w.clients.get(self.sender)
        if client is None:
            return
        now = monotonic()
        msgid = self.tag + str(k)
        self.sent_at[msgid] = now
        self.sent += 1
        client.send_frame(IM_MESSAGE, {"msgid": msgid, "gid": self.gid, "to": self.gid, "type": "1", "body": repr(now)})

    def _handler(self, uid: str, client: LongConnClient):
        def on_push(msgtype: int, body: dict) -> bool:
            if msgtype == IM_MESSAGE_ACK:
                stamp = self.sent_at.pop(body.get("msgid"), None)
                if stamp is not None and body.get("type") == MESSAGE_TYPE:
                    if body.get("err"):
                        self.ack_errors += 1
                        self.first_error = self.first_error or str(body.get("err"))
                    elif int(body["msgid"].rsplit(".", 1)[1]) >= self.warmup:
                        self.ack.add(monotonic() - stamp)
                    self._check()
                return True
            if msgtype == IM_MESSAGE and body.get("gid") == self.gid:
                now = monotonic()
                msgid = body.get("msgid", "")
                # Acknowledged once this reactor turn has read every member's
                # copy, so that writing acks does not delay the receipt
                # times of the members read after this one.
                self._acks.append((client, {"type": IM_MESSAGE, "msgid": msgid, "gid": self.gid, "seq": body.get("seq")}))
                if len(self._acks) == 1:
                    reactor.callLater(0, self._flush_acks)
                if not msgid.startswith(self.tag):
                    return True
                k = int(msgid.rsplit(".", 1)[1])
                latency = now - float(body["body"])
                entry = self.per_message.setdefault(k, [0, 0.0])
                entry[0] += 1
                entry[1] = max(entry[1], latency)
                if k >= self.warmup:
                    self.latency.add(latency)
                self.received += 1
                self._check()
            return True

        return on_push

    def _flush_acks(self) -> None:
        acks, self._acks = self._acks, []
        for client, body in acks:
            if not client._lost:
                client.send_frame(IM_MESSAGE_ACK, body)

    def _check(self) -> None:
        if self.received < self.expected or self.sent_at:
            return
        if self.sender in self.w.clients and self.sent < self.messages + self.warmup:
            return
        self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.progress.stop()
        for client in self.w.clients.values():
            client.on_push = _drop
        self.w.finished(
            "result",
            received=self.received,
            expected=self.expected,
            per_message={str(k): v for k, v in self.per_message.items()},
            latency=self.latency.to_json(),
            ack=self.ack.to_json(),
            unacked=len(self.sent_at),
            ack_errors=self.ack_errors,
            first_error=self.first_error,
        )


class PresenceRun:
    """
    At C{start_at} every user of this process connects, logs in and says
    IM_PRESENCE "online" (C{concurrency} logins in flight); a user is done
    once each of its friends has been announced to it online.
    """

    def __init__(self, worker: Worker, cmd: dict) -> None:
        self.w = worker
        self.start_at = float(cmd["start_at"])
        self.concurrency = int(cmd.get("concurrency", 100))
        self.timeout = float(cmd.get("timeout", 60))
        self.login = Histogram()
        self.online_ack = Histogram()
        self.complete = Histogram()
        self.errors: list[str] = []
        self.seen: dict[str, set[str]] = {}
        self.presence_frames = 0
        self.completed = 0
        self.last_complete = 0.0
        self.done = False
        self.progress = LoopingCall(lambda: emit("progress", done=self.completed))

    def start(self) -> None:
        self.progress.start(PROGRESS_EVERY, now=False)
        at(self.start_at, self._go)
        at(self.start_at + self.timeout, self.finish)

    def _handler(self, uid: str):
        friends = set(self.w.friends.get(uid, []))
        seen = self.seen.setdefault(uid, set())

        def on_push(msgtype: int, body: dict) -> bool:
            if msgtype == IM_PRESENCE:
                self.presence_frames += 1
                sender = body.get("from")
                if body.get("type") in ("online", "ack", "update") and sender in friends and sender not in seen:
                    seen.add(sender)
                    if len(seen) == len(friends):
                        self._completed()
            return True

        if not friends:
            self._completed()
        return on_push

    def _completed(self) -> None:
        elapsed = monotonic() - self.start_at
        self.complete.add(elapsed)
        self.last_complete = max(self.last_complete, elapsed)
        self.completed += 1
        if self.completed >= len(self.w.users):
            # Let the last online acks arrive before reporting.
            reactor.callLater(0.2, self.finish)

    @inlineCallbacks
    def _one(self, uid: str):
        client = yield self.w._login_one(uid, self.login, self.errors, on_push=self._handler(uid))
        if client is None:
            return
        started = monotonic()
        try:
            yield client.presence("online")
        except Exception as e:
            self.errors.append(f"presence: {type(e).__name__}: {e}"[:200])
            return
        self.online_ack.add(monotonic() - started)

    def _go(self) -> None:
        sem = DeferredSemaphore(max(1, self.concurrency))
        for uid in self.w.users:
            sem.run(self._one, uid)

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.progress.stop()
        for client in self.w.clients.values():
            client.on_push = _drop
        self.w.finished(
            "result",
            users=len(self.w.users),
            completed=self.completed,
            last_complete=self.last_complete,
            presence_frames=self.presence_frames,
            errors=self.errors[:10],
            failed=len(self.errors),
            login=self.login.to_json(),
            online_ack=self.online_ack.to_json(),
            complete=self.complete.to_json(),
        )


class Commands(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1 << 30

    def __init__(self) -> None:
        self.worker: Worker | None = None

    def lineReceived(self, line: bytes) -> None:
        if not line.strip():
            return
        message = json.loads(line)
        if self.worker is None:
            self.worker = Worker(message)
            emit("hello", index=self.worker.index, users=len(self.worker.users))
        else:
            self.worker.command(message)

    def connectionLost(self, reason: Any = None) -> None:
        # The coordinator went away: so do we.
        if reactor.running:
            reactor.stop()


def main() -> int:
    from twisted.internet import stdio

    raise_fd_limit()
    stdio.StandardIO(Commands())
    reactor.run()
    return 0
