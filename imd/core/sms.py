# -*- test-case-name: tests.test_accounts -*-
"""SMS gateways: where verification codes go (``[sms] mode``)."""

from __future__ import annotations

import json

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.logger import Logger

from imd.errors import Unavailable

log = Logger()


class LogGateway:
    """Writes the code to the server log: for development and small sites."""

    def send(self, telephone: str, code: str) -> "Deferred[None]":
        log.info("SMS code for {telephone}: {code}", telephone=telephone, code=code)
        return succeed(None)


class HttpGateway:
    """POSTs ``{"telephone", "code"}`` as JSON to the configured URL."""

    def __init__(self, url: str, treq=None) -> None:
        if treq is None:
            import treq
        self._url = url
        self._treq = treq

    @inlineCallbacks
    def send(self, telephone: str, code: str):
        body = json.dumps({"telephone": telephone, "code": code}).encode()
        try:
            response = yield self._treq.post(
                self._url, body, headers={b"Content-Type": [b"application/json"]}, timeout=10
            )
            yield response.content()
        except Exception as e:
            log.error("SMS gateway {url} failed: {error}", url=self._url, error=e)
            raise Unavailable("the SMS gateway is unreachable") from None
        if not 200 <= response.code < 300:
            log.error("SMS gateway {url} answered {code}", url=self._url, code=response.code)
            raise Unavailable("the SMS gateway refused the message")


class NoGateway:
    """``mode = "off"``: no codes are sent, so none can be checked."""

    def send(self, telephone: str, code: str) -> "Deferred[None]":
        raise Unavailable("this server sends no SMS codes")


def gateway_for(mode: str, url: str = ""):
    if mode == "log":
        return LogGateway()
    if mode == "http":
        if not url:
            raise ValueError("sms.url must be set for sms.mode = \"http\"")
        return HttpGateway(url)
    return NoGateway()
