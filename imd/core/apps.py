# -*- test-case-name: tests.test_serverapi,tests.test_cli -*-
"""
Apps: the business servers allowed to call the server API, each with a
key it names itself by and a secret it signs with.  Made by an
administrator (``python -m imd app add``) or set in the config.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from twisted.internet.defer import inlineCallbacks, returnValue, succeed
from twisted.logger import Logger

from imd.errors import InvalidField, NotFound
from imd.store.apps import App

log = Logger()
NAME_RE = re.compile(r"\A[A-Za-z0-9_.@-]{1,100}\Z")


class AppService:
    def __init__(self, store: Any, configured: tuple[str, str], clock: Any) -> None:
        """C{configured}: (key, secret) of an app set in the config, or empty strings."""
        self._apps = store.apps
        self._clock = clock
        key, secret = configured
        self._configured = App(key, "(config)", secret, 0) if key and secret else None

    @inlineCallbacks
    def create(self, name: Any):
        """A new app named C{name}, with a random key and secret."""
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise InvalidField("an app name is 1-100 characters of A-Z a-z 0-9 _ . @ -")
        app = yield self._apps.add(secrets.token_hex(16), name, secrets.token_hex(16), int(self._clock.seconds() * 1000))
        log.info("app {name} created with key {key}", name=name, key=app.app_key)
        returnValue(app)

    @inlineCallbacks
    def list(self):
        apps = yield self._apps.list()
        returnValue(([self._configured] if self._configured else []) + apps)

    @inlineCallbacks
    def remove(self, name_or_key: str):
        removed = yield self._apps.remove(name_or_key)
        if not removed:
            raise NotFound(f"no app {name_or_key}")
        log.info("app {name} removed", name=name_or_key)

    def get(self, app_key: str):
        """The app whose key is C{app_key}, or None."""
        if self._configured is not None and app_key == self._configured.app_key:
            return succeed(self._configured)
        return self._apps.get(app_key)

    @inlineCallbacks
    def any(self):
        """Whether any app exists at all."""
        if self._configured is not None:
            returnValue(True)
        apps = yield self._apps.list()
        returnValue(bool(apps))
