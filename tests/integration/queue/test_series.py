"""The queue's per-minute series on FerretDB: finished jobs show at once, and the last hour survives a restart."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest

from aigw.queue.v1 import queue_pb2
from aigw_server.runtime.config import GatewayConfig
from tests.integration.queue.conftest import CHAT, OCR, Queue, start_queue

MINUTE = 60.0


def shifted(seconds: float) -> Callable[[], float]:
    """A clock `seconds` behind the real one: jobs run through it finished that long ago."""
    return lambda: time.time() - seconds


async def series(queue: Queue, model: str = CHAT, minutes: int | None = None) -> queue_pb2.GetQueueSeriesResponse:
    return await queue.jobs.GetQueueSeries(queue_pb2.GetQueueSeriesRequest(model=model, minutes=minutes))


async def run_jobs(queue: Queue, n: int) -> None:
    for i in range(n):
        rid = (await queue.submit(f"job {i}")).job.request_id
        granted = await queue.acquire(models=[CHAT])
        assert granted.job.request_id == rid
        await queue.complete(granted.lease)


def finished(m: queue_pb2.QueueMinute) -> int:
    return m.succeeded + m.failed + m.cancelled


async def test_finished_jobs_show_in_the_current_minute(queue: Queue) -> None:
    await run_jobs(queue, 3)
    waiting = (await queue.submit("left waiting")).job.request_id
    await queue.jobs.CancelJob(queue_pb2.CancelJobRequest(request_id=waiting))
    reply = await series(queue)
    assert reply.model == CHAT
    assert reply.bucket_seconds == 60
    assert len(reply.minutes) == 60
    starts = [m.start.seconds for m in reply.minutes]
    assert starts == sorted(starts)
    assert starts[-1] == int(time.time() // 60 * 60)
    now = reply.minutes[-1]
    if (now.succeeded, now.cancelled) != (3, 1):  # the jobs straddled a minute boundary
        now = reply.minutes[-2]
        assert sum(finished(m) for m in reply.minutes[-2:]) == 4
    assert sum(m.succeeded for m in reply.minutes) == 3
    assert sum(m.cancelled for m in reply.minutes) == 1
    assert max(m.total_ms.count for m in reply.minutes) >= 1
    assert all(0 < m.total_ms.p50 <= m.total_ms.p95 <= m.total_ms.p99 for m in reply.minutes if m.total_ms.count)
    assert max(m.peak_running for m in reply.minutes) >= 1
    assert max(m.peak_waiting for m in reply.minutes) >= 1
    assert reply.minutes[-1].finished_per_minute >= finished(reply.minutes[-1])
    assert len((await series(queue, OCR, 5)).minutes) == 5


@pytest.mark.parametrize("minutes", [0, -1, 61])
async def test_bad_minutes_and_unknown_models_are_refused(queue: Queue, minutes: int) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await series(queue, CHAT, minutes)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "minutes" in (refused.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await series(queue, "no-such-model")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_last_hour_is_rebuilt_after_a_restart(make_queue: Callable[..., GatewayConfig]) -> None:
    cfg = make_queue()
    # jobs that finished 75 minutes ago (outside the hour), then 40 minutes ago, each by a queue living then
    long_ago = await start_queue(cfg, shifted(75 * MINUTE))
    await run_jobs(long_ago, 2)
    await long_ago.stop()
    earlier = await start_queue(cfg, shifted(40 * MINUTE))
    await run_jobs(earlier, 3)
    cancelled = (await earlier.submit("never ran")).job.request_id
    await earlier.jobs.CancelJob(queue_pb2.CancelJobRequest(request_id=cancelled))
    counted_then = await series(earlier)
    await earlier.stop()
    live = await start_queue(cfg)
    await run_jobs(live, 1)
    await live.submit("waits across the restart")
    before = await series(live)
    await live.stop()

    restarted = await start_queue(cfg)
    try:
        after = await series(restarted)
        assert sum(m.succeeded for m in after.minutes) == 4, "the hour holds the 3 + 1 jobs, not the 75-minute-old ones"
        assert sum(m.cancelled for m in after.minutes) == 1
        busy = [m for m in after.minutes if finished(m)]
        old = min(busy, key=lambda m: m.start.seconds)
        assert time.time() - old.start.seconds == pytest.approx(40 * MINUTE, abs=2 * MINUTE)
        assert (old.succeeded, old.cancelled) == (3, 1) or sum(finished(m) for m in busy[:2]) == 4
        assert old.peak_running >= 1
        assert old.peak_waiting >= 1
        # minute by minute, the rebuilt counts and latencies are those counted live (then, and before the restart)
        by_start = {m.start.seconds: m for m in before.minutes if finished(m)}
        by_start.update({m.start.seconds: m for m in counted_then.minutes if finished(m)})
        for m in busy:
            seen = by_start[m.start.seconds]
            assert (m.succeeded, m.failed, m.cancelled) == (seen.succeeded, seen.failed, seen.cancelled)
            for field in ("total_ms", "queue_wait_ms"):
                got, was = getattr(m, field), getattr(seen, field)
                assert got.count == was.count
                assert got.p50 == pytest.approx(was.p50, rel=0.2, abs=2)
                assert got.p99 == pytest.approx(was.p99, rel=0.2, abs=2)
        assert after.minutes[-1].peak_waiting >= 1, "the job still queued is counted as waiting now"
    finally:
        await restarted.stop()
