"""The client end of QueueService.Session: many concurrent job calls multiplexed over one long-lived stream.

Each call gets a call id and a future; the stream's replies resolve the futures in whatever order
they come. The stream is opened by the first call and again by the first call after it broke. A
broken stream fails every call in flight with UNAVAILABLE (what a unary call gets when the queue
goes away), so the callers' retry paths apply unchanged.

A call finding no write under way is written at once, alone; calls that come while a write is
under way wait in the outbox and leave together, in one message, as soon as it ends (no timer).
Every write is made by the stream's flusher task, never by a caller: grpcio cancels the whole
stream when a task awaiting one of its writes is cancelled, and a caller is cancelled whenever its
client goes away.
That needs SessionBatches (several calls per message); the stream tries it first and falls back to
Session, one call per message, when the queue answers UNIMPLEMENTED (an older queue), asking again
after the next break (a reconnect may reach a newer one).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Generic, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message

from aigw.queue.v1 import queue_pb2
from aigw_server.runtime.errors import DeadlineExceeded, GatewayError, Unavailable, Unimplemented
from aigw_server.runtime.rpc_errors import from_rpc_error, from_status_proto

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 256
"""Calls one client may have in flight on its stream; more wait for a slot (within their deadline)."""

MAX_BATCH_CALLS = 64
"""Calls one SessionBatchesRequest carries at most."""
MAX_BATCH_BYTES = 1 << 20
"""Size after which a SessionBatchesRequest takes no further call (one larger call travels alone); well
below the channels' 32 MiB message limit (aigw_server.runtime.channels)."""

# Quoted: grpc's aio classes are not subscriptable at run time.
OpenStream: TypeAlias = "grpc.aio.StreamStreamMultiCallable[queue_pb2.SessionRequest, queue_pb2.SessionResponse]"
OpenBatches: TypeAlias = "grpc.aio.StreamStreamMultiCallable[queue_pb2.SessionBatchesRequest, queue_pb2.SessionBatchesResponse]"
R = TypeVar("R", bound=Message)
Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
Outgoing: TypeAlias = tuple[int, int, str, Message]
"""A call waiting to be written: call id, timeout in ms, its `SessionRequest.call` field, its message."""
ACCEPTED = ("aigw-session-batches", "accepted")
"""The response header with which the queue accepts a SessionBatches stream, before any call is written."""
ABANDON = queue_pb2.SessionAbandon()
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]  # grpc-stubs lacks it

CLOSE_WAIT_SECONDS = 1.0
"""How long closing waits for the queue to answer the calls still in flight before it cancels the stream."""

REFUSALS = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED})
"""Stream errors that are the queue's answer to opening it, passed on as such; any other break is UNAVAILABLE."""


class QueueSession:
    """One process's Session stream to the queue, opened lazily and reopened after a break."""

    def __init__(
        self, open_stream: OpenStream, open_batches: OpenBatches | None = None, max_in_flight: int = MAX_IN_FLIGHT
    ) -> None:
        self.open_stream = open_stream
        self.open_batches = open_batches
        self.batches = open_batches is not None
        """Whether the next stream opened is a SessionBatches one."""
        self.slots = asyncio.Semaphore(max_in_flight)
        self.ids = itertools.count(1)
        self.stream: _CallStream | _BatchStream | None = None

    async def call(self, field: str, request: Message, reply_type: type[R], timeout: float) -> R:
        """Sends `request` as the `SessionRequest.<field>` call and returns the reply's `reply_type` message of that field.

        Raises the domain error the unary RPC would raise: the queue's answer, DEADLINE_EXCEEDED after
        `timeout` seconds, UNAVAILABLE when the stream breaks first.
        """
        call_id = next(self.ids)
        try:
            async with asyncio.timeout(timeout):
                async with self.slots:
                    reply = await self._send(call_id, field, request, timeout)
        except TimeoutError:
            raise DeadlineExceeded("Deadline Exceeded") from None
        if reply.HasField("error"):
            raise from_status_proto(reply.error)
        answer = getattr(reply, field)
        assert isinstance(answer, reply_type), f"SessionResponse.{field} is not a {reply_type.__name__}"
        return answer

    async def _send(self, call_id: int, field: str, request: Message, timeout: float) -> queue_pb2.SessionResponse:
        stream = self._current()
        try:
            return await stream.send(call_id, field, request, timeout)
        except Unimplemented:
            if not isinstance(stream, _BatchStream):
                raise
            # An older queue refused the stream before any call was written (_BatchStream._accept): resend on Session.
            if self.batches:
                log.info("the queue does not implement SessionBatches; using Session")
                self.batches = False
            return await self._current().send(call_id, field, request, timeout)

    def _current(self) -> _CallStream | _BatchStream:
        stream = self.stream
        if stream is not None and stream.broken is None:
            return stream
        if stream is not None and not isinstance(stream.broken, Unimplemented):
            self.batches = self.open_batches is not None  # a new connection may reach a newer queue: ask again
        if self.batches and self.open_batches is not None:
            self.stream = _BatchStream(self.open_batches(None))  # no request iterator: calls are written
        else:
            self.stream = _CallStream(self.open_stream(None))
        return self.stream

    async def close(self) -> None:
        """Half-closes the stream (the queue answers what is in flight) and waits for it to end."""
        if self.stream is not None:
            await self.stream.close()
            self.stream = None


