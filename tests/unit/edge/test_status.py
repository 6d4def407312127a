"""gRPC statuses as HTTP answers: Envoy's status map, google.rpc.Status JSON, Retry-After."""

from __future__ import annotations

import orjson
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from aigw_server.edge.status import error_reply, local_error, openai_error_json

ENVOY_MAP = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


@pytest.mark.parametrize(("name", "http"), sorted(ENVOY_MAP.items()))
def test_codes_map_to_http_as_envoy_maps_them(name: str, http: int) -> None:
    code = code_pb2.Code.Value(name)
    reply = error_reply(status_pb2.Status(code=code, message="m"))
    assert reply.http_status == http
    assert orjson.loads(reply.body) == {"code": code, "message": "m", "details": []}


def test_codes_outside_the_standard_set_are_500() -> None:
    assert error_reply(status_pb2.Status(code=99, message="?")).http_status == 500


def retry_status(code: int, seconds: int, nanos: int) -> status_pb2.Status:
    status = status_pb2.Status(code=code, message="queue full")
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos)))
    return status


def test_retry_info_becomes_retry_after_rounded_up_and_stays_in_the_details() -> None:
    reply = error_reply(retry_status(code_pb2.RESOURCE_EXHAUSTED, 2, 500_000_000))
    assert reply.http_status == 429
    assert reply.headers == [("retry-after", "3")]
    assert orjson.loads(reply.body)["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retry_delay": "2.500s"}]


def test_retry_after_only_on_429_and_503() -> None:
    assert error_reply(retry_status(code_pb2.UNAVAILABLE, 1, 0)).headers == [("retry-after", "1")]
    assert error_reply(retry_status(code_pb2.ABORTED, 1, 0)).headers == []


def test_unknown_detail_types_keep_their_bytes() -> None:
    status = status_pb2.Status(code=code_pb2.INTERNAL, message="x")
    status.details.append(any_pb2.Any(type_url="type.googleapis.com/acme.Secret", value=b"\x01\x02"))
    assert orjson.loads(error_reply(status).body)["details"] == [{"@type": "type.googleapis.com/acme.Secret", "value": "AQI="}]


def test_local_errors_can_override_the_http_status() -> None:
    reply = local_error(code_pb2.UNIMPLEMENTED, "GET is not allowed on /api/chat", 405)
    assert reply.http_status == 405
    assert orjson.loads(reply.body)["code"] == code_pb2.UNIMPLEMENTED


def test_openai_shape_names_the_violated_field_and_the_code() -> None:
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="temperature: must be in [0, 2]")
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(field="temperature", description="must be in [0, 2]")
    status.details.add().Pack(bad)
    body = orjson.loads(openai_error_json(status, 400))
    assert body == {
        "error": {
            "message": "temperature: must be in [0, 2]",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "invalid_argument",
        }
    }
    limited = orjson.loads(openai_error_json(status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="slow down"), 429))
    assert limited["error"]["type"] == "rate_limit_error"
    assert limited["error"]["param"] is None


def test_payload_too_large_is_413_whatever_the_code() -> None:
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="document: over the limit")
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason="PAYLOAD_TOO_LARGE", domain="aigw"))
    assert error_reply(status).http_status == 413
