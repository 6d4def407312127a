"""QueueService.Session and SessionBatches on a real queue and FerretDB: every job call answers as its unary RPC
does, calls run concurrently, waiting calls and answers share messages, a withdrawn call stops, a router and a
queue of different versions still talk, and a queue restart fails the calls in flight with UNAVAILABLE."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw_server.queue.service import QueueService
from aigw_server.runtime.config import GatewayConfig
from aigw_server.runtime.errors import GatewayError, Unavailable
from aigw_server.runtime.queue_client import QueueClient
from aigw_server.runtime.queue_session import ACCEPTED, QueueSession
from aigw_server.runtime.server import create_server
from harness.ferretdb import free_port
from tests.integration.queue.conftest import CHAT, OCR

pytestmark = pytest.mark.timeout(90)

UNSTABLE = {"requestId", "leaseId", "timings", "expiresAt", "at"}
"""Fields that differ between two runs of the same calls (ids, clocks)."""


def chat(text: str = "hello") -> common_pb2.ChatJob:
    return common_pb2.ChatJob(messages=[common_pb2.ChatMessage(role="user", content=text)])


def result(text: str = "done") -> common_pb2.ChatResult:
    return common_pb2.ChatResult(message=common_pb2.ChatMessage(role="assistant", content=text), finish_reason="stop")


def stable(message: Message) -> Any:
    """A message as a dict without the fields that differ from run to run."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in UNSTABLE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(MessageToDict(message))


class RunningQueue:
    """A queue service in-process on a fixed address, which a test can stop and start again."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.address = f"127.0.0.1:{free_port()}"
        self.server: grpc.aio.Server | None = None
        self.service: QueueService | None = None

    async def start(self) -> None:
        self.service = QueueService(self.cfg)
        self.server, _, health = await create_server(self.service, self.address)
        await self.server.start()
        await self.service.start(health)
        await self.service.wait_ready(30)

    async def stop(self) -> None:
        if self.server is not None and self.service is not None:
            await self.server.stop(0)
            await self.service.stop()
            self.server = self.service = None


@pytest.fixture
async def running(make_queue: Callable[..., GatewayConfig]) -> AsyncIterator[RunningQueue]:
    queue = RunningQueue(make_queue(lease_ttl_seconds=5))
    await queue.start()
    yield queue
    await queue.stop()


@contextlib.asynccontextmanager
async def client(address: str, session: bool) -> AsyncIterator[QueueClient]:
    queue = QueueClient.connect(address, session=session)
    try:
        yield queue
    finally:
        await queue.close()


async def outcome(call: Any) -> Any:
    """A call's reply without its unstable fields, or its domain error as (type, message with ids masked, retry)."""
    try:
        reply = await call
    except GatewayError as exc:
        return type(exc).__name__, re.sub(r"[0-9a-f]{32}|[0-9A-Za-z_-]{20,}", "<id>", exc.message), exc.retry_after
    return None if reply is None else stable(reply)