class _Stream(ABC, Generic[Req, Resp]):
    """One opened stream: the futures of its calls in flight, the calls waiting to be written, its reader.

    A call finding the stream idle starts the flusher task, which writes it at once; calls that come
    meanwhile wait in `queued` and the flusher writes them next, in as few messages as the wire form
    allows, until none wait. Callers only wait for their answers (see the module's docstring).
    """

    def __init__(self, call: grpc.aio.StreamStreamCall[Req, Resp]) -> None:
        self.call = call
        self.pending: dict[int, asyncio.Future[queue_pb2.SessionResponse]] = {}
        self.broken: GatewayError | None = None
        self.closing = False
        # One write at a time on a gRPC stream: the flusher's, or close's half-close.
        self.writing = asyncio.Lock()
        self.queued: list[Outgoing] = []
        self.flusher: asyncio.Task[None] | None = None
        """The task writing, or about to write, what is queued; None while the stream is idle."""
        self.accepted = False
        """Whether the queue's answer to opening the stream was seen (see `_accept`)."""
        self.reader = asyncio.create_task(self._read())

    async def _accept(self) -> None:
        """Waits, before the first write, until writing is known to be safe (nothing to wait for on Session)."""

    @abstractmethod
    def _messages(self, calls: list[Outgoing]) -> Iterable[Req]:
        """The messages that carry `calls`, in order."""

    @abstractmethod
    def _replies(self, message: object) -> Iterable[queue_pb2.SessionResponse]:
        """The answers a message read carries."""

    def _take(self) -> list[Outgoing]:
        """The queued calls the next write sends (all of them unless the wire form bounds a message)."""
        taken = self.queued
        self.queued = []
        return taken

    async def send(self, call_id: int, field: str, request: Message, timeout: float) -> queue_pb2.SessionResponse:
        if self.broken is not None:
            raise type(self.broken)(self.broken.message, retry_after=self.broken.retry_after)
        future: asyncio.Future[queue_pb2.SessionResponse] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        outgoing: Outgoing = (call_id, max(1, int(timeout * 1000)), field, request)
        try:
            self._enqueue(outgoing)
            return await future
        except asyncio.CancelledError:
            if self.broken is None:
                self._withdraw(outgoing)
            raise
        finally:
            self.pending.pop(call_id, None)

    def _enqueue(self, outgoing: Outgoing) -> None:
        """Queues a call for the flusher, starting it when the stream is idle."""
        self.queued.append(outgoing)
        if self.flusher is None:
            self.flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self.queued and self.broken is None:
                await self._write(self._take())
        finally:
            self.queued.clear()  # empty, or the stream broke and failed their calls
            self.flusher = None

    def _withdraw(self, outgoing: Outgoing) -> None:
        """The caller stopped waiting: a call still queued is dropped, one already written is abandoned."""
        for i, queued in enumerate(self.queued):
            if queued is outgoing:
                del self.queued[i]
                return
        self._enqueue((outgoing[0], 0, "abandon", ABANDON))

    async def _write(self, calls: list[Outgoing]) -> None:
        try:
            async with self.writing:
                if not self.accepted:
                    await self._accept()
                    self.accepted = True
                for message in self._messages(calls):
                    await self.call.write(message)
        except grpc.aio.AioRpcError as exc:  # the stream ended before or under the write
            self._break(_stream_error(exc))
        except asyncio.InvalidStateError:  # half-closed by close, or ended: then the reader reports how
            if self.closing:
                self._break(Unavailable("the queue session was closed"))

    async def _read(self) -> None:
        try:
            while (message := await self.call.read()) is not EOF:
                pending = self.pending
                for reply in self._replies(message):
                    future = pending.get(reply.call_id)
                    if future is not None and not future.done():
                        future.set_result(reply)
            self._break(Unavailable("the queue ended the session; try again", retry_after=0.1))
        except grpc.aio.AioRpcError as exc:
            self._break(_stream_error(exc))
        except asyncio.CancelledError:
            self._break(Unavailable("the queue session was closed"))
            raise

    def _break(self, error: GatewayError) -> None:
        if self.broken is not None:
            return
        if not self.closing and not isinstance(error, Unimplemented):
            log.warning("queue session ended", extra={"error": error.message, "in_flight": len(self.pending)})
        self.broken = error
        for future in self.pending.values():
            if not future.done():
                future.set_exception(type(error)(error.message, retry_after=error.retry_after))

    async def close(self) -> None:
        self.closing = True
        try:
            async with self.writing:
                if self.broken is None:
                    await self.call.done_writing()
            await asyncio.wait_for(asyncio.shield(self.reader), timeout=CLOSE_WAIT_SECONDS)
        except (TimeoutError, grpc.aio.AioRpcError, asyncio.InvalidStateError):
            self.call.cancel()
            self.reader.cancel()


