"""gRPC adapters: the backends' BackendService, with downstream errors as domain errors (the queue's client is
`aigw_server.runtime.queue_client`); a lifecycle call's timeout is its own wait plus a queue call's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aigw.backend.v1 import backend_pb2, backend_pb2_grpc
from aigw.common.v1 import common_pb2
from aigw_server.admin.fleet import LifecycleResult
from aigw_server.runtime.config import BackendConfig
from aigw_server.runtime.errors import GatewayError
from aigw_server.runtime.queue_client import QUEUE_CALL_SECONDS
from aigw_server.runtime.rpc_errors import from_rpc_error

R = TypeVar("R")

STATUS_TIMEOUT_S = 2.0
DRAIN_TIMEOUT_S = 30.0


async def call(rpc: Callable[..., Awaitable[R]], request: Message, timeout: float) -> R:
    """Runs one RPC; a failure becomes the domain error it stands for."""
    try:
        return await rpc(request, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None


class BackendClient:
    """One backend's BackendService (the lifecycle contract every kind implements) and health check."""

    def __init__(self, channel: grpc.aio.Channel, config: BackendConfig) -> None:
        self.config = config
        self.health_stub = health_pb2_grpc.HealthStub(channel)
        self.stub = backend_pb2_grpc.BackendServiceStub(channel)
        self.load_timeout = config.startup_timeout_seconds + QUEUE_CALL_SECONDS
        self.unload_timeout = DRAIN_TIMEOUT_S + QUEUE_CALL_SECONDS

    async def health(self) -> str:
        try:
            reply = await call(self.health_stub.Check, health_pb2.HealthCheckRequest(), STATUS_TIMEOUT_S)
        except GatewayError:
            return "UNREACHABLE"
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return name

    async def status(self) -> common_pb2.BackendStatus:
        reply = await call(self.stub.GetStatus, backend_pb2.GetStatusRequest(), STATUS_TIMEOUT_S)
        return reply.status

    async def load(self, model: str) -> LifecycleResult:
        reply = await call(self.stub.LoadModel, backend_pb2.LoadModelRequest(model=model), self.load_timeout)
        return LifecycleResult(reply.status, reply.outcome, reply.elapsed_ms)

    async def unload(self, model: str, force: bool) -> LifecycleResult:
        request = backend_pb2.UnloadModelRequest(model=model, drain_timeout_seconds=DRAIN_TIMEOUT_S, force=force)
        reply = await call(self.stub.UnloadModel, request, self.unload_timeout)
        return LifecycleResult(reply.status, reply.outcome, reply.elapsed_ms)

    async def switch(self, model: str, force: bool) -> LifecycleResult:
        request = backend_pb2.SwitchModelRequest(model=model, drain_timeout_seconds=DRAIN_TIMEOUT_S, force=force)
        reply = await call(self.stub.SwitchModel, request, self.load_timeout + self.unload_timeout)
        return LifecycleResult(reply.status, reply.outcome, reply.elapsed_ms)

    async def sleep(self, level: int) -> LifecycleResult:
        reply = await call(self.stub.SleepModel, backend_pb2.SleepModelRequest(level=level), self.unload_timeout)
        return LifecycleResult(reply.status, reply.outcome, reply.elapsed_ms)

    async def wake(self) -> LifecycleResult:
        reply = await call(self.stub.WakeModel, backend_pb2.WakeModelRequest(), self.load_timeout)
        return LifecycleResult(reply.status, reply.outcome, reply.elapsed_ms)
