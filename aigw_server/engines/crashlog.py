"""Sends a backend's abnormal events (textgen or ocr) to the queue's crash log without ever making the backend wait."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

import grpc

from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw_server.runtime.authz import MeshTls
from aigw_server.runtime.channels import make_channel

log = logging.getLogger(__name__)

SEND_TIMEOUT_SECONDS = 3.0
# A queue that is starting or recovering answers UNAVAILABLE for a few seconds: keep the event until it can take it.
RETRY_DELAYS_SECONDS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)


class QueueCrashLog:
    """CrashLogService.RecordCrash at the queue; when the queue is unreachable the event stays in our log only.

    Not the shared `aigw_server.runtime.queue_client.QueueClient`: a backend calls the queue for this one RPC
    only, fire-and-forget with its own retries and a shorter timeout, on a channel opened at the first crash.
    """

    def __init__(self, address: str, backend: str, tls: MeshTls | None = None, service: str = "textgen") -> None:
        self.address = address
        self.service = service
        self.tls = tls
        self.backend = backend
        self._channel: grpc.aio.Channel | None = None
        self._stub: queue_pb2_grpc.CrashLogServiceAsyncStub | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def record(
        self, kind: str, model: str, message: str, log_tail: Sequence[str] = (), details: Mapping[str, str] | None = None
    ) -> None:
        event = queue_pb2.CrashEvent(
            kind=queue_pb2.CrashKind.Value(f"CRASH_KIND_{kind}"),
            service=self.service,
            model=model,
            backend=self.backend,
            message=message,
            details=dict(details or {}),
            log_tail=list(log_tail),
        )
        task = asyncio.get_running_loop().create_task(self._send(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, event: queue_pb2.CrashEvent) -> None:
        """Sends the event; a queue still starting (or restarting) answers UNAVAILABLE, so that is retried a while."""
        stub = self._stub
        if stub is None:
            self._channel = make_channel(self.address, self.tls, "queue")
            stub = self._stub = queue_pb2_grpc.CrashLogServiceStub(self._channel)
        for delay in (*RETRY_DELAYS_SECONDS, None):
            try:
                await stub.RecordCrash(queue_pb2.RecordCrashRequest(event=event), timeout=SEND_TIMEOUT_SECONDS)
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE and delay is not None:
                    await asyncio.sleep(delay)
                    continue
                log.warning(
                    "crash log unreachable; event recorded here only",
                    extra={
                        "queue": self.address,
                        "code": exc.code().name,
                        "kind": queue_pb2.CrashKind.Name(event.kind),
                        "event": event.message,
                    },
                )
                return

    async def close(self) -> None:
        """Gives events in flight a moment to reach the queue, then closes the channel."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=SEND_TIMEOUT_SECONDS)
        if self._channel is not None:
            await self._channel.close(None)