async def lifecycle(queue: QueueClient) -> list[Any]:
    """Every job call the router makes, on three jobs (completed, failed, released then cancelled), and bad calls."""
    seen: list[Any] = []
    owned = queue_pb2.SubmitRequest(model=CHAT, chat=chat(), owner_id="w1", client_id="c1", subject="alice")
    first = await queue.submit(queue_pb2.SubmitRequest(accept_lease=True, **_fields(owned)))
    seen.append(stable(first))
    rid, lease = first.job.request_id, first.lease
    beat = queue_pb2.HeartbeatRequest(lease_id=lease.lease_id, request_id=rid, progress=3, backend="b1")
    seen.append(stable(await queue.heartbeat(beat)))
    seen.append(stable(await queue.get(rid, include_payload=True)))
    done = queue_pb2.CompleteJobRequest(lease_id=lease.lease_id, request_id=rid, backend="b1", chat_result=result())
    seen.append(stable(await queue.complete(done)))
    seen.append(await outcome(queue.complete(done)))  # a job finishes once: a repeated report gets the finished job
    seen.append(await outcome(queue.heartbeat(beat)))

    second = (await queue.submit(owned)).job.request_id
    granted = await queue.acquire("w1", 2000, request_id=second)
    assert granted is not None
    seen.append(stable(granted))
    error = common_pb2.JobError(code="INVALID_ARGUMENT", message="engine refused", backend="b1")
    failed = queue_pb2.FailJobRequest(lease_id=granted.lease.lease_id, request_id=second, error=error, retryable=False)
    seen.append(stable(await queue.fail(failed)))
    stale = queue_pb2.ReleaseJobRequest(lease_id="not-a-lease", request_id=second, reason="x")
    seen.append(await outcome(queue.release(stale)))

    third = (await queue.submit(owned)).job.request_id
    granted = await queue.acquire("w1", 2000, request_id=third)
    assert granted is not None
    release = queue_pb2.ReleaseJobRequest(lease_id=granted.lease.lease_id, request_id=third, reason="no backend")
    seen.append(stable(await queue.release(release)))
    seen.append(stable(await queue.cancel(third, "alice")))

    seen.append(await outcome(queue.get("no-such-request")))
    seen.append(await outcome(queue.acquire("w1", -1)))
    seen.append(await outcome(queue.submit(queue_pb2.SubmitRequest(model="no-such-model", chat=chat()))))
    seen.append(await outcome(queue.acquire("w1", 0, models=[CHAT])))  # nothing to grant: None
    return seen


def _fields(request: queue_pb2.SubmitRequest) -> dict[str, Any]:
    return {field.name: value for field, value in request.ListFields()}


@contextlib.asynccontextmanager
async def older_queue(running: RunningQueue) -> AsyncIterator[str]:
    """The running queue's Session served alone on a port of its own, as a queue built before SessionBatches."""
    assert running.service is not None
    assert running.service.jobs is not None
    session = grpc.stream_stream_rpc_method_handler(
        running.service.jobs.Session,
        request_deserializer=queue_pb2.SessionRequest.FromString,
        response_serializer=queue_pb2.SessionResponse.SerializeToString,
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("aigw.queue.v1.QueueService", {"Session": session}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


@pytest.mark.parametrize("versions", ["current", "older router", "older queue"])
async def test_every_job_call_over_the_session_answers_as_its_unary_rpc(running: RunningQueue, versions: str) -> None:
    async with client(running.address, session=False) as unary:
        expected = await lifecycle(unary)
    async with contextlib.AsyncExitStack() as stack:
        address = await stack.enter_async_context(older_queue(running)) if versions == "older queue" else running.address
        session = await stack.enter_async_context(client(address, session=True))
        if versions == "older router":  # one that knows Session only
            session.session = QueueSession(session.jobs.Session)
        got = await lifecycle(session)
        assert session.session is not None
        assert session.session.stream is not None
        assert session.session.stream.broken is None  # one stream carried every call
        assert session.session.batches is (versions == "current")
    assert got == expected
    assert expected[4]["state"] == "SUCCEEDED"
    assert expected[5]["cancel"]
    assert expected[8][0] == "FailedPrecondition"
    assert [e[0] for e in expected[-4:-1]] == ["NotFound", "InvalidArgument", "NotFound"]


async def _unary_status(call: Any) -> status_pb2.Status:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    return status if status is not None else status_pb2.Status(code=caught.value.code().value[0], message=caught.value.details())


async def test_errors_carry_the_unary_rpcs_code_message_and_details(make_queue: Callable[..., GatewayConfig]) -> None:
    cfg = make_queue()
    one_waiting = dataclasses.replace(cfg.models[CHAT], max_concurrent=1, max_waiting=1)
    queue = RunningQueue(dataclasses.replace(cfg, models={**cfg.models, CHAT: one_waiting}))
    await queue.start()
    try:
        async with grpc.aio.insecure_channel(queue.address) as channel:
            stub = queue_pb2_grpc.QueueServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError):  # fill the model's queue
                for _ in range(5):
                    await stub.Submit(queue_pb2.SubmitRequest(model=CHAT, chat=chat()))
            bad_calls: list[tuple[str, Message, Any]] = [
                ("submit", queue_pb2.SubmitRequest(model=CHAT, chat=chat()), stub.Submit),
                ("acquire_job", queue_pb2.AcquireJobRequest(worker_id="w1", wait_ms=-5), stub.AcquireJob),
                ("heartbeat", queue_pb2.HeartbeatRequest(request_id="r"), stub.Heartbeat),
                ("get_job", queue_pb2.GetJobRequest(request_id="nope"), stub.GetJob),
            ]
            requests = []
            for call_id, (field, message, _) in enumerate(bad_calls, 1):
                request = queue_pb2.SessionRequest(call_id=call_id, timeout_ms=5000)
                getattr(request, field).CopyFrom(message)
                requests.append(request)
            stream = stub.Session(iter(requests))
            replies = {reply.call_id: reply async for reply in stream}
            for call_id, (_, message, unary) in enumerate(bad_calls, 1):
                assert replies[call_id].WhichOneof("reply") == "error"
                assert replies[call_id].error == await _unary_status(unary(message))
    finally:
        await queue.stop()
    full, negative = replies[1].error, replies[2].error
    assert full.code == code_pb2.RESOURCE_EXHAUSTED
    assert any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in full.details)
    assert negative.code == code_pb2.INVALID_ARGUMENT
    violation = error_details_pb2.BadRequest()
    negative.details[0].Unpack(violation)
    assert violation.field_violations[0].field == "wait_ms"


