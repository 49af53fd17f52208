# -*- test-case-name: tests.test_http -*-
"""
The Klein application on the HTTP listener.

Every HTTP API mounts its routes on the one app :func:`make_app` builds,
so every route shares the JSON error form: a typed error becomes its
status and code, an unknown path a JSON 404, and anything unexpected a
logged 500 without a stack trace on the wire.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from klein import Klein
from twisted.logger import Logger
from twisted.web.resource import Resource
from werkzeug.exceptions import HTTPException

from imd.errors import IMError
from imd.channels.shared.httpjson import error_body, write_error, write_json

log = Logger()


def make_app(server: Any, installs: list) -> Klein:
    app = Klein()

    @app.handle_errors(IMError)
    def typed_error(request, failure):
        server.metrics.errors.labels("http", failure.value.code).inc()
        return write_error(request, failure.value)

    @app.handle_errors(HTTPException)
    def routing_error(request, failure):
        e = failure.value
        code = "not_found" if e.code == 404 else "method_not_allowed" if e.code == 405 else "bad_request"
        server.metrics.errors.labels("http", code).inc()
        path = request.path.decode("utf-8", "replace")
        message = {
            404: f"no such path: {path}",
            405: f"{request.method.decode('ascii', 'replace')} is not allowed on {path}",
        }.get(e.code, e.description or e.name)
        return write_json(request, error_body(code, message), e.code)

    @app.handle_errors(Exception)
    def unexpected(request, failure):
        log.failure("HTTP {method} {path}", failure, method=request.method, path=request.path)
        server.metrics.errors.labels("http", "internal_error").inc()
        return write_json(request, error_body("internal_error", "internal server error"), 500)

    for install in installs:
        install(app, server)
    return app


class JsonRoot(Resource):
    """
    The site's root: Klein, behind a check that the path is UTF-8, which
    Klein would otherwise answer with an HTML error of its own.
    """

    isLeaf = True

    def __init__(self, app: Klein) -> None:
        super().__init__()
        self._klein = app.resource()

    def render(self, request):
        try:
            unquote_to_bytes(request.path).decode("utf-8")
        except UnicodeDecodeError:
            return write_json(request, error_body("bad_request", "the path is not UTF-8"), 400)
        return self._klein.render(request)
