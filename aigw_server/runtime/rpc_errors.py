"""The one boundary where domain errors become gRPC statuses (with RetryInfo / BadRequest details), and back.

`STATUS_CODES` and `ERRORS_BY_STATUS` are the server side's only table of error kinds and gRPC codes: the
interceptors send a domain error with its kind's code, and every client of an internal service raises a
downstream error again as the domain error of its code. `retry_delay` is its only RetryInfo reader.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from aigw_server.runtime import errors
from aigw_server.runtime.errors import ErrorCode, GatewayError
from aigw_server.runtime.logs import request_id_var

log = logging.getLogger(__name__)

ERROR_DOMAIN = "aigw"
REQUEST_ID_KEY = "x-request-id"
INTERNAL_MESSAGE = "internal error; the request id identifies it in the gateway's logs"
DOWNSTREAM_FAILED_MESSAGE = "a gateway service failed; try again"

# Every error kind's gRPC code; built at import, so a kind gRPC has no code for stops the service at start.
STATUS_CODES: dict[ErrorCode, grpc.StatusCode] = {code: grpc.StatusCode[code.value] for code in ErrorCode}

# The domain error a downstream service's code stands for. A code not listed (INTERNAL, UNKNOWN, DATA_LOSS, …)
# comes back as Unavailable with a generic message: internals of the failed service do not leak.
ERRORS_BY_STATUS: dict[grpc.StatusCode, type[GatewayError]] = {
    STATUS_CODES[cls.code]: cls
    for cls in (
        errors.InvalidArgument,
        errors.Unauthenticated,
        errors.PermissionDenied,
        errors.NotFound,
        errors.AlreadyExists,
        errors.Aborted,
        errors.FailedPrecondition,
        errors.ResourceExhausted,
        errors.Unavailable,
        errors.DeadlineExceeded,
        errors.Cancelled,
        errors.Unimplemented,
    )
}

_STATUS_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def to_status(err: GatewayError) -> grpc.Status:
    """Builds a rich gRPC status from a domain error."""
    return rpc_status.to_status(status_proto(err))


def status_proto(err: GatewayError) -> status_pb2.Status:
    """A domain error as a google.rpc.Status message (what `to_status` sends; a stream carries it as a field)."""
    number: int = STATUS_CODES[err.code].value[0]
    status = status_pb2.Status(code=number, message=err.message)
    if err.retry_after is not None:
        seconds = max(0.0, err.retry_after)
        delay = duration_pb2.Duration(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    if err.field and err.code is ErrorCode.INVALID_ARGUMENT:
        bad = error_details_pb2.BadRequest()
        bad.field_violations.add(field=err.field, description=err.message)
        status.details.add().Pack(bad)
    if err.reason:
        status.details.add().Pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=ERROR_DOMAIN))
    return status


def request_id_metadata() -> tuple[tuple[str, str], ...]:
    """`x-request-id` with the id the call is logged under, for an error's trailing metadata.

    Once the router has made a request's id, that id; before, the caller's `x-request-id` (or the one the
    call was given). Empty when the id is not a valid metadata value (printable ASCII), which only a
    caller's own can fail to be.
    """
    rid = request_id_var.get()
    return ((REQUEST_ID_KEY, rid),) if rid and rid.isascii() and rid.isprintable() else ()


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
    code = _STATUS_CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    return _domain_error(code, status.message or code.name, retry_delay(status))


def _domain_error(code: grpc.StatusCode, message: str, retry_after: float | None) -> GatewayError:
    cls = ERRORS_BY_STATUS.get(code)
    if cls is None:
        return errors.Unavailable(DOWNSTREAM_FAILED_MESSAGE, retry_after=retry_after)
    return cls(message, retry_after=retry_after)


def retry_after_of(exc: grpc.aio.AioRpcError) -> float | None:
    """The RetryInfo delay carried by an error, if any."""
    # grpc_status types `from_call` for a sync grpc.Call; an aio error answers the same two methods it reads.
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    return None if status is None else retry_delay(status)


def retry_delay(status: status_pb2.Status) -> float | None:
    """The delay in seconds of a status's RetryInfo detail, None when it has none."""
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None
