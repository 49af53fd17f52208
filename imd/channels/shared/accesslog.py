# -*- test-case-name: tests.test_accesslog -*-
"""
The HTTP access log, without secrets.

Some clients put secrets in the URL: seed 001's file server takes its
C{token} in the query string, and seed 004's method API its whole AES
C{request=} form, which decrypts with the well-known default key to the
password.  The access log keeps the rest of the line (Twisted's combined
format) and writes each such value as C{<redacted>}.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote_plus

from twisted.web.http import combinedLogFormatter
from twisted.web.iweb import IAccessLogFormatter
from zope.interface import provider

# Query parameters whose values are never written, compared in lower case.
SECRET_PARAMETERS = frozenset(("token", "access_token", "request", "password", "pwd", "sms_code", "secret", "appsecret"))
REDACTED = "<redacted>"


def redact(uri: bytes) -> bytes:
    """C{uri} with the value of every secret query parameter replaced."""
    path, question, query = uri.partition(b"?")
    if not question:
        return uri
    pairs = []
    for raw in query.split(b"&"):
        name, equals, _ = raw.partition(b"=")
        if equals and unquote_plus(name.decode("latin-1")).lower() in SECRET_PARAMETERS:
            raw = name + b"=" + quote(REDACTED).encode()
        pairs.append(raw)
    return path + b"?" + b"&".join(pairs)


class _Redacted:
    """A request as the formatter reads it, with secrets taken out of its URI and referrer."""

    def __init__(self, request: Any) -> None:
        self._request = request
        self.uri = redact(request.uri)

    def getHeader(self, name: bytes) -> bytes | None:
        value = self._request.getHeader(name)
        if value is not None and name.lower() == b"referer":
            return redact(value)
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


@provider(IAccessLogFormatter)
def access_log_line(timestamp: str, request: Any) -> str:
    return combinedLogFormatter(timestamp, _Redacted(request))
