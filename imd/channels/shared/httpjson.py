# -*- test-case-name: tests.test_http -*-
"""What every JSON route needs: bodies in, answers and errors out, tokens."""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest

from imd.channels.shared.jsonobj import parse_object
from imd.errors import IMError, TooLarge, Unauthenticated


def write_json(request: IRequest, obj: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def error_body(code: str, message: str) -> dict:
    """imd's JSON error form: C{type} tells a client it got an error, C{code} what kind."""
    return {"type": "error", "code": code, "err": message}


def write_error(request: IRequest, error: IMError) -> bytes:
    return write_json(request, error_body(error.code, error.message), error.status)


def read_body(request: IRequest, max_body: int) -> bytes:
    """The request body, refused past C{max_body} bytes."""
    length = request.getHeader(b"content-length")
    if length is not None and length.isdigit() and int(length) > max_body:
        raise TooLarge(f"the body is larger than {max_body} bytes")
    raw = request.content.read(max_body + 1)
    if len(raw) > max_body:
        raise TooLarge(f"the body is larger than {max_body} bytes")
    return raw


def read_json(request: IRequest, max_body: int) -> dict:
    """The request body as a JSON object; an empty body is C{{}}."""
    return parse_object(read_body(request, max_body))


def client_address(request: IRequest) -> str | None:
    """The client's IP address, for limits per address (None: not IP)."""
    return getattr(request.getClientAddress(), "host", None)


def bearer_token(request: IRequest) -> str:
    header = request.getHeader(b"authorization")
    if header is None:
        raise Unauthenticated("an Authorization: Bearer <token> header is required")
    scheme, _, token = header.decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be Bearer <token>")
    return token.strip()
