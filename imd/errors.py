"""
Typed errors raised by the core services.

Every channel maps these to its own wire form: HTTP uses C{status} and
C{code}; the long connection puts C{message} in an ack's ``err``; the
method API answers ``0000`` with it as ``info``.  C{code} is a stable
snake_case name clients may switch on; C{message} is for people.
"""

from __future__ import annotations


class IMError(Exception):
    code = "internal_error"
    status = 500

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__.strip().rstrip("."))

    @property
    def message(self) -> str:
        return self.args[0]


class BadRequest(IMError):
    """The request is malformed."""

    code = "bad_request"
    status = 400


class InvalidField(BadRequest):
    """A field has an invalid value."""

    code = "invalid_field"


class Unauthenticated(IMError):
    """Authentication is required."""

    code = "unauthenticated"
    status = 401


class BadCredentials(Unauthenticated):
    """Wrong user id or password."""

    code = "bad_credentials"


class BadSmsCode(Unauthenticated):
    """Wrong or expired SMS code."""

    code = "bad_sms_code"


class InvalidToken(Unauthenticated):
    """The token is unknown, expired or revoked."""

    code = "invalid_token"


class Forbidden(IMError):
    """Not allowed."""

    code = "forbidden"
    status = 403


class NotFound(IMError):
    """Not found."""

    code = "not_found"
    status = 404


class UnknownUser(NotFound):
    """A request names a user who does not exist."""

    code = "unknown_user"


class TooLate(Forbidden):
    """The time to do this has passed (a recall after its window)."""

    # Still "forbidden" on the wires that had it; a family may tell it apart by type.


class MethodNotAllowed(IMError):
    """The path does not take this method."""

    code = "method_not_allowed"
    status = 405


class Conflict(IMError):
    """Already exists."""

    code = "conflict"
    status = 409


class TooLarge(IMError):
    """The request is too large."""

    code = "too_large"
    status = 413


class RateLimited(IMError):
    """Too many requests; try again later."""

    code = "rate_limited"
    status = 429


class Unavailable(IMError):
    """A service imd depends on is unavailable."""

    code = "unavailable"
    status = 503


class BadSignature(Unauthenticated):
    """The request's sign does not match its data."""

    code = "bad_sign"


class StaleRequest(Unauthenticated):
    """The request's _t is too far from the server's clock."""

    code = "stale_request"


class ReplayedRequest(Unauthenticated):
    """This request (its sign) was already received."""

    code = "replayed_request"
