"""QueueService.Session and SessionBatches: one router's job calls over one stream, each run exactly as its unary RPC runs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from prometheus_client import Counter, Histogram

from aigw.queue.v1 import queue_pb2
from aigw_server.runtime.errors import GatewayError
from aigw_server.runtime.interceptors import RPC_SECONDS, RPC_TOTAL
from aigw_server.runtime.logs import request_id_var
from aigw_server.runtime.rpc_errors import internal_status_proto, status_proto

if TYPE_CHECKING:
    from aigw_server.queue.servicer import JobCalls

log = logging.getLogger("aigw.rpc")

MAX_IN_FLIGHT = 1024
"""Calls one stream may have running; the queue reads no further call from it until one ends (backpressure)."""

MAX_BATCH_REPLIES = 64
"""Answers one SessionBatchesResponse carries at most."""
MAX_BATCH_BYTES = 1 << 20
"""Size after which a SessionBatchesResponse takes no further answer (one larger answer travels alone);
well below the channels' 32 MiB message limit (aigw_server.runtime.channels)."""

M = TypeVar("M")

# Each call takes its own request type; a Callable over Message would refuse them (parameters are contravariant).
Operation = Callable[[Any], Awaitable[Message]]


class CallMetrics:
    """The RPC counters and timers of Session calls under their unary RPC's names; each label set looked up once."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, int], Counter] = {}
        self.timers: dict[str, Histogram] = {}

    def observe(self, name: str, code: int, seconds: float) -> None:
        counter = self.counters.get((name, code))
        if counter is None:
            counter = self.counters[(name, code)] = RPC_TOTAL.labels("queue", name, code_pb2.Code.Name(code))
        counter.inc()
        timer = self.timers.get(name)
        if timer is None:
            timer = self.timers[name] = RPC_SECONDS.labels("queue", name)
        timer.observe(seconds)


def operations(calls: JobCalls) -> dict[str, tuple[str, Operation]]:
    """The `SessionRequest.call` fields, each with its unary RPC's name and the one implementation both use."""
    return {
        "submit": ("Submit", calls.submit),
        "get_job": ("GetJob", calls.get_job),
        "cancel_job": ("CancelJob", calls.cancel_job),
        "acquire_job": ("AcquireJob", calls.acquire_job),
        "heartbeat": ("Heartbeat", calls.heartbeat),
        "complete_job": ("CompleteJob", calls.complete_job),
        "fail_job": ("FailJob", calls.fail_job),
        "release_job": ("ReleaseJob", calls.release_job),
    }


def _error(call_id: int, status: status_pb2.Status) -> queue_pb2.SessionResponse:
    return queue_pb2.SessionResponse(call_id=call_id, error=status)


