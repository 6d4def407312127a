"""One leased attempt: heartbeats every ttl/3 (none for an attempt that ends first), stops, deadline, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw.textgen.v1 import textgen_pb2
from aigw_server.router.backends import BackendPool, StatusReport
from aigw_server.router.engines import EngineRoute
from aigw_server.router.jobs.contracts import JobQueue
from aigw_server.router.jobs.events import Listener
from aigw_server.router.jobs.runner import JobRunner
from aigw_server.runtime.config import BackendConfig, RoutingConfig

pytestmark = pytest.mark.timeout(10)


class Queue:
    """The queue calls of one attempt: heartbeats recorded (answered `cancel` once `stop` is set), the end reported."""

    def __init__(self) -> None:
        self.beats: list[queue_pb2.HeartbeatRequest] = []
        self.stop = False
        self.completed: list[queue_pb2.CompleteJobRequest] = []
        self.failed: list[queue_pb2.FailJobRequest] = []

    async def heartbeat(self, request: queue_pb2.HeartbeatRequest) -> queue_pb2.HeartbeatResponse:
        self.beats.append(request)
        return queue_pb2.HeartbeatResponse(cancel=self.stop, cancel_reason="cancelled" if self.stop else "")

    async def complete(self, request: queue_pb2.CompleteJobRequest) -> common_pb2.Job:
        self.completed.append(request)
        return common_pb2.Job(request_id=request.request_id, state=common_pb2.SUCCEEDED)

    async def fail(self, request: queue_pb2.FailJobRequest) -> common_pb2.Job:
        self.failed.append(request)
        return common_pb2.Job(request_id=request.request_id, state=common_pb2.CANCELLED, error=request.error)


class Backend:
    """A textgen backend that answers after `seconds`."""

    name = "tg"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    @contextlib.asynccontextmanager
    async def engine_route(self, model: str) -> AsyncIterator[EngineRoute | None]:
        yield None

    async def generate(self, request: textgen_pb2.GenerateRequest, timeout: float) -> common_pb2.ChatResult:
        await asyncio.sleep(self.seconds)
        return common_pb2.ChatResult(model=request.model, finish_reason="stop")


def make_runner(queue: Queue, backend_seconds: float) -> JobRunner:
    backends = (BackendConfig(name="tg", kind="textgen", address="127.0.0.1:1", models=("chat-a",)),)
    pool = BackendPool(backends, RoutingConfig())
    pool.observe("tg", StatusReport(state="ready", loaded_models=frozenset({"chat-a"}), in_flight=0, capacity=4))
    backend: Any = Backend(backend_seconds)
    return JobRunner(cast(JobQueue, queue), pool, {"tg": backend}, "router-test", no_backend_wait=0.0)


async def run_attempt(
    queue: Queue, backend_seconds: float, ttl_ms: int, runner: JobRunner | None = None, deadline: float = 0.0
) -> common_pb2.Job:
    runner = runner or make_runner(queue, backend_seconds)
    job = common_pb2.Job(request_id="r1", model="chat-a", state=common_pb2.RUNNING, chat=common_pb2.ChatJob())
    if deadline:
        job.timings.deadline.FromNanoseconds(int(deadline * 1e9))
    lease = queue_pb2.Lease(lease_id="l1", request_id="r1", attempt=1, ttl_ms=ttl_ms)
    return await runner.run(job, lease, Listener(streaming=False), owner=True)


async def test_an_attempt_that_ends_before_its_first_heartbeat_sends_none() -> None:
    queue = Queue()
    job = await run_attempt(queue, backend_seconds=0.01, ttl_ms=300)
    await asyncio.sleep(0.15)  # past the first heartbeat's time: nothing is left to send it
    assert job.state == common_pb2.SUCCEEDED
    assert queue.beats == []
    assert len(queue.completed) == 1


async def test_a_long_attempt_renews_its_lease_every_third_of_the_ttl() -> None:
    queue = Queue()
    job = await run_attempt(queue, backend_seconds=0.35, ttl_ms=300)
    assert job.state == common_pb2.SUCCEEDED
    assert 2 <= len(queue.beats) <= 4  # at 0.1, 0.2, 0.3 s
    assert {(b.lease_id, b.request_id, b.backend) for b in queue.beats} == {("l1", "r1", "tg")}
    count = len(queue.beats)
    await asyncio.sleep(0.25)
    assert len(queue.beats) == count, "heartbeats went on after the attempt ended"


async def test_a_heartbeat_answered_cancel_stops_the_attempt() -> None:
    queue = Queue()
    queue.stop = True
    job = await asyncio.wait_for(run_attempt(queue, backend_seconds=5.0, ttl_ms=300), timeout=2.0)
    assert len(queue.beats) == 1
    assert job.state == common_pb2.CANCELLED
    assert queue.failed[0].error.code == "CANCELLED"


async def test_a_stopped_attempt_reports_the_job_cancelled_with_the_reason() -> None:
    queue = Queue()
    runner = make_runner(queue, backend_seconds=5.0)
    attempt = asyncio.create_task(run_attempt(queue, 5.0, ttl_ms=30_000, runner=runner))
    await asyncio.sleep(0.05)
    assert runner.stop_local("r1", "the client went away")
    job = await asyncio.wait_for(attempt, timeout=1.0)
    assert job.state == common_pb2.CANCELLED
    assert (queue.failed[0].error.code, queue.failed[0].retryable) == ("CANCELLED", False)
    assert "the client went away" in queue.failed[0].error.message
    assert not runner.stop_local("r1", "again"), "the attempt is still listed as running"


async def test_an_attempt_past_its_deadline_is_reported_deadline_exceeded() -> None:
    queue = Queue()
    job = await asyncio.wait_for(run_attempt(queue, 5.0, ttl_ms=30_000, deadline=time.time() + 0.1), timeout=2.0)
    assert job.state == common_pb2.CANCELLED  # what the fake queue answers any failure with
    assert (queue.failed[0].error.code, queue.failed[0].retryable) == ("DEADLINE_EXCEEDED", False)


async def test_an_attempt_cancelled_from_outside_ends_its_task_without_a_report() -> None:
    queue = Queue()
    runner = make_runner(queue, backend_seconds=5.0)
    attempt = asyncio.create_task(run_attempt(queue, 5.0, ttl_ms=30_000, runner=runner))
    await asyncio.sleep(0.05)
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    assert queue.failed == []
    assert queue.completed == []
    assert not runner.stop_local("r1", "late")


async def test_a_stop_and_a_cancellation_from_outside_together_still_end_the_task() -> None:
    queue = Queue()
    runner = make_runner(queue, backend_seconds=5.0)
    attempt = asyncio.create_task(run_attempt(queue, 5.0, ttl_ms=30_000, runner=runner))
    await asyncio.sleep(0.05)
    runner.stop_local("r1", "cancelled")
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    assert queue.failed == []
