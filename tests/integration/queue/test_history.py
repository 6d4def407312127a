"""History, retention, usage and recovery across an in-process restart, on FerretDB."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw_server.queue.stats import epoch_hour, hour_of_week
from aigw_server.runtime.config import GatewayConfig
from tests.integration.queue.conftest import CHAT, OCR, Queue, start_queue


async def run_one(queue: Queue, text: str, **fields: object) -> str:
    """Submits, runs and completes one async job; returns its id."""
    rid = (await queue.submit(text, **fields)).job.request_id
    granted = await queue.acquire(models=[CHAT])
    assert granted.job.request_id == rid
    await queue.complete(granted.lease, f"answer to {text}")
    return rid


async def test_list_jobs_newest_first_with_filters_and_pages_and_without_payloads(queue: Queue) -> None:
    done = [await run_one(queue, f"job {i}", client_id="alice" if i % 2 else "bob") for i in range(5)]
    waiting = (await queue.submit("still queued", client_id="alice")).job.request_id
    ocr = await queue.jobs.Submit(queue_pb2.SubmitRequest(model=OCR, ocr=common_pb2.OcrJob(document=b"%PDF-1.7 ...")))

    seen: list[common_pb2.Job] = []
    token = ""
    while True:
        page = await queue.jobs.ListJobs(queue_pb2.ListJobsRequest(page_size=3, page_token=token))
        seen += page.jobs
        token = page.next_page_token
        if not token:
            break
    assert [j.request_id for j in seen] == [ocr.job.request_id, waiting, *reversed(done)]
    assert all(not j.HasField("chat") and not j.HasField("ocr") for j in seen)
    assert [j.state for j in seen[:2]] == [common_pb2.QUEUED, common_pb2.QUEUED]
    assert seen[2].chat_result.message.content == "answer to job 4"

    alice = await queue.jobs.ListJobs(queue_pb2.ListJobsRequest(client_id="alice", state=common_pb2.SUCCEEDED))
    assert [j.request_id for j in alice.jobs] == [done[3], done[1]]
    queued = await queue.jobs.ListJobs(queue_pb2.ListJobsRequest(state=common_pb2.QUEUED, model=CHAT))
    assert [j.request_id for j in queued.jobs] == [waiting]
    ocr_only = await queue.jobs.ListJobs(queue_pb2.ListJobsRequest(kind=common_pb2.JOB_KIND_OCR))
    assert [j.request_id for j in ocr_only.jobs] == [ocr.job.request_id]
    future = Timestamp(seconds=int(time.time()) + 3600)
    assert not (await queue.jobs.ListJobs(queue_pb2.ListJobsRequest(since=future))).jobs
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await queue.jobs.ListJobs(queue_pb2.ListJobsRequest(page_token="not-a-token"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_jobs_by_subject_in_memory_and_in_the_store(queue: Queue) -> None:
    mine = [await run_one(queue, "ann's", subject="ann", client_id="shared")]
    others = [await run_one(queue, "ben's", subject="ben", client_id="shared")]
    mine.append((await queue.submit("ann waits", subject="ann", client_id="shared")).job.request_id)
    others.append((await queue.submit("ben waits", subject="ben", client_id="shared")).job.request_id)

    async def listed(**fields: object) -> list[str]:
        reply = await queue.jobs.ListJobs(queue_pb2.ListJobsRequest(subject="ann", **fields))  # type: ignore[arg-type]
        return [j.request_id for j in reply.jobs]

    assert await listed() == list(reversed(mine))
    assert await listed(state=common_pb2.SUCCEEDED) == [mine[0]]
    assert await listed(state=common_pb2.QUEUED) == [mine[1]]
    assert await listed(client_id="shared", page_size=1) == [mine[1]]
    everyone = await queue.jobs.ListJobs(queue_pb2.ListJobsRequest())
    assert {j.request_id for j in everyone.jobs} >= set(mine + others)


async def test_a_finished_job_keeps_its_result_timings_and_payload(queue: Queue) -> None:
    rid = await run_one(queue, "remember me")
    job = (await queue.jobs.GetJob(queue_pb2.GetJobRequest(request_id=rid))).job
    assert job.state == common_pb2.SUCCEEDED
    assert not job.HasField("chat")
    assert job.chat_result.message.content == "answer to remember me"
    assert job.backend == "b1"
    assert job.timings.finished_at.ToNanoseconds() >= job.timings.started_at.ToNanoseconds()
    assert job.timings.started_at.ToNanoseconds() >= job.timings.submitted_at.ToNanoseconds()
    assert job.timings.service_ms > 0
    with_payload = (await queue.jobs.GetJob(queue_pb2.GetJobRequest(request_id=rid, include_payload=True))).job
    assert with_payload.chat.messages[0].content == "remember me"


async def test_a_large_ocr_document_is_stored_apart_and_returned_on_request(queue: Queue) -> None:
    document = bytes(range(256)) * 4096 * 2
    sub = await queue.jobs.Submit(queue_pb2.SubmitRequest(model=OCR, ocr=common_pb2.OcrJob(document=document)))
    granted = await queue.acquire(models=[OCR])
    assert granted.job.ocr.document == document
    listed = await queue.jobs.ListJobs(queue_pb2.ListJobsRequest(model=OCR))
    assert not listed.jobs[0].HasField("ocr")
    fetched = await queue.jobs.GetJob(queue_pb2.GetJobRequest(request_id=sub.job.request_id, include_payload=True))
    assert fetched.job.ocr.document == document


async def test_retention_deletes_old_history_but_keeps_the_totals(queue: Queue) -> None:
    rid = await run_one(queue, "old news")
    await run_one(queue, "also old")
    before = await queue.jobs.GetQueueStats(queue_pb2.GetQueueStatsRequest(model=CHAT))
    assert before.total_processed == 2
    sixteen_days_on = time.time() + 16 * 86_400
    swept = await queue.service.housekeeping.sweep_retention(sixteen_days_on)
    assert swept == 2
    queue.service.engine.jobs.forget_finished()
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await queue.jobs.GetJob(queue_pb2.GetJobRequest(request_id=rid))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    assert not (await queue.jobs.ListJobs(queue_pb2.ListJobsRequest())).jobs
    assert await queue.service.housekeeping.sweep_retention(sixteen_days_on) == 0

    restarted = await start_queue(queue.service.cfg)
    try:
        after = await restarted.jobs.GetQueueStats(queue_pb2.GetQueueStatsRequest(model=CHAT))
        assert after.total_processed == 2, "swept jobs stay counted, once"
    finally:
        await restarted.stop()


async def test_usage_counts_submissions_by_model_and_hour_of_week(queue: Queue) -> None:
    for i in range(3):
        await queue.submit(f"chat {i}")
    await queue.jobs.Submit(queue_pb2.SubmitRequest(model=OCR, ocr=common_pb2.OcrJob(document=b"x")))
    usage = await queue.jobs.GetUsage(queue_pb2.GetUsageRequest())
    how = hour_of_week(epoch_hour(time.time()))
    counts = {(b.model, b.hour_of_week): b.count for b in usage.buckets}
    assert counts in ({(CHAT, how): 3, (OCR, how): 1}, {(CHAT, how): 3, (OCR, (how + 1) % 168): 1})
    assert usage.since.seconds < time.time() - 7 * 86_400 + 60


async def test_a_restart_keeps_queued_jobs_in_order_and_live_leases_running(make_queue: Callable[..., GatewayConfig]) -> None:
    cfg = make_queue(lease_ttl_seconds=3)
    first = await start_queue(cfg)
    done = await run_one(first, "finished before")
    low = (await first.submit("low", priority=common_pb2.PRIORITY_LOW)).job.request_id
    high = (await first.submit("high", priority=common_pb2.PRIORITY_HIGH)).job.request_id
    running = await first.submit("running", owner_id="r1")
    lease = (await first.acquire(request_id=running.job.request_id, wait_ms=0)).lease
    await first.jobs.Heartbeat(queue_pb2.HeartbeatRequest(lease_id=lease.lease_id, request_id=lease.request_id, progress=4))
    await first.stop()

    second = await start_queue(cfg)
    try:
        beat = await second.jobs.Heartbeat(queue_pb2.HeartbeatRequest(lease_id=lease.lease_id, request_id=lease.request_id))
        assert not beat.cancel, "a live lease survives the restart"
        job = (await second.jobs.GetJob(queue_pb2.GetJobRequest(request_id=lease.request_id))).job
        assert job.state == common_pb2.RUNNING
        assert job.attempt == 1
        order = [(await second.acquire(models=[CHAT])).job.request_id for _ in range(2)]
        assert order == [high, low]
        completed = (await second.complete(lease, "finished after the restart")).job
        assert completed.state == common_pb2.SUCCEEDED
        assert completed.attempt == 1
        old = (await second.jobs.GetJob(queue_pb2.GetJobRequest(request_id=done))).job
        assert old.chat_result.message.content == "answer to finished before"
        stats = await second.jobs.GetQueueStats(queue_pb2.GetQueueStatsRequest(model=CHAT))
        assert stats.total_processed == 2
        assert stats.processing == 2
        await second.service.crashlog.flush()
        recovery = await second.crashes.ListCrashes(queue_pb2.ListCrashesRequest(kind=queue_pb2.CRASH_KIND_RECOVERY))
        assert {e.request_id for e in recovery.events} == {"", lease.request_id}
        assert any("2 queued and 1 running" in e.message for e in recovery.events)
    finally:
        await second.stop()
