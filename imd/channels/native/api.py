# -*- test-case-name: tests.test_http,tests.test_web -*-
"""
imd's own JSON API as one HTTP family: ``/auth/…``, ``/healthz`` and
``/metrics``, answering errors in imd's JSON form (``{"type": "error",
"code", "err"}``).  It is also the server's fallback, so a path no API
claims gets that JSON 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imd.channels.native import auth, ops
from imd.channels.shared.httpjson import write_error
from imd.channels.shared.web import Family

if TYPE_CHECKING:
    from imd.server import Server


def make_app(server: "Server") -> Family:
    family = Family("native", server.metrics, write_error)
    ops.install(family.app, server)
    auth.install(family.app, server)
    return family
