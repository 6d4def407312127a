"""The router's Session multiplexer against a tiny scripted QueueService on a real in-process gRPC server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw_server.runtime.config import ConfigError, parse_config
from aigw_server.runtime.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from aigw_server.runtime.queue_client import QueueClient
from aigw_server.runtime.queue_session import QueueSession

pytestmark = pytest.mark.timeout(30)


def _job_reply(request_id: str) -> queue_pb2.SessionResponse:
    reply = queue_pb2.SessionResponse()
    reply.get_job.job.request_id = request_id
    return reply


class ScriptedQueue(queue_pb2_grpc.QueueServiceServicer):
    """Answers GetJob calls on a Session by the request id: `slow-<ms>` after a delay, `full` with RESOURCE_EXHAUSTED
    and RetryInfo, `bad` with INVALID_ARGUMENT and a field violation, `break` by ending the stream with UNAVAILABLE,
    `hang` never, anything else at once. `refuse` on the server makes every stream end PERMISSION_DENIED."""

    def __init__(self) -> None:
        self.opened = 0
        self.abandoned: list[int] = []
        self.refuse = False
        self.timeouts: list[int] = []

    async def Session(self, request_iterator: Any, context: Any) -> AsyncIterator[queue_pb2.SessionResponse]:
        self.opened += 1
        if self.refuse:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "service 'admin' may not call Session")
        replies: asyncio.Queue[queue_pb2.SessionResponse | None] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()

        async def answer(request: queue_pb2.SessionRequest) -> None:
            rid = request.get_job.request_id
            if rid.startswith("slow-"):
                await asyncio.sleep(int(rid[5:]) / 1000)
            if rid == "hang":
                await asyncio.Event().wait()
            reply = _job_reply(rid)
            if rid == "full":
                reply.error.CopyFrom(status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="model full"))
                reply.error.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2)))
            if rid == "bad":
                reply.error.CopyFrom(status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="request_id: bad"))
                bad = error_details_pb2.BadRequest()
                bad.field_violations.add(field="request_id", description="bad")
                reply.error.details.add().Pack(bad)
            if rid == "gone":
                reply.error.CopyFrom(status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message="lease not held"))
            reply.call_id = request.call_id
            replies.put_nowait(None if rid == "break" else reply)

        async def read() -> None:
            async for request in request_iterator:
                if request.WhichOneof("call") == "abandon":
                    self.abandoned.append(request.call_id)
                    continue
                self.timeouts.append(request.timeout_ms)
                task = asyncio.create_task(answer(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            replies.put_nowait(None)  # the client half-closed: end the stream

        reader = asyncio.create_task(read())
        try:
            while (reply := await replies.get()) is not None:
                yield reply
            await context.abort(grpc.StatusCode.UNAVAILABLE, "queue going away")
        finally:
            reader.cancel()
            for task in tasks:
                task.cancel()


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedQueue, str]]:
    server = grpc.aio.server()
    servicer = ScriptedQueue()  # type: ignore[abstract]  # the generated base declares every RPC abstract
    queue_pb2_grpc.add_QueueServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(0)


@pytest.fixture
async def client(scripted: tuple[ScriptedQueue, str]) -> AsyncIterator[QueueClient]:
    queue = QueueClient.connect(scripted[1])
    yield queue
    await queue.close()


async def test_replies_resolve_their_own_calls_in_whatever_order_they_come(
    client: QueueClient, scripted: tuple[ScriptedQueue, str]
) -> None:
    order: list[str] = []

    async def get(rid: str) -> None:
        job = await client.get(rid)
        assert job.request_id == rid
        order.append(rid)

    await asyncio.gather(get("slow-300"), get("slow-150"), get("now"))
    assert order == ["now", "slow-150", "slow-300"]
    assert scripted[0].opened == 1
    assert all(9_000 < t <= 10_000 for t in scripted[0].timeouts)


async def test_errors_come_out_as_the_domain_errors_a_unary_call_raises(client: QueueClient) -> None:
    with pytest.raises(ResourceExhausted) as full:
        await client.get("full")
    assert (full.value.message, full.value.retry_after) == ("model full", 2.0)
    with pytest.raises(InvalidArgument, match="request_id: bad"):
        await client.get("bad")
    with pytest.raises(FailedPrecondition, match="lease not held"):
        await client.get("gone")
    assert (await client.get("after")).request_id == "after"


async def test_a_broken_stream_fails_every_call_in_flight_and_the_next_call_reopens_it(
    client: QueueClient, scripted: tuple[ScriptedQueue, str]
) -> None:
    in_flight = [asyncio.ensure_future(client.get(rid)) for rid in ("hang", "slow-5000", "hang")]
    await asyncio.sleep(0.1)
    with pytest.raises(Unavailable):
        await client.get("break")
    for call in in_flight:
        with pytest.raises(Unavailable):
            await call
    assert (await client.get("again")).request_id == "again"
    assert scripted[0].opened == 2


async def test_a_call_past_its_deadline_raises_deadline_exceeded_and_is_withdrawn(
    scripted: tuple[ScriptedQueue, str],
) -> None:
    async with grpc.aio.insecure_channel(scripted[1]) as channel:
        session = QueueSession(queue_pb2_grpc.QueueServiceStub(channel).Session)
        with pytest.raises(DeadlineExceeded):
            await session.call("get_job", queue_pb2.GetJobRequest(request_id="hang"), queue_pb2.GetJobResponse, timeout=0.2)
        waiter = asyncio.ensure_future(
            session.call("get_job", queue_pb2.GetJobRequest(request_id="hang"), queue_pb2.GetJobResponse, timeout=10)
        )
        await asyncio.sleep(0.1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        reply = await session.call("get_job", queue_pb2.GetJobRequest(request_id="x"), queue_pb2.GetJobResponse, timeout=5)
        assert reply.job.request_id == "x"
        assert scripted[0].abandoned == [1, 2]
        assert scripted[0].timeouts[:2] == [200, 10_000]
        await session.close()


async def test_calls_beyond_the_in_flight_bound_wait_for_a_slot(scripted: tuple[ScriptedQueue, str]) -> None:
    async with grpc.aio.insecure_channel(scripted[1]) as channel:
        session = QueueSession(queue_pb2_grpc.QueueServiceStub(channel).Session, max_in_flight=2)
        held = [
            asyncio.ensure_future(
                session.call("get_job", queue_pb2.GetJobRequest(request_id="slow-400"), queue_pb2.GetJobResponse, timeout=5)
            )
            for _ in range(2)
        ]
        await asyncio.sleep(0.1)
        with pytest.raises(DeadlineExceeded):
            await session.call("get_job", queue_pb2.GetJobRequest(request_id="now"), queue_pb2.GetJobResponse, timeout=0.1)
        assert len(scripted[0].timeouts) == 2  # the third call never reached the queue
        await asyncio.gather(*held)
        assert (
            await session.call("get_job", queue_pb2.GetJobRequest(request_id="now"), queue_pb2.GetJobResponse, timeout=5)
        ).job.request_id == "now"
        await session.close()


async def test_a_refused_stream_raises_the_refusal_not_unavailable(
    client: QueueClient, scripted: tuple[ScriptedQueue, str]
) -> None:
    scripted[0].refuse = True
    with pytest.raises(PermissionDenied, match="may not call Session"):
        await client.get("x")


class UnaryOnlyQueue(queue_pb2_grpc.QueueServiceServicer):
    """A queue without Session (an older version): GetJob only."""

    async def GetJob(self, request: queue_pb2.GetJobRequest, context: Any) -> queue_pb2.GetJobResponse:
        return _job_reply(request.request_id).get_job


@pytest.mark.parametrize("session", [True, False])
async def test_without_the_session_each_call_is_unary(session: bool) -> None:
    server = grpc.aio.server()
    queue_pb2_grpc.add_QueueServiceServicer_to_server(UnaryOnlyQueue(), server)  # type: ignore[abstract]  # as above
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    queue = QueueClient.connect(f"127.0.0.1:{port}", session=session)
    try:
        assert (await queue.get("r1")).request_id == "r1"
        assert queue.session is None  # switched off, or dropped once the queue answered UNIMPLEMENTED
        assert (await queue.get("r2")).request_id == "r2"
    finally:
        await queue.close()
        await server.stop(0)


def test_the_session_is_on_by_default_and_switched_off_in_the_routing_section() -> None:
    assert parse_config({}, env={}).routing.queue_session is True
    assert parse_config({"routing": {"queue_session": False}}, env={}).routing.queue_session is False
    with pytest.raises(ConfigError, match="queue_session"):
        parse_config({"routing": {"queue_session": "sometimes"}}, env={})
