"""Domain errors of the gateway, each carrying its kind: an `ErrorCode`, named after the gRPC status it is sent as.

Hierarchy (all derive from GatewayError; the servers translate them at one boundary,
`aigw_server.runtime.rpc_errors`, into gRPC statuses with rich details, and errors of other services back
into these with the same table):

    GatewayError
    ├── InvalidArgument          INVALID_ARGUMENT   bad input; nothing was changed
    │   └── PayloadTooLarge      INVALID_ARGUMENT   a document over the size limit (ErrorInfo PAYLOAD_TOO_LARGE: HTTP 413)
    ├── Unauthenticated          UNAUTHENTICATED    missing, malformed or rejected credential
    ├── PermissionDenied         PERMISSION_DENIED  credential valid, role or client not allowed
    ├── NotFound                 NOT_FOUND          unknown request id, model, user, key
    ├── AlreadyExists            ALREADY_EXISTS     name taken
    ├── Aborted                  ABORTED            optimistic concurrency conflict (stale version)
    ├── FailedPrecondition       FAILED_PRECONDITION  state does not allow it (e.g. lease not held)
    ├── ResourceExhausted        RESOURCE_EXHAUSTED queue full or rate limited; carries retry_after
    ├── Unavailable              UNAVAILABLE        no healthy backend / dependency down; retryable
    ├── DeadlineExceeded         DEADLINE_EXCEEDED  the job's deadline passed
    ├── Cancelled                CANCELLED          the job was cancelled
    └── Unimplemented            UNIMPLEMENTED      not built (yet) in this service

Unexpected exceptions are logged with their stack and answered with a generic INTERNAL.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class ErrorCode(StrEnum):
    """The kinds of domain error, each named after the gRPC status code it is sent as.

    Domain code does not import grpc; `aigw_server.runtime.rpc_errors` maps every member to its
    `grpc.StatusCode` when it is imported, so a name gRPC does not have fails at start, and a misspelt
    member fails the type check. Members compare equal to their names ("NOT_FOUND"), as stored job errors spell them.
    """

    UNKNOWN = "UNKNOWN"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    ABORTED = "ABORTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"
    UNIMPLEMENTED = "UNIMPLEMENTED"


class GatewayError(Exception):
    """Base of domain errors; `code` is the error's kind, `message` is safe to show."""

    code: ClassVar[ErrorCode] = ErrorCode.UNKNOWN
    # An ErrorInfo reason (google.rpc.ErrorInfo) for clients and the edge to tell this error apart; "" for none.
    reason = ""

    def __init__(self, message: str, *, retry_after: float | None = None, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.field = field


class InvalidArgument(GatewayError):
    """Bad input; nothing was changed."""

    code = ErrorCode.INVALID_ARGUMENT


class PayloadTooLarge(InvalidArgument):
    """A document over the configured size limit, whatever its encoding; REST answers 413."""

    reason = "PAYLOAD_TOO_LARGE"


class Unauthenticated(GatewayError):
    """Missing, malformed or rejected credential."""

    code = ErrorCode.UNAUTHENTICATED


class PermissionDenied(GatewayError):
    """Valid credential, but the role or client is not allowed."""

    code = ErrorCode.PERMISSION_DENIED


class NotFound(GatewayError):
    """The named thing does not exist."""

    code = ErrorCode.NOT_FOUND


def request_not_found(request_id: str) -> NotFound:
    """The one answer for a request id that is unknown, expired or someone else's: existence does not leak."""
    return NotFound(f"request {request_id[:128]} not found (unknown, or older than the retention period)")


class AlreadyExists(GatewayError):
    """The name is taken."""

    code = ErrorCode.ALREADY_EXISTS


class Aborted(GatewayError):
    """A concurrent change won (stale version)."""

    code = ErrorCode.ABORTED


class FailedPrecondition(GatewayError):
    """The current state does not allow the operation."""

    code = ErrorCode.FAILED_PRECONDITION


class ResourceExhausted(GatewayError):
    """Queue full or rate limited; `retry_after` says when to try again."""

    code = ErrorCode.RESOURCE_EXHAUSTED


class Unavailable(GatewayError):
    """A dependency or backend is down; the call may be retried."""

    code = ErrorCode.UNAVAILABLE


class DeadlineExceeded(GatewayError):
    """The deadline passed."""

    code = ErrorCode.DEADLINE_EXCEEDED


class Cancelled(GatewayError):
    """Cancelled by its owner or an operator."""

    code = ErrorCode.CANCELLED


class Unimplemented(GatewayError):
    """Not built in this service."""

    code = ErrorCode.UNIMPLEMENTED
