"""An in-process queue service on the test FerretDB, with real gRPC stubs for every one of its services."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw_server.queue.service import QueueService
from aigw_server.runtime.config import GatewayConfig, parse_config
from aigw_server.runtime.server import create_server
from harness.ferretdb import FerretDBProcess

CHAT = "chat-a"
OCR = "ocr-a"


def queue_config(uri: str, db: str, **queue: Any) -> GatewayConfig:
    """A config with one chat and one OCR model on the given database; `queue` overrides the queue section."""
    settings: dict[str, Any] = {
        "lease_ttl_seconds": 1,
        "orphan_grace_seconds": 0.5,
        "sweep_interval_seconds": 0.05,
        "ageing_seconds": 30,
    }
    settings.update(queue)
    raw = {
        "mesh_tls": {"mode": "plaintext"},  # in-process services on loopback: no service identity
        "database": {"uri": uri, "name": db},
        "queue": settings,
        "models": {CHAT: {"kind": "chat", "max_concurrent": 10}, OCR: {"kind": "ocr", "max_concurrent": 2}},
    }
    return parse_config(raw, env={})


@dataclass
class Queue:
    """A running queue service and stubs connected to it."""

    service: QueueService
    server: grpc.aio.Server
    channel: grpc.aio.Channel
    jobs: queue_pb2_grpc.QueueServiceAsyncStub
    crashes: queue_pb2_grpc.CrashLogServiceAsyncStub
    configs: queue_pb2_grpc.ModelConfigServiceAsyncStub
    identity: queue_pb2_grpc.IdentityServiceAsyncStub
    autoswitch: queue_pb2_grpc.AutoSwitchStoreServiceAsyncStub

    async def submit(self, text: str = "hi", **fields: Any) -> queue_pb2.SubmitResponse:
        fields.setdefault("model", CHAT)
        chat = common_pb2.ChatJob(messages=[common_pb2.ChatMessage(role="user", content=text)])
        return await self.jobs.Submit(queue_pb2.SubmitRequest(chat=chat, **fields))

    async def acquire(self, wait_ms: int = 2000, **fields: Any) -> queue_pb2.AcquireJobResponse:
        fields.setdefault("worker_id", "w1")
        return await self.jobs.AcquireJob(queue_pb2.AcquireJobRequest(wait_ms=wait_ms, **fields))

    async def complete(self, lease: queue_pb2.Lease, text: str = "done") -> queue_pb2.CompleteJobResponse:
        result = common_pb2.ChatResult(message=common_pb2.ChatMessage(role="assistant", content=text), finish_reason="stop")
        return await self.jobs.CompleteJob(
            queue_pb2.CompleteJobRequest(lease_id=lease.lease_id, request_id=lease.request_id, backend="b1", chat_result=result)
        )

    async def stop(self) -> None:
        await self.channel.close(None)
        await self.server.stop(0)
        await self.service.stop()


async def start_queue(cfg: GatewayConfig, clock: Callable[[], float] = time.time) -> Queue:
    """Starts a queue service in-process on a free port and waits until it has recovered its state."""
    service = QueueService(cfg, clock)
    server, port, health = await create_server(service, "127.0.0.1:0")
    await server.start()
    await service.start(health)
    await service.wait_ready(30)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return Queue(
        service,
        server,
        channel,
        queue_pb2_grpc.QueueServiceStub(channel),
        queue_pb2_grpc.CrashLogServiceStub(channel),
        queue_pb2_grpc.ModelConfigServiceStub(channel),
        queue_pb2_grpc.IdentityServiceStub(channel),
        queue_pb2_grpc.AutoSwitchStoreServiceStub(channel),
    )


@pytest.fixture
def make_queue(ferretdb: FerretDBProcess, db_name: str) -> Callable[..., GatewayConfig]:
    """Builds a config on this test's database (queue settings as keyword arguments)."""

    def build(**queue: Any) -> GatewayConfig:
        return queue_config(ferretdb.uri, db_name, **queue)

    return build


@pytest.fixture
async def queue(make_queue: Callable[..., GatewayConfig]) -> AsyncIterator[Queue]:
    """A queue service with the default test settings."""
    q = await start_queue(make_queue())
    yield q
    await q.stop()
