# -*- test-case-name: tests.test_websocket,tests.test_web_admin -*-
"""
Which web pages may act on this server from a browser: a page of the
server's own origin, or of one listed in C{web.origins}.  A browser names
the page's origin in C{Origin} on every WebSocket handshake and every
cross-site request, and a page cannot forge it, so refusing a foreign one
stops another site from using a visitor's session (cross-site WebSocket
hijacking, CSRF).
"""

from __future__ import annotations

from typing import Iterable

from twisted.web.iweb import IRequest

from imd.errors import Forbidden


def own_origin(request: IRequest) -> str:
    """The origin of the page this request's C{Host} serves."""
    host = (request.getHeader(b"host") or b"").decode("latin-1").strip()
    scheme = "https" if request.isSecure() else "http"
    return f"{scheme}://{host}"


def check_origin(request: IRequest, allowed: Iterable[str], required: bool = False) -> None:
    """
    Refuse (L{Forbidden}) a request sent by a page of a foreign origin;
    with C{required}, also one that names none (a browser names it on
    every POST, so only a non-browser client omits it).
    """
    origin = request.getHeader(b"origin")
    if origin is None:
        if required:
            raise Forbidden("an Origin header is required")
        return
    origin_text = origin.decode("latin-1").strip().rstrip("/")
    if origin_text == own_origin(request) or origin_text in allowed:
        return
    raise Forbidden(f"pages of {origin_text or 'an opaque origin'} may not use this server")