class _CallStream(_Stream[queue_pb2.SessionRequest, queue_pb2.SessionResponse]):
    """A Session stream: one call per message."""

    def _messages(self, calls: list[Outgoing]) -> Iterable[queue_pb2.SessionRequest]:
        for call_id, timeout_ms, field, request in calls:
            message = queue_pb2.SessionRequest(call_id=call_id, timeout_ms=timeout_ms)
            getattr(message, field).CopyFrom(request)
            yield message

    def _replies(self, message: object) -> Iterable[queue_pb2.SessionResponse]:
        assert isinstance(message, queue_pb2.SessionResponse)
        return (message,)


class _BatchStream(_Stream[queue_pb2.SessionBatchesRequest, queue_pb2.SessionBatchesResponse]):
    """A SessionBatches stream: the calls written together in one message, within MAX_BATCH_CALLS and MAX_BATCH_BYTES."""

    async def _accept(self) -> None:
        """Waits for the queue's response headers: ACCEPTED, sent as soon as it accepts the stream, or a refusal.

        An older queue refuses the unknown method (UNIMPLEMENTED), and the authorization check may refuse
        the caller; a write racing a refusal would end the call INTERNAL in grpcio, hiding it. Without
        ACCEPTED the stream is over: this waits for its status, which the reader then reports as it came.
        """
        headers = await self.call.initial_metadata()
        if ACCEPTED not in tuple(headers or ()):
            await self.call.code()

    def _messages(self, calls: list[Outgoing]) -> Iterable[queue_pb2.SessionBatchesRequest]:
        batch = queue_pb2.SessionBatchesRequest()
        add = batch.calls.add
        for call_id, timeout_ms, field, request in calls:
            getattr(add(call_id=call_id, timeout_ms=timeout_ms), field).CopyFrom(request)
        return (batch,)

    def _replies(self, message: object) -> Iterable[queue_pb2.SessionResponse]:
        assert isinstance(message, queue_pb2.SessionBatchesResponse)
        return message.replies

    def _take(self) -> list[Outgoing]:
        queued = self.queued
        if len(queued) == 1:
            return super()._take()
        size = count = 0
        for _, _, _, request in queued:
            size += request.ByteSize()
            if count and size > MAX_BATCH_BYTES:
                break
            count += 1
            if count == MAX_BATCH_CALLS:
                break
        taken = queued[:count]
        del queued[:count]
        return taken


def _stream_error(exc: grpc.aio.AioRpcError) -> GatewayError:
    """What the calls in flight fail with when the stream ends: the queue's refusal as such, any other end UNAVAILABLE."""
    if exc.code() in REFUSALS:
        return from_rpc_error(exc)
    return Unavailable(f"queue session broke: {exc.details()}")