async def test_calls_on_one_stream_run_concurrently_and_a_withdrawn_acquire_grants_nothing(running: RunningQueue) -> None:
    async with grpc.aio.insecure_channel(running.address) as channel:
        stream: Any = queue_pb2_grpc.QueueServiceStub(channel).Session()  # type: ignore[call-arg]
        waiting = queue_pb2.AcquireJobRequest(worker_id="w9", models=[CHAT], wait_ms=20_000)
        await stream.write(queue_pb2.SessionRequest(call_id=1, acquire_job=waiting))
        started = time.monotonic()
        await stream.write(queue_pb2.SessionRequest(call_id=2, submit=queue_pb2.SubmitRequest(model="no-such-model")))
        first = await stream.read()
        assert first.call_id == 2  # answered while the 20 s acquire still waits
        assert first.error.code == code_pb2.NOT_FOUND
        assert time.monotonic() - started < 5
        await stream.write(queue_pb2.SessionRequest(call_id=1, abandon=queue_pb2.SessionAbandon()))
        await asyncio.sleep(0.3)
        submitted = queue_pb2.SubmitRequest(model=CHAT, chat=chat())
        await stream.write(queue_pb2.SessionRequest(call_id=3, submit=submitted))
        reply = await stream.read()
        assert reply.call_id == 3
        rid = reply.submit.job.request_id
        await asyncio.sleep(1.0)  # past the orphan grace: a live acquire would have been granted the job
        await stream.write(queue_pb2.SessionRequest(call_id=4, get_job=queue_pb2.GetJobRequest(request_id=rid)))
        reply = await stream.read()
        assert reply.call_id == 4
        assert reply.get_job.job.state == common_pb2.QUEUED
        deadline = queue_pb2.AcquireJobRequest(worker_id="w9", models=[OCR], wait_ms=20_000)
        await stream.write(queue_pb2.SessionRequest(call_id=5, timeout_ms=200, acquire_job=deadline))
        await stream.write(queue_pb2.SessionRequest(call_id=6))
        replies = {r.call_id: r for r in [await stream.read(), await stream.read()]}
        assert replies[6].error.code == code_pb2.INVALID_ARGUMENT
        assert replies[5].error.code == code_pb2.DEADLINE_EXCEEDED
        await stream.done_writing()
        assert await stream.read() == grpc.aio.EOF  # type: ignore[attr-defined]


