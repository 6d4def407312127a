"""The server side's one table of error kinds and gRPC codes, both ways, and its one RetryInfo reader."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from aigw_server.runtime import errors
from aigw_server.runtime.errors import ErrorCode, GatewayError
from aigw_server.runtime.rpc_errors import (
    DOWNSTREAM_FAILED_MESSAGE,
    ERRORS_BY_STATUS,
    STATUS_CODES,
    from_status_proto,
    retry_delay,
    status_proto,
)

CONCRETE = [
    cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, GatewayError) and cls is not GatewayError
]


def test_every_error_kind_is_a_grpc_code_of_the_same_name() -> None:
    assert {code: status.name for code, status in STATUS_CODES.items()} == {code: code.value for code in ErrorCode}


def test_error_kinds_compare_equal_to_the_code_names_stored_in_job_errors() -> None:
    assert errors.DeadlineExceeded.code == "DEADLINE_EXCEEDED"
    assert f"{errors.NotFound.code}" == "NOT_FOUND"


@pytest.mark.parametrize("cls", CONCRETE, ids=lambda c: c.__name__)
def test_a_domain_error_is_sent_with_its_kinds_code_and_comes_back_as_the_same_kind(cls: type[GatewayError]) -> None:
    status = status_proto(cls("it went wrong", retry_after=1.5))
    assert code_pb2.Code.Name(status.code) == cls.code.value
    back = from_status_proto(status)
    assert (back.code, back.message, back.retry_after) == (cls.code, "it went wrong", 1.5)


def test_every_status_with_an_error_kind_has_exactly_one_error_class() -> None:
    assert {cls.code for cls in ERRORS_BY_STATUS.values()} == set(ErrorCode) - {ErrorCode.UNKNOWN}
    assert all(STATUS_CODES[cls.code] is status for status, cls in ERRORS_BY_STATUS.items())


@pytest.mark.parametrize("code", [code_pb2.INTERNAL, code_pb2.UNKNOWN, code_pb2.DATA_LOSS, 99])
def test_a_downstream_failure_without_a_kind_is_unavailable_and_says_nothing_of_its_internals(code: int) -> None:
    back = from_status_proto(status_pb2.Status(code=code, message="stack trace of the queue"))
    assert isinstance(back, errors.Unavailable)
    assert back.message == DOWNSTREAM_FAILED_MESSAGE


def test_a_downstream_unavailable_keeps_its_message() -> None:
    back = from_status_proto(status_pb2.Status(code=code_pb2.UNAVAILABLE, message="queue is restarting"))
    assert (type(back), back.message) == (errors.Unavailable, "queue is restarting")


def test_bad_request_details_name_the_field_of_an_invalid_argument_only() -> None:
    invalid = status_proto(errors.InvalidArgument("model: required", field="model"))
    assert [d.type_url.rsplit("/", 1)[1] for d in invalid.details] == ["google.rpc.BadRequest"]
    assert status_proto(errors.NotFound("no such model", field="model")).details == []


def test_retry_delay_reads_seconds_and_nanos_and_none_without_retry_info() -> None:
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED)
    assert retry_delay(status) is None
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=250_000_000)))
    assert retry_delay(status) == 2.25


def test_status_codes_cover_the_grpc_codes_the_gateway_documents() -> None:
    documented = {"INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNAVAILABLE"}
    assert documented <= {status.name for status in STATUS_CODES.values()}
    assert STATUS_CODES[ErrorCode.DEADLINE_EXCEEDED] is grpc.StatusCode.DEADLINE_EXCEEDED
