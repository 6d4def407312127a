"""The job as clients see it (`convert.job_proto`): times to the nanosecond, unset times unset, result once SUCCEEDED."""

from __future__ import annotations

import dataclasses

from aigw.common.v1 import common_pb2
from aigw_server.queue import convert
from aigw_server.queue.jobs import JobError, JobRecord, Kind, Priority, State
from aigw_server.queue.times import from_timestamp, to_timestamp

SUBMITTED = 1_765_000_000.123456


QUEUED = JobRecord(
    request_id="r1",
    model="chat-a",
    kind=Kind.CHAT,
    priority=Priority.NORMAL,
    seq=1,
    submitted_at=SUBMITTED,
    deadline=SUBMITTED + 300.5,
    max_attempts=3,
    queued_since=SUBMITTED,
)


def test_a_queued_job_has_its_submission_and_deadline_and_no_later_times() -> None:
    job = convert.job_proto(QUEUED, position=2, now=SUBMITTED + 0.25)
    assert job.timings.submitted_at == to_timestamp(SUBMITTED)
    assert job.timings.deadline == to_timestamp(SUBMITTED + 300.5)
    assert abs(from_timestamp(job.timings.submitted_at) - SUBMITTED) < 1e-6
    assert not job.timings.HasField("started_at")
    assert not job.timings.HasField("finished_at")
    assert (job.state, job.position, job.timings.queued_ms) == (common_pb2.QUEUED, 2, 250.0)
    assert len(job.attempt_errors) == 0
    assert not job.HasField("error")


def test_a_finished_job_has_every_time_its_errors_and_its_result() -> None:
    result = common_pb2.ChatResult(model="chat-a", message=common_pb2.ChatMessage(role="assistant", content="hi"))
    failed = JobError("UNAVAILABLE", "backend down", 1, "tg", SUBMITTED + 0.5)
    rec = dataclasses.replace(
        QUEUED,
        state=State.SUCCEEDED,
        attempt=2,
        started_at=SUBMITTED + 0.75,
        finished_at=SUBMITTED + 1.000001,
        ran_for=0.25,
        attempt_errors=[failed],
        result=result.SerializeToString(),
    )
    job = convert.job_proto(rec, position=0, now=SUBMITTED + 2)
    assert job.timings.started_at == to_timestamp(SUBMITTED + 0.75)
    assert job.timings.finished_at == to_timestamp(SUBMITTED + 1.000001)
    assert job.timings.service_ms == 250.0
    assert [(e.code, e.attempt, e.at) for e in job.attempt_errors] == [("UNAVAILABLE", 1, to_timestamp(SUBMITTED + 0.5))]
    assert job.chat_result == result