async def test_calls_and_answers_that_wait_share_messages_and_each_call_keeps_its_own_answer(
    running: RunningQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert running.service is not None
    assert running.service.jobs is not None
    servicer = running.service.jobs.session
    calls_in: list[int] = []
    answers_out: list[int] = []
    run_batches = servicer.run_batches

    async def counted(batches: AsyncIterator[queue_pb2.SessionBatchesRequest]) -> AsyncIterator[queue_pb2.SessionBatchesResponse]:
        async def read() -> AsyncIterator[queue_pb2.SessionBatchesRequest]:
            async for batch in batches:
                calls_in.append(len(batch.calls))
                yield batch

        async for answers in run_batches(read()):
            answers_out.append(len(answers.replies))
            yield answers

    monkeypatch.setattr(servicer, "run_batches", counted)
    async with client(running.address, session=True) as queue:
        submits = [queue_pb2.SubmitRequest(model=CHAT, chat=chat(f"hello {i}"), client_id=f"c{i}") for i in range(16)]
        submits[7].model = "no-such-model"
        got = await asyncio.gather(*(outcome(queue.submit(s)) for s in submits), outcome(queue.get("no-such-request")))
    assert got[7][0] == "NotFound"
    assert got[-1][0] == "NotFound"
    admitted = [g for i, g in enumerate(got[:-1]) if i != 7]
    assert [g["job"]["clientId"] for g in admitted] == [s.client_id for i, s in enumerate(submits) if i != 7]
    assert all(g["job"]["state"] == "QUEUED" for g in admitted)
    assert sum(calls_in) == sum(answers_out) == 17  # every call read and answered once
    assert len(calls_in) < 17  # the calls that waited for the first write left together
    assert len(answers_out) < 17  # as did the answers that finished while one was written


async def test_in_a_batch_each_call_keeps_its_deadline_and_a_withdrawn_acquire_grants_nothing(running: RunningQueue) -> None:
    async with grpc.aio.insecure_channel(running.address) as channel:
        stream: Any = queue_pb2_grpc.QueueServiceStub(channel).SessionBatches()  # type: ignore[call-arg]
        assert ACCEPTED in tuple(await stream.initial_metadata())
        waiting = queue_pb2.AcquireJobRequest(worker_id="w9", models=[CHAT], wait_ms=20_000)
        expires = queue_pb2.AcquireJobRequest(worker_id="w9", models=[OCR], wait_ms=20_000)
        batch = queue_pb2.SessionBatchesRequest()
        batch.calls.add(call_id=1, acquire_job=waiting)
        batch.calls.add(call_id=2, submit=queue_pb2.SubmitRequest(model="no-such-model"))
        batch.calls.add(call_id=3, timeout_ms=200, acquire_job=expires)
        batch.calls.add(call_id=4, get_job=queue_pb2.GetJobRequest(request_id="nope"))
        batch.calls.add(call_id=5, get_job=queue_pb2.GetJobRequest(request_id="nope"))  # a duplicate id is refused below
        batch.calls.add(call_id=5)
        await stream.write(batch)
        replies: dict[int, list[queue_pb2.SessionResponse]] = {}
        while sum(len(r) for r in replies.values()) < 5:
            for reply in (await stream.read()).replies:
                replies.setdefault(reply.call_id, []).append(reply)
        assert 1 not in replies  # still waiting for a grant while the others were answered
        assert replies[2][0].error.code == code_pb2.NOT_FOUND
        assert replies[3][0].error.code == code_pb2.DEADLINE_EXCEEDED
        assert replies[4][0].error.code == code_pb2.NOT_FOUND
        assert sorted(r.error.code for r in replies[5]) == [code_pb2.INVALID_ARGUMENT, code_pb2.NOT_FOUND]
        withdraw = queue_pb2.SessionBatchesRequest()
        withdraw.calls.add(call_id=1, abandon=queue_pb2.SessionAbandon())
        withdraw.calls.add(call_id=6, submit=queue_pb2.SubmitRequest(model=CHAT, chat=chat()))
        await stream.write(withdraw)
        (reply,) = (await stream.read()).replies
        assert reply.call_id == 6
        await asyncio.sleep(1.0)  # past the orphan grace: a live acquire would have been granted the job
        await stream.write(
            queue_pb2.SessionBatchesRequest(
                calls=[
                    queue_pb2.SessionRequest(call_id=7, get_job=queue_pb2.GetJobRequest(request_id=reply.submit.job.request_id))
                ]
            )
        )
        (reply,) = (await stream.read()).replies
        assert reply.get_job.job.state == common_pb2.QUEUED
        await stream.done_writing()
        assert await stream.read() == grpc.aio.EOF  # type: ignore[attr-defined]


async def test_a_queue_restart_fails_the_calls_in_flight_and_the_retried_report_lands(running: RunningQueue) -> None:
    async with client(running.address, session=True) as queue:
        owned = queue_pb2.SubmitRequest(model=CHAT, chat=chat(), owner_id="w1", accept_lease=True)
        first = await queue.submit(owned)
        rid, lease = first.job.request_id, first.lease
        in_flight = asyncio.ensure_future(queue.acquire("w2", 20_000, models=[OCR]))
        await asyncio.sleep(0.2)
        await running.stop()
        with pytest.raises(Unavailable):
            await asyncio.wait_for(in_flight, 5)

        async def report() -> common_pb2.Job:
            # What the router's runner does with a report: retry while the queue is unavailable.
            done = queue_pb2.CompleteJobRequest(lease_id=lease.lease_id, request_id=rid, backend="b1", chat_result=result())
            while True:
                try:
                    return await queue.complete(done)
                except Unavailable:
                    await asyncio.sleep(0.1)

        landing = asyncio.ensure_future(report())
        await asyncio.sleep(0.5)
        assert not landing.done()
        await running.start()
        job = await asyncio.wait_for(landing, 20)
        assert (job.state, job.attempt, job.chat_result.message.content) == (common_pb2.SUCCEEDED, 1, "done")
        assert (await queue.get(rid)).state == common_pb2.SUCCEEDED


async def test_a_graceful_stop_ends_the_streams_once_their_calls_are_answered(running: RunningQueue) -> None:
    async with client(running.address, session=True) as queue:
        owned = queue_pb2.SubmitRequest(model=CHAT, chat=chat(), owner_id="w1", accept_lease=True)
        first = await queue.submit(owned)
        rid, lease = first.job.request_id, first.lease
        waiting = asyncio.ensure_future(queue.acquire("w2", 20_000, models=[OCR]))
        await asyncio.sleep(0.2)
        assert running.server is not None
        assert running.service is not None
        started = time.monotonic()
        running.service.draining()  # what the server's stop sequence calls before its grace period
        stopping = asyncio.ensure_future(running.server.stop(10))
        # The waiting acquire is given up (it grants nothing) and the stream ends: no wait for the grace.
        with pytest.raises(Unavailable):
            await asyncio.wait_for(waiting, 5)
        await asyncio.wait_for(stopping, 5)
        assert time.monotonic() - started < 3
        await running.service.stop()
        running.server = running.service = None
        await running.start()
        # The router's report opens a new stream to the queue that serves now (retrying, as the runner does,
        # while the channel reconnects).
        done = queue_pb2.CompleteJobRequest(lease_id=lease.lease_id, request_id=rid, backend="b1", chat_result=result())
        for _ in range(100):
            try:
                job = await queue.complete(done)
                break
            except Unavailable:
                await asyncio.sleep(0.1)
        assert (job.state, job.chat_result.message.content) == (common_pb2.SUCCEEDED, "done")
