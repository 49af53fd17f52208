# -*- test-case-name: tests.test_bench -*-
"""
The bare relay: the floor of imd's stack.  The same framing as the long
connection (PROTOCOL.md) on Twisted, no storage and no authentication:
IM_AUTH is accepted as it comes, an IM_MESSAGE is written to the
connection of its ``to`` (a group message: to every other connection)
and acknowledged to its sender, IM_PING is
answered, every other frame with a ``msgid`` gets an empty ack.  It speaks
enough of the protocol that the benchmark's client drives it unchanged.

    python -m imd.bench relay-server --port 9000
"""

from __future__ import annotations

import sys
import time
from typing import Any

from twisted.internet.protocol import Factory, Protocol

from imd.channels.longconn import msgtypes as T
from imd.channels.longconn.framing import FrameDecoder, decode_body, encode
from imd.channels.shared.frames import FrameError


class RelayProtocol(Protocol):
    def __init__(self, factory: "RelayFactory") -> None:
        self.factory = factory
        self.decoder = FrameDecoder(65_536)
        self.uid: str | None = None
        self.res = "default"

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except FrameError:
            self.transport.loseConnection()
            return
        for msgtype, payload in frames:
            try:
                body = decode_body(payload)
            except ValueError:
                continue
            self.frame(msgtype, body)

    def ack(self, msgtype: int, msgid: Any, **extra: Any) -> None:
        body = {"type": str(msgtype), "msgid": str(msgid), "err": ""}
        body.update(extra)
        self.transport.write(encode(T.IM_MESSAGE_ACK, body))

    def frame(self, msgtype: int, body: dict) -> None:
        msgid = body.get("msgid", "")
        if msgtype == T.IM_MESSAGE and (body.get("gid") or str(body.get("type", "0")) == "1"):
            self.group(body)
            self.ack(msgtype, msgid)
        elif msgtype == T.IM_MESSAGE:
            to = body.get("to")
            target = self.factory.sessions.get(to)
            if target is not None:
                now = int(time.time() * 1000)
                target.transport.write(
                    encode(
                        T.IM_MESSAGE,
                        {
                            "msgid": msgid,
                            "from": self.uid,
                            "from_res": self.res,
                            "to": to,
                            "to_res": target.res,
                            "time": body.get("time", ""),
                            "stime": now,
                            "type": "0",
                            "kind": body.get("kind") or "text",
                            "body": body.get("body", ""),
                        },
                    )
                )
            self.ack(msgtype, msgid)
        elif msgtype == T.IM_MESSAGE_ACK:
            pass
        elif msgtype == T.IM_PING:
            self.transport.write(encode(T.IM_PING, {}))
        elif msgtype == T.IM_AUTH:
            self.uid = str(body.get("uid", ""))
            self.res = str(body.get("res") or "default")
            self.factory.sessions[self.uid] = self
            self.ack(msgtype, msgid, token=body.get("token") or "relay", expires_in=86_400, uid=self.uid)
        elif msgid:
            self.ack(msgtype, msgid)

    def group(self, body: dict) -> None:
        # No membership: every other connected session is a member.
        gid = str(body.get("gid") or body.get("to"))
        seq = self.factory.group_seq[gid] = self.factory.group_seq.get(gid, 0) + 1
        frame = {
            "msgid": body.get("msgid", ""),
            "from": self.uid,
            "from_res": self.res,
            "to": gid,
            "to_res": "",
            "time": body.get("time", ""),
            "stime": int(time.time() * 1000),
            "type": "1",
            "kind": body.get("kind") or "text",
            "body": body.get("body", ""),
            "gid": gid,
            "seq": seq,
        }
        for uid, session in list(self.factory.sessions.items()):
            if session is not self:
                frame["to_res"] = session.res
                session.transport.write(encode(T.IM_MESSAGE, frame))

    def connectionLost(self, reason: Any = None) -> None:
        if self.uid is not None and self.factory.sessions.get(self.uid) is self:
            del self.factory.sessions[self.uid]


class RelayFactory(Factory):
    def __init__(self) -> None:
        self.sessions: dict[str, RelayProtocol] = {}
        self.group_seq: dict[str, int] = {}

    def buildProtocol(self, addr: Any) -> RelayProtocol:
        return RelayProtocol(self)


def serve(port: int, interface: str = "127.0.0.1") -> None:
    """Run the relay until killed; prints one line when it listens."""
    from imd.bench.limits import raise_fd_limit
    from twisted.internet import reactor

    raise_fd_limit()
    listening = reactor.listenTCP(port, RelayFactory(), backlog=1024, interface=interface)
    sys.stdout.write(f"relay listening on {interface}:{listening.getHost().port}\n")
    sys.stdout.flush()
    reactor.run()
