# -*- test-case-name: tests.test_serverapi -*-
"""
A small client of the server API, as a business server calls it: each
call signed with a fresh Nonce and the current CurTime.  It loads nothing
of the server.

    client = ServerApiClient("http://127.0.0.1:8080", app_key, app_secret)
    code, reply = yield client.call("user/create", accid="buyer1", name="Buyer")
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import treq
from twisted.internet.defer import inlineCallbacks


def sign(secret: str, nonce: str, curtime: str) -> str:
    """CheckSum = sha1(AppSecret + Nonce + CurTime), lower-case hex."""
    return hashlib.sha1((secret + nonce + curtime).encode("utf-8")).hexdigest()


class ServerApiClient:
    def __init__(self, base: str, app_key: str, secret: str) -> None:
        self.base = base.rstrip("/")
        self.app_key = app_key
        self.secret = secret

    def headers(self, nonce: str | None = None, curtime: str | None = None, checksum: str | None = None) -> dict[str, str]:
        nonce = uuid.uuid4().hex if nonce is None else nonce
        curtime = str(int(time.time())) if curtime is None else curtime
        return {
            "AppKey": self.app_key,
            "Nonce": nonce,
            "CurTime": curtime,
            "CheckSum": sign(self.secret, nonce, curtime) if checksum is None else checksum,
            "Content-Type": "application/x-www-form-urlencoded;charset=utf-8",
        }

    @inlineCallbacks
    def call(self, path: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
             body: bytes | None = None, **kwargs: Any):
        """
        POST C{path} (``user/create``) with C{params} and C{kwargs} as the
        form (or the raw C{body}): (HTTP status, the JSON reply).
        C{headers} replace the signed ones (to send a bad one).
        """
        form = dict(params or {}, **kwargs)
        sent = self.headers()
        sent.update(headers or {})
        data = body if body is not None else urlencode({k: str(v) for k, v in form.items()}).encode("utf-8")
        response = yield treq.post(
            f"{self.base}/nimserver/{path}.action",
            data=data,
            headers={k: [v] for k, v in sent.items() if v is not None},
            persistent=False,
            timeout=30,
        )
        content = yield treq.content(response)
        try:
            reply = json.loads(content)
        except ValueError:
            reply = content
        return response.code, reply
