"""The client end of QueueService.Session: many concurrent job calls multiplexed over one long-lived stream.

Each call gets a call id and a future; the stream's replies resolve the futures in whatever order
they come. The stream is opened by the first call and again by the first call after it broke. A
broken stream fails every call in flight with UNAVAILABLE (what a unary call gets when the queue
goes away), so the callers' retry paths apply unchanged.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message

from aigw.queue.v1 import queue_pb2
from aigw_server.runtime.errors import DeadlineExceeded, GatewayError, Unavailable
from aigw_server.runtime.rpc_errors import from_rpc_error, from_status_proto

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 256
"""Calls one client may have in flight on its stream; more wait for a slot (within their deadline)."""

# Quoted: grpc's aio classes are not subscriptable at run time.
OpenStream: TypeAlias = "grpc.aio.StreamStreamMultiCallable[queue_pb2.SessionRequest, queue_pb2.SessionResponse]"
SessionCall: TypeAlias = "grpc.aio.StreamStreamCall[queue_pb2.SessionRequest, queue_pb2.SessionResponse]"
R = TypeVar("R", bound=Message)
ABANDON = queue_pb2.SessionAbandon()
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]  # grpc-stubs lacks it

CLOSE_WAIT_SECONDS = 1.0
"""How long closing waits for the queue to answer the calls still in flight before it cancels the stream."""

REFUSALS = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED})
"""Stream errors that are the queue's answer to opening it, passed on as such; any other break is UNAVAILABLE."""


class QueueSession:
    """One process's Session stream to the queue, opened lazily and reopened after a break."""

    def __init__(self, open_stream: OpenStream, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.open_stream = open_stream
        self.slots = asyncio.Semaphore(max_in_flight)
        self.ids = itertools.count(1)
        self.stream: _Stream | None = None

    async def call(self, field: str, request: Message, reply_type: type[R], timeout: float) -> R:
        """Sends `request` as the `SessionRequest.<field>` call and returns the reply's `reply_type` message of that field.

        Raises the domain error the unary RPC would raise: the queue's answer, DEADLINE_EXCEEDED after
        `timeout` seconds, UNAVAILABLE when the stream breaks first.
        """
        call_id = next(self.ids)
        try:
            async with asyncio.timeout(timeout):
                async with self.slots:
                    reply = await self._current().send(call_id, field, request, timeout)
        except TimeoutError:
            raise DeadlineExceeded("Deadline Exceeded") from None
        if reply.HasField("error"):
            raise from_status_proto(reply.error)
        answer = getattr(reply, field)
        assert isinstance(answer, reply_type), f"SessionResponse.{field} is not a {reply_type.__name__}"
        return answer

    def _current(self) -> _Stream:
        if self.stream is None or self.stream.broken is not None:
            self.stream = _Stream(self.open_stream)
        return self.stream

    async def close(self) -> None:
        """Half-closes the stream (the queue answers what is in flight) and waits for it to end."""
        if self.stream is not None:
            await self.stream.close()
            self.stream = None


class _Stream:
    """One opened Session call: the futures of its calls in flight, its reader; callers write their own messages."""

    def __init__(self, open_stream: OpenStream) -> None:
        self.pending: dict[int, asyncio.Future[queue_pb2.SessionResponse]] = {}
        self.broken: GatewayError | None = None
        self.closing = False
        # One write at a time on a gRPC stream; the lock is free (no suspension) unless another write is under way.
        self.writing = asyncio.Lock()
        self.abandons: set[asyncio.Task[None]] = set()
        self.call: SessionCall = open_stream(None)  # no request iterator: callers write their messages
        self.reader = asyncio.create_task(self._read())

    async def _write(self, message: queue_pb2.SessionRequest) -> None:
        try:
            async with self.writing:
                await self.call.write(message)
        except grpc.aio.AioRpcError as exc:  # the stream ended before or under the write
            self._break(_stream_error(exc))
        except asyncio.InvalidStateError:  # closed meanwhile
            self._break(Unavailable("the queue session was closed"))

    async def send(self, call_id: int, field: str, request: Message, timeout: float) -> queue_pb2.SessionResponse:
        if self.broken is not None:
            raise type(self.broken)(self.broken.message, retry_after=self.broken.retry_after)
        future: asyncio.Future[queue_pb2.SessionResponse] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        message = queue_pb2.SessionRequest(call_id=call_id, timeout_ms=max(1, int(timeout * 1000)))
        getattr(message, field).CopyFrom(request)
        try:
            await self._write(message)
            return await future
        except asyncio.CancelledError:
            if self.broken is None:
                abandon = asyncio.create_task(self._write(queue_pb2.SessionRequest(call_id=call_id, abandon=ABANDON)))
                self.abandons.add(abandon)
                abandon.add_done_callback(self.abandons.discard)
            raise
        finally:
            self.pending.pop(call_id, None)

    async def _read(self) -> None:
        try:
            while (reply := await self.call.read()) is not EOF:
                assert isinstance(reply, queue_pb2.SessionResponse)
                future = self.pending.get(reply.call_id)
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
        if not self.closing:
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


def _stream_error(exc: grpc.aio.AioRpcError) -> GatewayError:
    """What the calls in flight fail with when the stream ends: the queue's refusal as such, any other end UNAVAILABLE."""
    if exc.code() in REFUSALS:
        return from_rpc_error(exc)
    return Unavailable(f"queue session broke: {exc.details()}")