class SessionServicer:
    """Runs the calls of Session streams; the authorization interceptor has admitted the stream's caller."""

    def __init__(self, calls: JobCalls, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.operations = operations(calls)
        self.metrics = CallMetrics()
        self.max_in_flight = max_in_flight
        self.streams: set[_Stream] = set()
        self.draining = False

    def drain(self) -> None:
        """The server is stopping: every stream takes no further call, answers those it runs, then ends.

        A router sees its stream end, fails what it sent meanwhile as UNAVAILABLE (never read, so never
        admitted) and opens a new stream to whichever queue serves next.
        """
        self.draining = True
        for stream in self.streams:
            stream.stop_reading()

    async def run(self, requests: AsyncIterator[queue_pb2.SessionRequest]) -> AsyncIterator[queue_pb2.SessionResponse]:
        """Answers the stream's calls as they finish; ends once the caller half-closed and every call was answered.

        When the stream breaks (the caller went away, the server stops), every call still running is
        cancelled, as its unary call would be.
        """
        stream = self._open(requests, _one)
        try:
            while (reply := await stream.replies.get()) is not None:
                yield reply
            await stream.ended()
        finally:
            self._close(stream)

    async def run_batches(
        self, batches: AsyncIterator[queue_pb2.SessionBatchesRequest]
    ) -> AsyncIterator[queue_pb2.SessionBatchesResponse]:
        """`run` with several calls per message: the answers that wait while one message is written leave together.

        A lone answer leaves at once; those that finish while the previous message is being written
        go in the next one (at most MAX_BATCH_REPLIES, and no more once MAX_BATCH_BYTES is passed).
        """
        stream = self._open(batches, _calls)
        replies = stream.replies
        held: queue_pb2.SessionResponse | None = None
        try:
            while (reply := held if held is not None else await replies.get()) is not None:
                message = queue_pb2.SessionBatchesResponse()
                message.replies.append(reply)
                held = None
                size = 0
                while not replies.empty() and len(message.replies) < MAX_BATCH_REPLIES:
                    held = replies.get_nowait()
                    if held is None:  # the end: send what was gathered, then finish
                        replies.put_nowait(None)
                        break
                    size = size or reply.ByteSize()
                    size += held.ByteSize()
                    if size > MAX_BATCH_BYTES:
                        break
                    message.replies.append(held)
                    held = None
                yield message
            await stream.ended()
        finally:
            self._close(stream)

    def _open(self, messages: AsyncIterator[M], calls_of: Callable[[M], Iterable[queue_pb2.SessionRequest]]) -> _Stream:
        stream = _Stream(self.operations, self.metrics, self.max_in_flight)
        stream.reader = asyncio.create_task(stream.read(messages, calls_of))
        self.streams.add(stream)
        if self.draining:
            stream.stop_reading()
        return stream

    def _close(self, stream: _Stream) -> None:
        self.streams.discard(stream)
        if stream.reader is not None:
            stream.reader.cancel()
        stream.cancel_all()


def _one(request: queue_pb2.SessionRequest) -> tuple[queue_pb2.SessionRequest]:
    return (request,)


def _calls(batch: queue_pb2.SessionBatchesRequest) -> Iterable[queue_pb2.SessionRequest]:
    return batch.calls


class _Stream:
    """The calls in flight on one Session stream and the replies waiting to be sent."""

    def __init__(self, ops: dict[str, tuple[str, Operation]], metrics: CallMetrics, max_in_flight: int) -> None:
        self.ops = ops
        self.metrics = metrics
        self.slots = asyncio.Semaphore(max_in_flight)
        self.replies: asyncio.Queue[queue_pb2.SessionResponse | None] = asyncio.Queue()
        self.running: dict[int, asyncio.Task[None]] = {}
        self.waits: set[int] = set()
        self.reader: asyncio.Task[None] | None = None
        self.draining = False

    async def ended(self) -> None:
        """Waits for the reader: the caller half-closed (or the server drains) and every call was answered."""
        if self.reader is not None:
            await self.reader

    def stop_reading(self) -> None:
        """Reads no further call; the stream ends once the calls it runs are answered.

        An AcquireJob still waiting for a grant is abandoned (it grants nothing), as its caller would.
        """
        if not self.draining and self.reader is not None:
            self.draining = True
            self.reader.cancel()
            for call_id in self.waits:
                self.running[call_id].cancel()

    async def read(self, messages: AsyncIterator[M], calls_of: Callable[[M], Iterable[queue_pb2.SessionRequest]]) -> None:
        """Starts each call of each message read (`calls_of` says which calls a message carries) within the slots."""
        try:
            try:
                async for message in messages:
                    for request in calls_of(message):
                        which = request.WhichOneof("call")
                        if which == "abandon":
                            task = self.running.get(request.call_id)
                            if task is not None:
                                task.cancel()
                            continue
                        await self.slots.acquire()
                        self._start(request, which)
            except asyncio.CancelledError:
                if not self.draining:
                    raise
            while self.running:
                await asyncio.wait(list(self.running.values()))
        finally:
            self.replies.put_nowait(None)

    def _start(self, request: queue_pb2.SessionRequest, which: str | None) -> None:
        call_id = request.call_id
        if which is None or call_id in self.running:
            self.slots.release()
            why = "call: required (one of the job calls)" if which is None else f"call_id: {call_id} is already in flight"
            self.replies.put_nowait(_error(call_id, status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=why)))
            return
        self.running[call_id] = asyncio.create_task(self._run(request, which))
        if which == "acquire_job":
            self.waits.add(call_id)

    async def _run(self, request: queue_pb2.SessionRequest, which: str) -> None:
        call_id = request.call_id
        name, operation = self.ops[which]
        message = getattr(request, which)
        request_id_var.set(getattr(message, "request_id", ""))
        start = time.perf_counter()
        try:
            reply = await self._answer(request, which, operation, message)
            self.replies.put_nowait(reply)
            self.metrics.observe(name, reply.error.code if reply.HasField("error") else code_pb2.OK, time.perf_counter() - start)
        finally:
            del self.running[call_id]
            self.waits.discard(call_id)
            self.slots.release()

    @staticmethod
    async def _answer(
        request: queue_pb2.SessionRequest, which: str, operation: Operation, message: Message
    ) -> queue_pb2.SessionResponse:
        call_id = request.call_id
        deadline = asyncio.timeout(request.timeout_ms / 1000 if request.timeout_ms else None)
        try:
            async with deadline:
                result = await operation(message)
        except GatewayError as exc:
            return _error(call_id, status_proto(exc))
        except TimeoutError:
            if not deadline.expired():
                log.error("unhandled error in Session.%s", which, exc_info=True)
                return _error(call_id, internal_status_proto())
            return _error(call_id, status_pb2.Status(code=code_pb2.DEADLINE_EXCEEDED, message="Deadline Exceeded"))
        except Exception:  # the stream's boundary, as ErrorMappingInterceptor is the unary one's
            log.error("unhandled error in Session.%s", which, exc_info=True)
            return _error(call_id, internal_status_proto())
        reply = queue_pb2.SessionResponse(call_id=call_id)
        getattr(reply, which).CopyFrom(result)
        return reply

    def cancel_all(self) -> None:
        for task in self.running.values():
            task.cancel()
