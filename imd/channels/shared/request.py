# -*- test-case-name: tests.test_http -*-
"""
The HTTP request of every imd route.  It differs from twisted.web's in two
ways, both about bodies a client could use to hurt everyone else:

- A body larger than the site's C{max_request_body} (the largest any route
  accepts) is refused with 413 and the connection closed as soon as its
  size is known (C{Content-Length}) or passed (chunked), so no one can
  fill the server's memory or disk with one request.
- Bodies are never parsed into C{request.args}: every route reads its own
  body within its own limit (twisted.web would parse a multipart upload
  into memory, several copies of it, before any route could refuse it).
"""

from __future__ import annotations

import json

from twisted.logger import Logger
from twisted.web import server

log = Logger()


class ImdRequest(server.Request):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._parsePOSTFormSubmission = False
        self._body_seen = 0
        self._refused = False

    def _limit(self) -> int:
        return getattr(self.channel.site, "max_request_body", 1 << 20)

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limit():
            super().gotLength(None)
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._body_seen += len(data)
        if self._body_seen > self._limit():
            self._refuse()
            return
        super().handleContentChunk(data)

    def _refuse(self) -> None:
        if self._refused:
            return
        self._refused = True
        limit = self._limit()
        log.info("refused a request body over {limit} bytes", limit=limit)
        body = json.dumps(
            {"type": "error", "code": "too_large", "err": f"the request body is over {limit} bytes"}
        ).encode()
        transport = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        transport.loseConnection()
