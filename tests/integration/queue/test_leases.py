"""Grants and leases over real gRPC on FerretDB: order, owners and orphans, fencing, lapses, retries, release."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from tests.integration.queue.conftest import CHAT, Queue


async def set_limits(queue: Queue, **patch: Any) -> None:
    current = (await queue.configs.GetModelConfig(queue_pb2.GetModelConfigRequest(model=CHAT))).config
    change = queue_pb2.UpdateModelConfigRequest(
        model=CHAT, expected_version=current.version, patch=queue_pb2.ModelConfigPatch(**patch)
    )
    await queue.configs.UpdateModelConfig(change)


def heartbeat(lease: queue_pb2.Lease, progress: int = 0) -> queue_pb2.HeartbeatRequest:
    return queue_pb2.HeartbeatRequest(lease_id=lease.lease_id, request_id=lease.request_id, progress=progress, backend="b1")


async def test_priorities_are_granted_high_normal_low_and_fifo_within_each(queue: Queue) -> None:
    submitted = {}
    for name, priority in (
        ("low", common_pb2.PRIORITY_LOW),
        ("normal-1", common_pb2.PRIORITY_NORMAL),
        ("high", common_pb2.PRIORITY_HIGH),
        ("normal-2", common_pb2.PRIORITY_UNSPECIFIED),
    ):
        submitted[(await queue.submit(name, priority=priority)).job.request_id] = name
    positions = {}
    for rid, name in submitted.items():
        positions[name] = (await queue.jobs.GetJob(queue_pb2.GetJobRequest(request_id=rid))).job.position
    assert positions == {"high": 1, "normal-1": 2, "normal-2": 3, "low": 4}
    order = []
    for _ in submitted:
        granted = await queue.acquire(models=[CHAT], wait_ms=1000)
        order.append(submitted[granted.job.request_id])
        assert granted.job.chat.messages[0].content == submitted[granted.job.request_id], "the payload comes with the grant"
    assert order == ["high", "normal-1", "normal-2", "low"]
    assert not (await queue.acquire(models=[CHAT], wait_ms=50)).HasField("lease")


async def test_an_owner_waits_for_a_free_slot_and_gets_its_own_job(queue: Queue) -> None:
    await set_limits(queue, max_concurrent=1)
    first = await queue.submit("first", owner_id="r1")
    first_lease = (await queue.acquire(request_id=first.job.request_id, wait_ms=0)).lease
    second = await queue.submit("second", owner_id="r1")
    assert second.job.state == common_pb2.QUEUED
    waiting = asyncio.create_task(queue.acquire(request_id=second.job.request_id, wait_ms=5000))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    orphan_hunt = await queue.acquire(models=[CHAT], wait_ms=100)
    assert not orphan_hunt.HasField("lease"), "an owned job is not handed to another worker while its owner waits"
    await queue.complete(first_lease)
    granted = await asyncio.wait_for(waiting, 5)
    assert granted.job.request_id == second.job.request_id
    assert granted.lease.attempt == 1
    assert granted.lease.ttl_ms == 1000


async def test_a_job_whose_owner_left_is_taken_as_an_orphan(queue: Queue) -> None:
    await set_limits(queue, max_concurrent=1)
    sub = await queue.submit("running", owner_id="r1")
    lease = (await queue.acquire(request_id=sub.job.request_id, wait_ms=0)).lease
    assert lease.lease_id
    waiting = await queue.submit("owner gives up", owner_id="r1")
    assert not (await queue.acquire(request_id=waiting.job.request_id, wait_ms=100)).HasField("lease")
    await queue.complete(lease)
    taken = await queue.acquire(models=[CHAT], wait_ms=3000, worker_id="background")
    assert taken.job.request_id == waiting.job.request_id
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await queue.acquire(request_id=waiting.job.request_id, wait_ms=0)
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_stale_leases_are_fenced_and_change_nothing(queue: Queue) -> None:
    await queue.submit("job")
    first = (await queue.acquire(models=[CHAT])).lease
    released = await queue.jobs.ReleaseJob(queue_pb2.ReleaseJobRequest(lease_id=first.lease_id, request_id=first.request_id))
    assert released.job.state == common_pb2.QUEUED
    assert released.job.attempt == 0
    second = (await queue.acquire(models=[CHAT])).lease
    assert second.lease_id != first.lease_id
    assert second.attempt == 1

    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await queue.complete(first, "from the old attempt")
    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    fail = queue_pb2.FailJobRequest(lease_id=first.lease_id, request_id=first.request_id, error=common_pb2.JobError(code="X"))
    with pytest.raises(grpc.aio.AioRpcError) as stale_fail:
        await queue.jobs.FailJob(fail)
    assert stale_fail.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    beat = await queue.jobs.Heartbeat(heartbeat(first))
    assert beat.cancel
    assert beat.cancel_reason == "lease lost"

    job = (await queue.jobs.GetJob(queue_pb2.GetJobRequest(request_id=first.request_id))).job
    assert job.state == common_pb2.RUNNING
    assert job.attempt == 1
    assert not job.attempt_errors
    done = (await queue.complete(second, "from the live attempt")).job
    assert done.state == common_pb2.SUCCEEDED
    assert done.chat_result.message.content == "from the live attempt"
    again = (await queue.complete(second, "repeated after a lost answer")).job
    assert again.chat_result.message.content == "from the live attempt"


async def test_heartbeats_keep_a_lease_past_its_ttl_and_carry_progress(queue: Queue) -> None:
    await queue.submit("long job")
    lease = (await queue.acquire(models=[CHAT])).lease
    for step in range(1, 6):
        await asyncio.sleep(0.4)
        beat = await queue.jobs.Heartbeat(heartbeat(lease, progress=step))
        assert not beat.cancel
    job = (await queue.jobs.GetJob(queue_pb2.GetJobRequest(request_id=lease.request_id))).job
    assert job.state == common_pb2.RUNNING
    assert job.progress == 5
    assert job.backend == "b1"
    assert job.attempt == 1


async def test_a_lapsed_lease_requeues_and_the_third_failure_fails_the_job_with_every_reason(queue: Queue) -> None:
    rid = (await queue.submit("unlucky")).job.request_id
    first = (await queue.acquire(models=[CHAT], worker_id="w-a")).lease
    assert first.attempt == 1
    second_grant = await queue.acquire(models=[CHAT], worker_id="w-b", wait_ms=5000)
    assert second_grant.lease.attempt == 2
    assert second_grant.job.attempt_errors[0].code == "LEASE_LOST"
    beat = await queue.jobs.Heartbeat(heartbeat(first))
    assert beat.cancel
    assert beat.cancel_reason == "lease lost"

    error = common_pb2.JobError(code="UNAVAILABLE", message="backend b1 crashed", backend="b1")
    failed = await queue.jobs.FailJob(
        queue_pb2.FailJobRequest(lease_id=second_grant.lease.lease_id, request_id=rid, error=error, retryable=True)
    )
    assert failed.job.state == common_pb2.QUEUED
    third = (await queue.acquire(models=[CHAT], worker_id="w-c")).lease
    assert third.attempt == 3
    final = None
    for _ in range(100):
        final = (await queue.jobs.GetJob(queue_pb2.GetJobRequest(request_id=rid))).job
        if final.state == common_pb2.FAILED:
            break
        await asyncio.sleep(0.1)
    assert final is not None
    assert final.state == common_pb2.FAILED
    assert [e.code for e in final.attempt_errors] == ["LEASE_LOST", "UNAVAILABLE", "LEASE_LOST"]
    assert [e.attempt for e in final.attempt_errors] == [1, 2, 3]
    assert "w-a" in final.attempt_errors[0].message
    assert "w-c" in final.attempt_errors[2].message
    assert final.error.code == "LEASE_LOST"
    assert "all 3 attempts failed" in final.error.message
    stats = await queue.jobs.GetQueueStats(queue_pb2.GetQueueStatsRequest(model=CHAT))
    assert stats.total_failed == 1
    assert stats.failures_by_reason["LEASE_LOST"] == 1

    await queue.service.crashlog.flush()
    crashes = await queue.crashes.ListCrashes(queue_pb2.ListCrashesRequest(request_id=rid))
    kinds = sorted(queue_pb2.CrashKind.Name(e.kind) for e in crashes.events)
    assert kinds == ["CRASH_KIND_LEASE_LOST", "CRASH_KIND_LEASE_LOST", "CRASH_KIND_RETRY", "CRASH_KIND_RETRY"]


async def test_a_non_retryable_failure_fails_at_once(queue: Queue) -> None:
    await queue.submit("bad input")
    lease = (await queue.acquire(models=[CHAT])).lease
    error = common_pb2.JobError(code="INVALID_ARGUMENT", message="prompt too long for the model")
    failed = await queue.jobs.FailJob(
        queue_pb2.FailJobRequest(lease_id=lease.lease_id, request_id=lease.request_id, error=error, retryable=False)
    )
    assert failed.job.state == common_pb2.FAILED
    assert failed.job.error.code == "INVALID_ARGUMENT"
    assert failed.job.error.attempt == 1
    assert len(failed.job.attempt_errors) == 1


async def test_an_owner_can_take_the_lease_with_the_submit_answer(queue: Queue) -> None:
    await set_limits(queue, max_concurrent=1)
    sub = await queue.submit("fast path", owner_id="r1", accept_lease=True)
    assert sub.job.state == common_pb2.RUNNING
    assert sub.lease.request_id == sub.job.request_id
    assert sub.lease.attempt == 1
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await queue.acquire(request_id=sub.job.request_id, wait_ms=0)
    assert taken.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert not (await queue.jobs.Heartbeat(heartbeat(sub.lease))).cancel
    queued = await queue.submit("slot taken", owner_id="r1", accept_lease=True)
    assert queued.job.state == common_pb2.QUEUED
    assert not queued.HasField("lease")
    assert (await queue.complete(sub.lease)).job.state == common_pb2.SUCCEEDED
    granted = await queue.acquire(request_id=queued.job.request_id, wait_ms=2000)
    assert granted.lease.attempt == 1


async def test_an_owner_running_its_job_keeps_it_when_the_attempt_is_retried(queue: Queue) -> None:
    sub = await queue.submit("owner retries", owner_id="r1", accept_lease=True)
    await asyncio.sleep(0.7)
    assert not (await queue.jobs.Heartbeat(heartbeat(sub.lease))).cancel
    orphan_hunt = asyncio.create_task(queue.acquire(models=[CHAT], wait_ms=400, worker_id="background"))
    await asyncio.sleep(0.05)
    error = common_pb2.JobError(code="UNAVAILABLE", message="backend went away")
    request = queue_pb2.FailJobRequest(lease_id=sub.lease.lease_id, request_id=sub.job.request_id, error=error, retryable=True)
    assert (await queue.jobs.FailJob(request)).job.state == common_pb2.QUEUED
    again = await queue.acquire(request_id=sub.job.request_id, worker_id="r1", wait_ms=1000)
    assert again.lease.attempt == 2
    assert not (await orphan_hunt).HasField("lease"), "the requeued job stayed with its owner"
