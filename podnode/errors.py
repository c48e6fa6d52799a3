"""The few error kinds POD reports. The HTTP layer maps each kind to a status code in one place."""

from __future__ import annotations


class PodError(Exception):
    """An error a client can act on. `kind` names the class of failure, the message says what to do."""

    kind = "internal"

    def __init__(self, message: str, *, retry_after_s: float | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class BadRequest(PodError):
    kind = "bad_request"


class Unauthorized(PodError):
    """The request lacks a valid credential (a peer request without a valid proof of the cluster secret)."""
    kind = "unauthorized"


class Forbidden(PodError):
    """The request's credential is valid but its scope does not allow the action, or it comes from another site."""
    kind = "forbidden"


class TooMany(PodError):
    """A quota is full (waiting executions, activities, unread result bytes): try again after retry_after_s."""
    kind = "too_many"


class NotFound(PodError):
    kind = "not_found"


class Conflict(PodError):
    kind = "conflict"


class TooLarge(PodError):
    kind = "too_large"


class UriTooLong(PodError):
    """The request line (the URL) is over the HTTP server's limit."""
    kind = "uri_too_long"


class HeadersTooLarge(PodError):
    """A request header is over the HTTP server's limit."""
    kind = "headers_too_large"


class Unavailable(PodError):
    kind = "unavailable"


KINDS: dict[str, type[PodError]] = {
    cls.kind: cls for cls in (BadRequest, Forbidden, NotFound, Conflict, TooLarge, TooMany, Unavailable)
}


def from_result(result: dict) -> PodError:
    """Turn a refusal recorded by the state machine ({"error": kind, "message": ...}) into an exception."""
    cls = KINDS.get(result.get("error", ""), PodError)
    retry = result.get("retryAfterS")
    return cls(result.get("message", "refused"),
               retry_after_s=float(retry) if isinstance(retry, (int, float)) else None)


class IncompatibleDependency(RuntimeError):
    """A library POD builds on lacks something POD relies on: the node refuses to start (not an HTTP error)."""
