# -*- test-case-name: tests.test_webhooks -*-
"""
Message copy: an outbox row as Yunxin's webhook, ``POST`` to
``webhooks.url`` with headers AppKey, CurTime (ms), MD5 (of the body) and
``CheckSum = sha1(AppSecret + MD5 + CurTime)``, plus ``X-Imd-Event-Id``
(the outbox row's id, the same on every attempt) for de-duplication.
Only a 2xx answer counts as delivered.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import treq
from twisted.internet.defer import inlineCallbacks

from imd.channels.serverapi import serialize
from imd.channels.serverapi.checksum import body_md5, checksum
from imd.channels.shared.jsonobj import parse_object

if TYPE_CHECKING:
    from imd.server import Server


class NotDelivered(Exception):
    """The receiver did not take the webhook."""


class WebhookSender:
    def __init__(self, server: "Server") -> None:
        self._server = server
        self._config = server.config.webhooks

    @inlineCallbacks
    def _app(self):
        apps = self._server.apps
        if self._config.app_key:
            app = yield apps.get(self._config.app_key)
            if app is None:
                raise NotDelivered(f"webhooks.app_key {self._config.app_key} names no app")
            return app
        every = yield apps.list()
        if len(every) != 1:
            raise NotDelivered(f"{len(every)} apps exist: set webhooks.app_key to the one that signs")
        return every[0]

    @inlineCallbacks
    def render(self, row) -> bytes:
        """The body of C{row}'s webhook."""
        data = parse_object(row.payload, "an outbox row")
        user = yield self._server.accounts.get_user(data.get("from") or data.get("uid"))
        body = serialize.COPIES[row.kind](data, user.name if user is not None else "")
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @inlineCallbacks
    def __call__(self, row):
        app = yield self._app()
        body = yield self.render(row)
        md5 = body_md5(body)
        curtime = str(int(self._server.reactor.seconds() * 1000))
        headers = {
            b"Content-Type": [b"application/json; charset=utf-8"],
            b"AppKey": [app.app_key.encode()],
            b"CurTime": [curtime.encode()],
            b"MD5": [md5.encode()],
            b"CheckSum": [checksum(app.secret, md5, curtime).encode()],
            b"X-Imd-Event-Id": [str(row.id).encode()],
        }
        response = yield treq.post(
            self._config.url, data=body, headers=headers, timeout=self._config.timeout, persistent=False
        )
        # Read whatever it says, so the connection is done with.
        yield treq.content(response)
        if not 200 <= response.code < 300:
            raise NotDelivered(f"the receiver answered {response.code}")
