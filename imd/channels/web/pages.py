# -*- test-case-name: tests.test_web_admin -*-
"""
The static files of the web chat (``/``) and the admin console
(``/admin/``), shipped in the package and read once: no build step, and
nothing on disk a request could name.  Every page is sent with headers
that keep it from being framed or fed another site's script.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from twisted.web.iweb import IRequest

from imd.errors import NotFound

CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".png": b"image/png",
}
# Scripts and styles only from this server; connections to it (fetch and
# its WebSocket); images also from blob: (a picture being sent).
POLICY = (
    b"default-src 'self'; img-src 'self' blob: data:; connect-src 'self' ws: wss:; "
    b"style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def load() -> dict[str, tuple[bytes, bytes]]:
    """Every shipped file by name: (content type, bytes)."""
    out = {}
    for entry in files("imd.channels.web").joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if suffix in CONTENT_TYPES:
            out[entry.name] = (CONTENT_TYPES[suffix], entry.read_bytes())
    return out


def serve(request: IRequest, pages: dict[str, tuple[bytes, bytes]], name: str) -> Any:
    try:
        content_type, body = pages[name]
    except KeyError:
        raise NotFound(f"no such file: {name}") from None
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Cache-Control", b"no-cache")
    request.setHeader(b"Content-Security-Policy", POLICY)
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"X-Frame-Options", b"DENY")
    request.setHeader(b"Referrer-Policy", b"same-origin")
    return body
