"""Admin messages that mirror queue messages convert without loss: every field of the source lands in the same
field of the target (same number, name and type); the queue may have more (ListJobs' owner filter, which the
admin's history leaves unset)."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from aigw.admin.v1 import admin_pb2
from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw_server.admin.servicer import recast

PAIRS: list[tuple[type[Message], type[Message]]] = [
    (queue_pb2.GetQueueStatsResponse, admin_pb2.GetQueueStatsResponse),
    (queue_pb2.GetQueueSeriesResponse, admin_pb2.GetQueueSeriesResponse),
    (admin_pb2.ListCrashesRequest, queue_pb2.ListCrashesRequest),
    (queue_pb2.ListCrashesResponse, admin_pb2.ListCrashesResponse),
    (admin_pb2.ListRequestsRequest, queue_pb2.ListJobsRequest),
]


def shape(descriptor: Descriptor) -> dict[int, tuple[str, int, str, bool]]:
    """Each field's name, type, message type (a map entry by its own shape) and repetition, by number."""
    return {f.number: (f.name, f.type, message_type(f), f.is_repeated) for f in descriptor.fields}


def message_type(field: FieldDescriptor) -> str:
    nested = field.message_type
    if nested is None:
        return ""
    return str(shape(nested)) if nested.GetOptions().map_entry else str(nested.full_name)


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_mirrored_messages_have_the_same_shape(source: type[Message], target: type[Message]) -> None:
    source_shape, target_shape = shape(source.DESCRIPTOR), shape(target.DESCRIPTOR)  # type: ignore[arg-type]
    assert source_shape.items() <= target_shape.items()


def test_queue_stats_survive_the_conversion() -> None:
    stats = queue_pb2.GetQueueStatsResponse(
        model="m", processing=2, waiting=3, utilization=0.2, total_processed=10, failures_by_reason={"UNAVAILABLE": 1}
    )
    stats.queue_wait_ms.p99 = 12.5
    converted = recast(stats, admin_pb2.GetQueueStatsResponse)
    assert (converted.waiting, converted.failures_by_reason["UNAVAILABLE"], converted.queue_wait_ms.p99) == (3, 1, 12.5)


def test_request_filters_survive_the_conversion() -> None:
    asked = admin_pb2.ListRequestsRequest(
        model="m", state=common_pb2.FAILED, page_size=5, page_token="t", kind=common_pb2.JOB_KIND_OCR
    )
    asked.since.seconds = 1000
    jobs = recast(asked, queue_pb2.ListJobsRequest)
    assert (jobs.model, jobs.state, jobs.page_size, jobs.page_token, jobs.kind, jobs.since.seconds) == (
        "m",
        common_pb2.FAILED,
        5,
        "t",
        common_pb2.JOB_KIND_OCR,
        1000,
    )
