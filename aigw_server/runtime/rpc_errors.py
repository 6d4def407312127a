"""The one boundary where domain errors become gRPC statuses (with RetryInfo / BadRequest details)."""

from __future__ import annotations

import logging

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from aigw_server.runtime.errors import GatewayError

log = logging.getLogger(__name__)

ERROR_DOMAIN = "aigw"
INTERNAL_MESSAGE = "internal error; the request id identifies it in the gateway's logs"


def to_status(err: GatewayError) -> grpc.Status:
    """Builds a rich gRPC status from a domain error."""
    return rpc_status.to_status(status_proto(err))


def status_proto(err: GatewayError) -> status_pb2.Status:
    """A domain error as a google.rpc.Status message (what `to_status` sends; a stream carries it as a field)."""
    code = getattr(code_pb2, err.code, code_pb2.UNKNOWN)
    status = status_pb2.Status(code=code, message=err.message)
    if err.retry_after is not None:
        seconds = max(0.0, err.retry_after)
        delay = duration_pb2.Duration(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    if err.field and err.code == "INVALID_ARGUMENT":
        bad = error_details_pb2.BadRequest()
        bad.field_violations.add(field=err.field, description=err.message)
        status.details.add().Pack(bad)
    if err.reason:
        status.details.add().Pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=ERROR_DOMAIN))
    return status


def internal_status() -> grpc.Status:
    """The generic answer to an unexpected exception: no internals leak."""
    return rpc_status.to_status(internal_status_proto())


def internal_status_proto() -> status_pb2.Status:
    """`internal_status` as a google.rpc.Status message."""
    return status_pb2.Status(code=code_pb2.INTERNAL, message=INTERNAL_MESSAGE)


def from_rpc_error(exc: grpc.aio.AioRpcError) -> GatewayError:
    """Turns a downstream service's error back into the domain error it stands for."""
    return _domain_error(exc.code(), exc.details() or exc.code().name, retry_after_of(exc))


def from_status_proto(status: status_pb2.Status) -> GatewayError:
    """Turns a google.rpc.Status carried in a message back into the domain error, as `from_rpc_error` does."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    return _domain_error(code, status.message or code.name, _retry_after(status))


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _domain_error(code: grpc.StatusCode, message: str, retry_after: float | None) -> GatewayError:
    from aigw_server.runtime import errors

    by_code: dict[grpc.StatusCode, type[GatewayError]] = {
        grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
        grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
        grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
        grpc.StatusCode.NOT_FOUND: errors.NotFound,
        grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
        grpc.StatusCode.ABORTED: errors.Aborted,
        grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
        grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
        grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
        grpc.StatusCode.CANCELLED: errors.Cancelled,
        grpc.StatusCode.UNIMPLEMENTED: errors.Unimplemented,
    }
    cls = by_code.get(code, errors.Unavailable)
    if cls is errors.Unavailable and code != grpc.StatusCode.UNAVAILABLE:
        message = "a gateway service failed; try again"
    return cls(message, retry_after=retry_after)


def retry_after_of(exc: grpc.aio.AioRpcError) -> float | None:
    """The RetryInfo delay carried by an error, if any."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    return None if status is None else _retry_after(status)


def _retry_after(status: status_pb2.Status) -> float | None:
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None
