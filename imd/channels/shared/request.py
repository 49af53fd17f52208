# -*- test-case-name: tests.test_http -*-
"""
The HTTP request of every imd route.  It differs from twisted.web's in two
ways, both about bodies a client could use to hurt everyone else:

- A body larger than its route accepts (the site's C{body_limit(target)})
  is refused with 413 and the connection closed as soon as its size is
  known (C{Content-Length}) or passed (chunked), so no one can fill the
  server's memory or disk with one request.
- Bodies are never parsed into C{request.args}: every route reads its own
  body within its own limit (twisted.web would parse a multipart upload
  into memory, several copies of it, before any route could refuse it).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.web import server
from twisted.web.http import RESPONSES, HTTPChannel

from imd.errors import TooLarge

log = Logger()


class ImdRequest(server.Request):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._parsePOSTFormSubmission = False
        self._body_seen = 0
        self._body_limit: int | None = None
        self._refused = False

    def _target(self) -> bytes:
        # The body arrives before the request knows its URI: the channel
        # has the request line's target.
        return getattr(self.channel, "_path", b"")

    def _limit(self) -> int:
        if self._body_limit is None:
            self._body_limit = self.channel.site.body_limit(self._target())
        return self._body_limit

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limit():
            super().gotLength(None)
            self._refuse(length)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._body_seen += len(data)
        self.channel.body_received(len(data))
        if self._body_seen > self._limit():
            self._refuse(None)
            return
        super().handleContentChunk(data)

    def _refuse(self, length: int | None) -> None:
        if self._refused:
            return
        self._refused = True
        limit = self._limit()
        size = "" if length is None else f"of {length} bytes "
        error = TooLarge(f"the request body {size}is over the limit of {limit} bytes")
        log.info("refused a request body over {limit} bytes", limit=limit)
        # In the form of the API the path belongs to, as its routes would.
        method = getattr(self.channel, "_command", b"")
        code, headers, body = self.channel.site.resource.refusal(method, self._target(), error)
        head = [b"HTTP/1.1 %d %s" % (code, RESPONSES.get(code, b"Error"))]
        head += [name + b": " + value for name, value in headers.items()]
        head += [b"Connection: close", b"Content-Length: " + str(len(body)).encode()]
        transport = self.channel.transport
        transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        transport.loseConnection()


class ImdChannel(HTTPChannel):
    """
    An HTTP connection that must send each request in time: its headers
    within the site's C{header_timeout} seconds of its first byte, and its
    body at an average of C{min_body_rate} bytes a second after a grace of
    C{header_timeout} seconds.  twisted.web's own timeout is for idleness,
    which a client sending a byte every few seconds never reaches.
    """

    _read_deadline: Any = None
    _body_started = 0.0
    _body_bytes = 0

    def dataReceived(self, data: bytes) -> None:
        if self._read_deadline is None and not self._handlingRequest:
            self._read_deadline = self.callLater(self.site.header_timeout, self._too_slow)
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        super().allHeadersReceived()
        self._body_started = self.site.reactor.seconds()
        self._body_bytes = 0
        self.body_received(0)

    def body_received(self, n: int) -> None:
        """C{n} more bytes of the body arrived: the deadline moves with them."""
        if self._read_deadline is None:
            return
        self._body_bytes += n
        site = self.site
        due = self._body_started + site.header_timeout + self._body_bytes / site.min_body_rate
        self._read_deadline.reset(max(0.0, due - site.reactor.seconds()))

    def allContentReceived(self) -> None:
        self._stop_deadline()
        super().allContentReceived()

    def connectionLost(self, reason: Any) -> None:
        self._stop_deadline()
        super().connectionLost(reason)

    def _stop_deadline(self) -> None:
        if self._read_deadline is not None:
            if self._read_deadline.active():
                self._read_deadline.cancel()
            self._read_deadline = None

    def _too_slow(self) -> None:
        self._read_deadline = None
        log.info("HTTP request not received in time; closing")
        self.site.count_error("request_timeout")
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        self.transport.loseConnection()
