# -*- test-case-name: tests.test_web -*-
"""
The HTTP listener: one Klein app per API family, each behind its own error
edge, and the root that hands every request to the family owning its path.

Each family answers errors in its own wire form (imd's JSON, the seeds'
plain text, the method API's ``0000`` replies), so one form for the whole
listener would be wrong for all but one of them; as in Synapse's
C{DirectServeJsonResource} and C{DirectServeHtmlResource}, the form belongs
to the family and the mapping from L{imd.errors} is written once, here.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence
from urllib.parse import unquote_to_bytes

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from werkzeug.exceptions import HTTPException

from imd.errors import BadRequest, IMError, MethodNotAllowed, NotFound

log = Logger()

# A family's error form: the body of the answer, its status and headers set
# on the request.
Renderer = Callable[[IRequest, IMError], bytes]


def _method(request: IRequest) -> str:
    return request.method.decode("ascii", "replace")


def _path(request: IRequest) -> str:
    return request.path.decode("utf-8", "replace")


class Family:
    """
    One HTTP API: a Klein app on which the family mounts its routes, whose
    every error (typed, routing or unexpected) leaves through C{render},
    counted once under the family's C{name}.

    A family owns the paths its routes match and every path under one of
    its C{prefixes}, so a wrong path or method there is answered in its
    form; unexpected failures are answered C{internal_message}.
    """

    def __init__(
        self,
        name: str,
        metrics: Any,
        render: Renderer,
        prefixes: Iterable[str] = (),
        internal_message: str = "internal server error",
        body_limit: Callable[[str], int] | None = None,
    ) -> None:
        self.name = name
        self.prefixes = tuple(prefixes)
        # The largest body each of its paths takes (None: the site's default).
        self.body_limit = body_limit
        self.app = Klein()
        self.resource = self.app.resource()
        self._errors = metrics.errors
        self._render = render
        self._internal_message = internal_message
        self.app.handle_errors(IMError)(self._typed)
        self.app.handle_errors(HTTPException)(self._routing)
        self.app.handle_errors(Exception)(self._unexpected)

    def answer(self, request: IRequest, error: IMError) -> bytes:
        """The family's answer to C{error}: the one place HTTP errors are counted."""
        self._errors.labels(self.name, error.code).inc()
        return self._render(request, error)

    def routes_match(self, path: str, method: str | None = None) -> bool:
        """Whether one of the family's routes takes C{path}, with C{method} (None: any)."""
        allowed = self.app.url_map.bind("localhost").allowed_methods(path)
        return bool(allowed) and (method is None or method in allowed)

    def route_of(self, path: str, method: bytes) -> str:
        """
        The pattern of the route that takes C{method} C{path} (a bounded
        metrics label, unlike the path), or C{<family>:unmatched}.
        """
        try:
            rule, _ = self.app.url_map.bind("localhost").match(
                path, method=method.decode("ascii", "replace"), return_rule=True
            )
        except HTTPException:
            return f"{self.name}:unmatched"
        return rule.rule

    def _typed(self, request: IRequest, failure: Failure) -> bytes:
        return self.answer(request, failure.value)

    def _routing(self, request: IRequest, failure: Failure) -> bytes:
        e = failure.value
        if e.code == 404:
            error: IMError = NotFound(f"no such path: {_path(request)}")
        elif e.code == 405:
            error = MethodNotAllowed(f"{_method(request)} is not allowed on {_path(request)}")
        else:
            error = BadRequest(e.description or e.name)
        return self.answer(request, error)

    def _unexpected(self, request: IRequest, failure: Failure) -> bytes:
        log.failure(
            "HTTP {method} {path} ({family})",
            failure,
            method=_method(request),
            path=_path(request),
            family=self.name,
        )
        return self.answer(request, IMError(self._internal_message))


class _Unfinished:
    """
    What a family's renderer sets on a request, kept for a request that
    is answered before it arrived whole (and so is no twisted.web request).
    """

    def __init__(self, method: bytes, path: bytes) -> None:
        self.method = method
        self.path = path
        self.code = 200
        self.headers: dict[bytes, bytes] = {}

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        self.code = code

    def setHeader(self, name: bytes | str, value: bytes | str) -> None:
        self.headers[name.encode() if isinstance(name, str) else name] = value.encode() if isinstance(value, str) else value

    def getHeader(self, name: bytes) -> None:
        return None


class Root(Resource):
    """
    The site's root: it hands each request to the family that owns its
    path, and any path no family claims to C{fallback}.  Routes keep their
    full paths, so each family's app sees the request as the site received
    it.  A route beats a prefix: a family's exact route under another's
    prefix stays where it was when every route shared one app.  A route
    that takes the request's method beats one that does not (C{GET /} is
    the web client's page, C{POST /} the method API's).
    """

    isLeaf = True

    def __init__(self, families: Sequence[Family], fallback: Family, requests: Any = None) -> None:
        super().__init__()
        self._families = list(families)
        self._fallback = fallback
        # A counter labelled (route, status), or None.
        self._requests = requests

    def _count(self, route: str, request: Any) -> None:
        if self._requests is not None:
            self._requests.labels(route, str(request.code)).inc()

    def family_for(self, path: str, method: str | None = None) -> Family:
        if method is not None:
            for family in self._families:
                if family.routes_match(path, method):
                    return family
        for family in self._families:
            if family.routes_match(path):
                return family
        for family in self._families:
            if path.startswith(family.prefixes):
                return family
        return self._fallback

    def body_limit(self, target: bytes, default: int) -> int:
        """
        The largest body the route of C{target} (a request line's target)
        takes: a bigger one is refused as it arrives, chunked or not.
        """
        try:
            path = unquote_to_bytes(target.partition(b"?")[0]).decode("utf-8")
        except UnicodeDecodeError:
            return default
        family = self.family_for(path)
        return default if family.body_limit is None else family.body_limit(path)

    def refusal(self, method: bytes, target: bytes, error: IMError) -> tuple[int, dict[bytes, bytes], bytes]:
        """
        The answer to a request refused before its body arrived whole
        (status, headers, body), in the form of the family its path belongs to.
        """
        raw_path = target.partition(b"?")[0]
        try:
            family = self.family_for(unquote_to_bytes(raw_path).decode("utf-8"), method.decode("ascii", "replace"))
        except UnicodeDecodeError:
            family = self._fallback
        unfinished = _Unfinished(method, raw_path)
        body = family.answer(unfinished, error)
        self._count(f"{family.name}:refused", unfinished)
        return unfinished.code, unfinished.headers, body

    def render(self, request: IRequest):
        try:
            path = unquote_to_bytes(request.path).decode("utf-8")
        except UnicodeDecodeError:
            # Klein would answer this with an HTML error of its own.
            body = self._fallback.answer(request, BadRequest("the path is not UTF-8"))
            self._count(f"{self._fallback.name}:unmatched", request)
            return body
        family = self.family_for(path, _method(request))
        if self._requests is not None:
            route = family.route_of(path, request.method)
            # Counted when the answer is complete, with its final status.
            request.notifyFinish().addBoth(lambda _: self._count(route, request))
        return family.resource.render(request)
