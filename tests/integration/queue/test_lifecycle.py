"""Deadlines, cancellation and WatchJob over real gRPC on FerretDB."""

from __future__ import annotations

import asyncio

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from tests.integration.queue.conftest import CHAT, Queue


async def job_state(queue: Queue, rid: str) -> common_pb2.Job:
    return (await queue.jobs.GetJob(queue_pb2.GetJobRequest(request_id=rid))).job


async def until_finished(queue: Queue, rid: str, seconds: float = 5.0) -> common_pb2.Job:
    for _ in range(int(seconds / 0.05)):
        job = await job_state(queue, rid)
        if job.state not in (common_pb2.QUEUED, common_pb2.RUNNING):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"{rid} did not finish")


def beat(lease: queue_pb2.Lease, progress: int = 0) -> queue_pb2.HeartbeatRequest:
    return queue_pb2.HeartbeatRequest(lease_id=lease.lease_id, request_id=lease.request_id, progress=progress)


async def test_queued_and_running_jobs_fail_at_their_deadline_and_the_holder_is_told(queue: Queue) -> None:
    queued = (await queue.submit("never granted", timeout_seconds=0.3)).job
    running = (await queue.submit("too slow", timeout_seconds=0.6, owner_id="r1")).job
    lease = (await queue.acquire(request_id=running.request_id, wait_ms=0)).lease
    assert lease.lease_id

    expired = await until_finished(queue, queued.request_id)
    assert expired.state == common_pb2.FAILED
    assert expired.error.code == "DEADLINE_EXCEEDED"
    assert "while queued" in expired.error.message
    assert expired.timings.queued_ms >= 300
    late = await until_finished(queue, running.request_id)
    assert late.state == common_pb2.FAILED
    assert late.error.code == "DEADLINE_EXCEEDED"
    assert "while running" in late.error.message
    told = await queue.jobs.Heartbeat(beat(lease))
    assert told.cancel
    assert told.cancel_reason == "deadline exceeded"

    await queue.service.crashlog.flush()
    deadline_events = await queue.crashes.ListCrashes(queue_pb2.ListCrashesRequest(kind=queue_pb2.CRASH_KIND_DEADLINE))
    assert {e.request_id for e in deadline_events.events} == {queued.request_id, running.request_id}
    stats = await queue.jobs.GetQueueStats(queue_pb2.GetQueueStatsRequest(model=CHAT))
    assert stats.failures_by_reason["DEADLINE_EXCEEDED"] == 2
    assert stats.processing == 0
    assert stats.waiting == 0


async def test_cancelling_a_queued_job_ends_it_at_once(queue: Queue) -> None:
    rid = (await queue.submit("not wanted")).job.request_id
    cancelled = (await queue.jobs.CancelJob(queue_pb2.CancelJobRequest(request_id=rid, requested_by="alice"))).job
    assert cancelled.state == common_pb2.CANCELLED
    assert "alice" in cancelled.error.message
    assert not (await queue.acquire(models=[CHAT], wait_ms=100)).HasField("lease")
    again = (await queue.jobs.CancelJob(queue_pb2.CancelJobRequest(request_id=rid))).job
    assert again.state == common_pb2.CANCELLED


async def test_cancelling_a_running_job_reaches_its_worker_and_ends_it_cancelled(queue: Queue) -> None:
    rid = (await queue.submit("stop me")).job.request_id
    lease = (await queue.acquire(models=[CHAT])).lease
    asked = (await queue.jobs.CancelJob(queue_pb2.CancelJobRequest(request_id=rid, requested_by="bob"))).job
    assert asked.state == common_pb2.RUNNING
    assert asked.cancel_requested
    told = await queue.jobs.Heartbeat(beat(lease))
    assert told.cancel
    assert told.cancel_reason == "cancelled"
    error = common_pb2.JobError(code="CANCELLED", message="stopped by the worker")
    ended = await queue.jobs.FailJob(
        queue_pb2.FailJobRequest(lease_id=lease.lease_id, request_id=rid, error=error, retryable=True)
    )
    assert ended.job.state == common_pb2.CANCELLED
    stats = await queue.jobs.GetQueueStats(queue_pb2.GetQueueStatsRequest(model=CHAT))
    assert stats.total_cancelled == 1


async def test_watch_reports_position_grant_progress_requeue_and_the_end(queue: Queue) -> None:
    first = (await queue.submit("ahead", priority=common_pb2.PRIORITY_HIGH)).job.request_id
    rid = (await queue.submit("watched")).job.request_id
    events: list[tuple[str, common_pb2.Job]] = []

    async def watch() -> None:
        async for reply in queue.jobs.WatchJob(queue_pb2.WatchJobRequest(request_id=rid)):
            events.append((queue_pb2.WatchEvent.Name(reply.event), reply.job))

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.1)
    ahead = (await queue.acquire(models=[CHAT])).lease
    assert ahead.request_id == first
    lease = (await queue.acquire(models=[CHAT])).lease
    assert lease.request_id == rid
    await queue.jobs.Heartbeat(beat(lease, progress=7))
    await queue.jobs.ReleaseJob(queue_pb2.ReleaseJobRequest(lease_id=lease.lease_id, request_id=rid, reason="no backend"))
    lease = (await queue.acquire(models=[CHAT])).lease
    await queue.complete(lease, "watched result")
    await asyncio.wait_for(watcher, 5)

    names = [name for name, _ in events]
    assert names == [
        "WATCH_EVENT_POSITION",
        "WATCH_EVENT_POSITION",
        "WATCH_EVENT_GRANTED",
        "WATCH_EVENT_PROGRESS",
        "WATCH_EVENT_REQUEUED",
        "WATCH_EVENT_POSITION",
        "WATCH_EVENT_GRANTED",
        "WATCH_EVENT_FINISHED",
    ]
    assert events[0][1].position == 2
    assert events[1][1].position == 1
    assert events[-1][1].state == common_pb2.SUCCEEDED
    assert events[-1][1].chat_result.message.content == "watched result"
    finished_watch = [r async for r in queue.jobs.WatchJob(queue_pb2.WatchJobRequest(request_id=rid))]
    assert [r.event for r in finished_watch] == [queue_pb2.WATCH_EVENT_FINISHED]


async def test_a_running_job_given_back_after_cancellation_ends_cancelled(queue: Queue) -> None:
    rid = (await queue.submit("cancel, then release")).job.request_id
    lease = (await queue.acquire(models=[CHAT])).lease
    await queue.jobs.CancelJob(queue_pb2.CancelJobRequest(request_id=rid))
    released = await queue.jobs.ReleaseJob(
        queue_pb2.ReleaseJobRequest(lease_id=lease.lease_id, request_id=rid, reason="stopping")
    )
    assert released.job.state == common_pb2.CANCELLED
    assert not (await queue.acquire(models=[CHAT], wait_ms=50)).HasField("lease")
