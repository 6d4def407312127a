"""Errors the aigw client raises, and the one place gRPC errors become them (hierarchy in `aigw_client.client`)."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


class AigwError(Exception):
    """A call to the gateway failed; `code` is the gRPC status name, `message` the gateway's own words."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str = "UNKNOWN",
        retry_after: float | None = None,
        field_violations: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retry_after = retry_after
        self.field_violations = field_violations

    def __str__(self) -> str:
        if self.retry_after is not None:
            return f"{self.message} (retry after {self.retry_after:g} s)"
        return self.message


class InvalidRequest(AigwError):
    """The gateway rejected the request as it is (bad field, wrong state); nothing was changed."""


class AuthError(AigwError):
    """No credential, or the gateway rejected it (expired, revoked, malformed)."""


class PermissionDenied(AuthError):
    """The credential is valid but its role or client id does not allow the call."""


class NotFound(AigwError):
    """The request id, model, user or key does not exist."""


class Conflict(AigwError):
    """A name is taken, or a concurrent change won (stale version)."""


class RateLimited(AigwError):
    """Rate limited or the model's queue is full; `retry_after` says when to try again."""

    retryable = True


class Unavailable(AigwError):
    """The gateway or a backend behind it is unreachable or down; retrying later may work."""

    retryable = True


class DeadlineExceeded(AigwError):
    """The request's deadline passed before it finished."""


class Cancelled(AigwError):
    """The request was cancelled."""


_BY_CODE: dict[grpc.StatusCode, type[AigwError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidRequest,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequest,
    grpc.StatusCode.UNAUTHENTICATED: AuthError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
}


def _rich_status(exc: grpc.RpcError) -> status_pb2.Status | None:
    try:
        # grpc_status types `from_call` for grpc.Call; every failed call (sync or aio) answers the methods it reads.
        status: status_pb2.Status | None = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except (ValueError, AttributeError):
        return None
    return status


def _details(exc: grpc.RpcError) -> tuple[float | None, tuple[tuple[str, str], ...]]:
    status = _rich_status(exc)
    retry_after: float | None = None
    violations: list[tuple[str, str]] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            retry_after = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [(v.field, v.description) for v in bad.field_violations]
    return retry_after, tuple(violations)


def error_from_rpc(exc: grpc.RpcError, address: str = "") -> AigwError:
    """The client error a failed gRPC call stands for, with RetryInfo and BadRequest details."""
    code: grpc.StatusCode = exc.code()
    message: str = exc.details() or code.name
    if code == grpc.StatusCode.UNAVAILABLE and address and "connect" in message.lower():
        message = f"cannot reach the gateway at {address}: {message}"
    if code == grpc.StatusCode.UNIMPLEMENTED and address:
        message = f"{address} does not serve this call ({message}); check the router/admin addresses"
    retry_after, violations = _details(exc)
    cls = _BY_CODE.get(code, AigwError)
    return cls(message, code=code.name, retry_after=retry_after, field_violations=violations)
