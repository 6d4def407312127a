"""Errors as Envoy's transcoder returns them: google.rpc.Status JSON, the gRPC→HTTP status map, Retry-After."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field

import orjson
from google.protobuf import any_pb2, json_format
from google.protobuf.descriptor_pool import DescriptorPool
from google.rpc import code_pb2, error_details_pb2, status_pb2

from aigw_server.runtime.rpc_errors import retry_delay

# Envoy's Grpc::Utility::grpcToHttpStatus.
HTTP_STATUS: dict[int, int] = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
    code_pb2.UNAUTHENTICATED: 401,
}

# google.rpc.ErrorInfo reasons with an HTTP status of their own (the gRPC code alone has none for them).
HTTP_STATUS_BY_REASON = {"PAYLOAD_TOO_LARGE": 413}

# Codes whose message may carry internals when no service built the status (transport or crash text).
OPAQUE_CODES = frozenset({code_pb2.UNKNOWN, code_pb2.INTERNAL, code_pb2.UNAVAILABLE, code_pb2.DATA_LOSS})
OPAQUE_MESSAGES = {
    code_pb2.UNAVAILABLE: "the service is unavailable; try again",
    code_pb2.UNKNOWN: "the service failed; try again",
    code_pb2.INTERNAL: "the service failed; try again",
    code_pb2.DATA_LOSS: "the service failed; try again",
}


@dataclass
class ErrorReply:
    """An HTTP error answer: status, JSON body and extra headers."""

    http_status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    status: status_pb2.Status | None = None


def http_status_of(code: int) -> int:
    """The HTTP status Envoy answers for a gRPC code (500 for codes outside the standard set)."""
    return HTTP_STATUS.get(code, 500)


def status_json(status: status_pb2.Status, pool: DescriptorPool | None = None) -> bytes:
    """The Status as Envoy prints it (snake_case, primitives always printed); unknown detail types stay base64."""
    details = [_detail_json(any_msg, pool) for any_msg in status.details]
    return orjson.dumps({"code": status.code, "message": status.message, "details": details})


def _detail_json(any_msg: any_pb2.Any, pool: DescriptorPool | None) -> object:
    for candidate in (None, pool):
        try:
            return json_format.MessageToDict(
                any_msg,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
                descriptor_pool=candidate,
            )
        except (TypeError, KeyError, json_format.Error):
            continue
    return {"@type": any_msg.type_url, "value": base64.b64encode(any_msg.value).decode()}


def retry_after(status: status_pb2.Status) -> str | None:
    """Whole seconds (rounded up) of a RetryInfo detail, for the Retry-After header."""
    delay = retry_delay(status)
    return None if delay is None else str(max(0, math.ceil(delay)))


def _reason_status(status: status_pb2.Status) -> int | None:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.reason in HTTP_STATUS_BY_REASON:
                return HTTP_STATUS_BY_REASON[info.reason]
    return None


def error_reply(status: status_pb2.Status, pool: DescriptorPool | None = None) -> ErrorReply:
    """The HTTP answer for a non-OK Status, with Retry-After on 429/503 when the status says when to retry."""
    http = _reason_status(status) or http_status_of(status.code)
    reply = ErrorReply(http, status_json(status, pool), status=status)
    if http in (429, 503):
        delay = retry_after(status)
        if delay is not None:
            reply.headers.append(("retry-after", delay))
    return reply


def local_error(code: int, message: str, http_status: int | None = None) -> ErrorReply:
    """An error the edge itself answers (bad path, bad JSON, too large); `http_status` overrides the code's mapping."""
    reply = error_reply(status_pb2.Status(code=code, message=message))
    if http_status is not None:
        reply.http_status = http_status
    return reply


# OpenAI's error `type` by HTTP status (its SDKs pick the exception class by status, tools read `type`).
OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    499: "cancelled_error",
    501: "invalid_request_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


def openai_error_json(status: status_pb2.Status, http_status: int) -> bytes:
    """The Status in OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`.

    `param` is the field a BadRequest detail names (else null); `code` is the gRPC code's name in lowercase.
    """
    param = None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            if bad.field_violations:
                param = bad.field_violations[0].field
    code = code_pb2.Code.Name(status.code).lower() if status.code in code_pb2.Code.values() else None
    kind = OPENAI_TYPES.get(http_status, "server_error" if http_status >= 500 else "invalid_request_error")
    return orjson.dumps({"error": {"message": status.message, "type": kind, "param": param, "code": code}})
