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
    GatewayError,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from aigw_server.runtime.queue_client import QueueClient
from aigw_server.runtime.queue_session import ACCEPTED, MAX_BATCH_BYTES, MAX_BATCH_CALLS, MAX_IN_FLIGHT, QueueSession

pytestmark = pytest.mark.timeout(30)


def _job_reply(request_id: str) -> queue_pb2.SessionResponse:
    reply = queue_pb2.SessionResponse()
    reply.get_job.job.request_id = request_id
    return reply


class ScriptedQueue(queue_pb2_grpc.QueueServiceServicer):
    """Answers GetJob calls on a Session or SessionBatches stream by the request id: `slow-<ms>` after a delay,
    `full` with RESOURCE_EXHAUSTED and RetryInfo, `bad` with INVALID_ARGUMENT and a field violation, `break` by
    ending the stream with UNAVAILABLE, `hang` never, anything else at once. `refuse` on the server makes every
    stream end PERMISSION_DENIED. On SessionBatches it sends every answer waiting as one message."""

    def __init__(self) -> None:
        self.opened = 0
        self.abandoned: list[int] = []
        self.refuse = False
        self.timeouts: list[int] = []
        self.seen: list[str] = []
        self.messages: list[queue_pb2.SessionBatchesRequest] = []
        self.answer_messages: list[int] = []

    async def Session(self, request_iterator: Any, context: Any) -> AsyncIterator[queue_pb2.SessionResponse]:
        async for replies in self._serve(request_iterator, context, lambda request: (request,)):
            for reply in replies:
                yield reply

    async def SessionBatches(self, request_iterator: Any, context: Any) -> AsyncIterator[queue_pb2.SessionBatchesResponse]:
        if not self.refuse:  # as the queue does (its authorization check comes first): the router writes after these
            await context.send_initial_metadata((ACCEPTED,))

        def calls(message: queue_pb2.SessionBatchesRequest) -> Any:
            self.messages.append(message)
            return message.calls

        async for replies in self._serve(request_iterator, context, calls):
            self.answer_messages.append(len(replies))
            yield queue_pb2.SessionBatchesResponse(replies=replies)

    async def _serve(self, request_iterator: Any, context: Any, calls_of: Any) -> AsyncIterator[list[queue_pb2.SessionResponse]]:
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
            async for message in request_iterator:
                for request in calls_of(message):
                    if request.WhichOneof("call") == "abandon":
                        self.abandoned.append(request.call_id)
                        continue
                    self.timeouts.append(request.timeout_ms)
                    self.seen.append(request.get_job.request_id)
                    task = asyncio.create_task(answer(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            replies.put_nowait(None)  # the client half-closed: end the stream

        reader = asyncio.create_task(read())
        try:
            while (reply := await replies.get()) is not None:
                waiting, ended = [reply], False
                while not replies.empty():
                    more = replies.get_nowait()
                    if more is None:
                        ended = True
                        break
                    waiting.append(more)
                yield waiting
                if ended:
                    break
            await context.abort(grpc.StatusCode.UNAVAILABLE, "queue going away")
        finally:
            reader.cancel()
            for task in tasks:
                task.cancel()


def _session_only(servicer: ScriptedQueue, server: grpc.aio.Server) -> None:
    """Registers Session alone, as a queue built before SessionBatches existed did (the rest answers UNIMPLEMENTED)."""
    session = grpc.stream_stream_rpc_method_handler(
        servicer.Session,
        request_deserializer=queue_pb2.SessionRequest.FromString,
        response_serializer=queue_pb2.SessionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("aigw.queue.v1.QueueService", {"Session": session}),))


@pytest.fixture(params=["batches", "session only"])
async def scripted(request: pytest.FixtureRequest) -> AsyncIterator[tuple[ScriptedQueue, str]]:
    """The scripted queue, as a current one (SessionBatches and Session) and as an older one (Session only)."""
    server = grpc.aio.server()
    servicer = ScriptedQueue()  # type: ignore[abstract]  # the generated base declares every RPC abstract
    if request.param == "batches":
        queue_pb2_grpc.add_QueueServiceServicer_to_server(servicer, server)
    else:
        _session_only(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(0)


def _session(channel: grpc.aio.Channel, max_in_flight: int = MAX_IN_FLIGHT) -> QueueSession:
    stub = queue_pb2_grpc.QueueServiceStub(channel)
    return QueueSession(stub.Session, stub.SessionBatches, max_in_flight)


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
        session = _session(channel)
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
        session = _session(channel, max_in_flight=2)
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


def _get(session: QueueSession, rid: str, timeout: float = 5) -> Any:
    return session.call("get_job", queue_pb2.GetJobRequest(request_id=rid), queue_pb2.GetJobResponse, timeout)


async def _outcome(call: Any) -> str:
    try:
        return str((await call).job.request_id)
    except GatewayError as exc:
        return type(exc).__name__


@pytest.fixture
async def batching() -> AsyncIterator[tuple[ScriptedQueue, QueueSession]]:
    """A session to the scripted queue that implements SessionBatches."""
    server = grpc.aio.server()
    servicer = ScriptedQueue()  # type: ignore[abstract]  # as above
    queue_pb2_grpc.add_QueueServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        session = _session(channel)
        yield servicer, session
        await session.close()
    await server.stop(0)


async def test_calls_that_wait_for_the_writer_leave_together_and_each_gets_its_own_answer(
    batching: tuple[ScriptedQueue, QueueSession],
) -> None:
    queue, session = batching
    rids = [("bad", "full", "slow-50", "gone")[i % 4] if i % 3 == 0 else f"r{i}" for i in range(60)]
    got = await asyncio.gather(*(_outcome(_get(session, rid)) for rid in rids))
    errors = {"bad": "InvalidArgument", "full": "ResourceExhausted", "gone": "FailedPrecondition"}
    assert got == [errors.get(rid, rid) for rid in rids]  # each answer reached its own call, errors included
    sizes = [len(m.calls) for m in queue.messages]
    assert sum(sizes) == 60
    assert len(sizes) <= 3  # calls made while the flusher had not yet written, or was writing, left together
    assert len(queue.answer_messages) < 60
    assert isinstance(queue.messages[0].calls[0], queue_pb2.SessionRequest)
    assert [c.get_job.request_id for m in queue.messages for c in m.calls] == rids  # in the order they were made


async def test_a_lone_call_is_written_at_once_by_the_flusher(batching: tuple[ScriptedQueue, QueueSession]) -> None:
    queue, session = batching
    for i in range(3):
        call = asyncio.ensure_future(_get(session, f"one-{i}"))
        await asyncio.sleep(0)  # the caller's step: it hands its call to the flusher and waits for the answer
        assert session.stream is not None
        flusher = session.stream.flusher
        assert flusher is not None
        await asyncio.sleep(0)  # the flusher's first step: the write is under way, no timer in between
        assert session.stream.writing.locked()
        assert (await call).job.request_id == f"one-{i}"
    assert [len(m.calls) for m in queue.messages] == [1, 1, 1]


async def test_a_message_carries_at_most_64_calls_or_about_a_mebibyte(batching: tuple[ScriptedQueue, QueueSession]) -> None:
    queue, session = batching
    await asyncio.gather(*(_get(session, f"r{i}") for i in range(3 * MAX_BATCH_CALLS)))
    assert max(len(m.calls) for m in queue.messages) == MAX_BATCH_CALLS
    queue.messages.clear()
    big = [f"big{i}-" + "x" * 300_000 for i in range(8)]
    got = await asyncio.gather(*(_get(session, rid) for rid in ["first", *big, "y" * (2 * MAX_BATCH_BYTES)]))
    assert [g.job.request_id for g in got][1:-1] == big
    assert len(queue.messages) > 3
    for message in queue.messages:
        assert len(message.calls) == 1 or message.ByteSize() <= MAX_BATCH_BYTES + 1024


async def test_a_withdrawn_call_is_dropped_before_its_write_and_abandoned_after_it(
    batching: tuple[ScriptedQueue, QueueSession],
) -> None:
    queue, session = batching
    first = asyncio.ensure_future(_get(session, "slow-100"))
    await asyncio.sleep(0)  # its write is under way: the next calls queue behind it
    dropped = asyncio.ensure_future(_get(session, "never-sent"))
    expires = asyncio.ensure_future(_get(session, "hang", timeout=0.3))
    kept = asyncio.ensure_future(_get(session, "kept"))
    await asyncio.sleep(0)
    dropped.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dropped
    with pytest.raises(DeadlineExceeded):
        await expires
    assert (await kept).job.request_id == "kept"
    assert (await first).job.request_id == "slow-100"
    await asyncio.sleep(0.1)
    assert "never-sent" not in queue.seen  # withdrawn while it waited for the writer: never reached the queue
    assert queue.abandoned == [3]  # the expired call had been written: the queue was told to stop it
    assert [c.get_job.request_id for c in queue.messages[1].calls] == ["hang", "kept"]


async def test_against_a_queue_without_session_batches_each_stream_falls_back_and_asks_again_after_a_break() -> None:
    server = grpc.aio.server()
    servicer = ScriptedQueue()  # type: ignore[abstract]  # as above
    _session_only(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            session = _session(channel)
            got = await asyncio.gather(*(_outcome(_get(session, rid)) for rid in ["a", "bad", "b", "slow-20"]))
            assert got == ["a", "InvalidArgument", "b", "slow-20"]
            assert session.batches is False  # remembered for this connection: the next calls go straight to Session
            assert (await _get(session, "c")).job.request_id == "c"
            assert servicer.opened == 1
            assert servicer.seen == ["a", "bad", "b", "slow-20", "c"]  # each call ran once
            with pytest.raises(Unavailable):
                await _get(session, "break")
            assert (await _get(session, "d")).job.request_id == "d"  # asked SessionBatches again, then Session
            assert servicer.opened == 2
            await session.close()
    finally:
        await server.stop(0)


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


async def test_a_caller_cancelled_while_its_call_is_written_leaves_the_stream_to_the_others(
    batching: tuple[ScriptedQueue, QueueSession],
) -> None:
    # grpcio cancels the whole stream when the task awaiting one of its writes is cancelled; a client that
    # goes away must cost its own call only, never the calls of others on the same stream.
    queue, session = batching
    assert (await _get(session, "warm")).job.request_id == "warm"
    survivor = asyncio.ensure_future(_get(session, "slow-300"))
    await asyncio.sleep(0.05)
    for i in range(5):
        victim = asyncio.ensure_future(_get(session, f"big{i}-" + "x" * (3 * MAX_BATCH_BYTES)))
        await asyncio.sleep(0)  # the call is being written (a large message takes a while)
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
    assert (await survivor).job.request_id == "slow-300"
    assert (await _get(session, "after")).job.request_id == "after"
    assert queue.opened == 1
