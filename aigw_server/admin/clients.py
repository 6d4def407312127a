"""gRPC adapters: the queue service's stores and the backends' BackendService, with downstream errors as domain errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aigw.backend.v1 import backend_pb2, backend_pb2_grpc
from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw_server.admin.autoswitch import UsageCount
from aigw_server.admin.fleet import LifecycleResult
from aigw_server.runtime.config import BackendConfig
from aigw_server.runtime.errors import GatewayError
from aigw_server.runtime.rpc_errors import from_rpc_error

R = TypeVar("R")

STORE_TIMEOUT_S = 10.0
STATUS_TIMEOUT_S = 2.0
DRAIN_TIMEOUT_S = 30.0


async def call(rpc: Callable[..., Awaitable[R]], request: Message, timeout: float) -> R:
    """Runs one RPC; a failure becomes the domain error it stands for."""
    try:
        return await rpc(request, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None


class QueueClient:
    """The queue service's RPCs the admin service uses: identities, config, crash log, jobs, usage, auto-switch records."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float = STORE_TIMEOUT_S) -> None:
        self.queue = queue_pb2_grpc.QueueServiceStub(channel)
        self.crashes = queue_pb2_grpc.CrashLogServiceStub(channel)
        self.configs = queue_pb2_grpc.ModelConfigServiceStub(channel)
        self.identity = queue_pb2_grpc.IdentityServiceStub(channel)
        self.switches = queue_pb2_grpc.AutoSwitchStoreServiceStub(channel)
        self.timeout = timeout

    async def _call(self, rpc: Callable[..., Awaitable[R]], request: Any) -> R:
        return await call(rpc, request, self.timeout)

    async def get_user(self, username: str) -> queue_pb2.User:
        reply = await self._call(self.identity.GetUser, queue_pb2.GetUserRequest(username=username))
        return reply.user

    async def verify_password(self, username: str, password: str) -> queue_pb2.User:
        request = queue_pb2.VerifyPasswordRequest(username=username, password=password)
        reply = await self._call(self.identity.VerifyPassword, request)
        return reply.user

    async def create_user(self, user: queue_pb2.User) -> queue_pb2.User:
        reply = await self._call(self.identity.CreateUser, queue_pb2.CreateUserRequest(user=user))
        return reply.user

    async def list_users(self) -> list[queue_pb2.User]:
        reply = await self._call(self.identity.ListUsers, queue_pb2.ListUsersRequest())
        return list(reply.users)

    async def update_user(self, change: queue_pb2.UpdateUserRequest) -> queue_pb2.User:
        reply = await self._call(self.identity.UpdateUser, change)
        return reply.user

    async def delete_user(self, username: str) -> None:
        await self._call(self.identity.DeleteUser, queue_pb2.DeleteUserRequest(username=username))

    async def create_api_key(self, key: queue_pb2.ApiKey) -> queue_pb2.ApiKey:
        reply = await self._call(self.identity.CreateApiKey, queue_pb2.CreateApiKeyRequest(key=key))
        return reply.key

    async def lookup_api_key(self, key_id: str, secret_hash: str) -> queue_pb2.ApiKey:
        request = queue_pb2.LookupApiKeyRequest(key_id=key_id, secret_hash=secret_hash)
        reply = await self._call(self.identity.LookupApiKey, request)
        return reply.key

    async def list_api_keys(self, subject: str) -> list[queue_pb2.ApiKey]:
        reply = await self._call(self.identity.ListApiKeys, queue_pb2.ListApiKeysRequest(subject=subject))
        return list(reply.keys)

    async def revoke_api_key(self, key_id: str) -> queue_pb2.ApiKey:
        reply = await self._call(self.identity.RevokeApiKey, queue_pb2.RevokeApiKeyRequest(key_id=key_id))
        return reply.key

    async def store_refresh_token(self, token: queue_pb2.RefreshToken) -> None:
        await self._call(self.identity.StoreRefreshToken, queue_pb2.StoreRefreshTokenRequest(token=token))

    async def consume_refresh_token(self, token_id: str, token_hash: str) -> queue_pb2.RefreshToken:
        request = queue_pb2.ConsumeRefreshTokenRequest(token_id=token_id, token_hash=token_hash)
        reply = await self._call(self.identity.ConsumeRefreshToken, request)
        return reply.token

    async def revoke_refresh_tokens(self, family_id: str = "", subject: str = "") -> int:
        request = queue_pb2.RevokeRefreshTokensRequest(family_id=family_id, subject=subject)
        reply = await self._call(self.identity.RevokeRefreshTokens, request)
        return int(reply.revoked)

    async def queue_stats(self, model: str) -> queue_pb2.GetQueueStatsResponse:
        return await self._call(self.queue.GetQueueStats, queue_pb2.GetQueueStatsRequest(model=model))

    async def queue_series(self, model: str, minutes: int | None) -> queue_pb2.GetQueueSeriesResponse:
        request = queue_pb2.GetQueueSeriesRequest(model=model, minutes=minutes)
        return await self._call(self.queue.GetQueueSeries, request)

    async def queued(self, model: str) -> int:
        return int((await self.queue_stats(model)).waiting)

    async def usage(self, window_days: int) -> list[UsageCount]:
        reply = await self._call(self.queue.GetUsage, queue_pb2.GetUsageRequest(window_days=window_days))
        return [UsageCount(b.model, b.hour_of_week, b.count) for b in reply.buckets]

    async def list_jobs(self, request: queue_pb2.ListJobsRequest) -> queue_pb2.ListJobsResponse:
        return await self._call(self.queue.ListJobs, request)

    async def list_crashes(self, request: queue_pb2.ListCrashesRequest) -> queue_pb2.ListCrashesResponse:
        return await self._call(self.crashes.ListCrashes, request)

    async def model_configs(self) -> list[queue_pb2.ModelConfig]:
        reply = await self._call(self.configs.ListModelConfigs, queue_pb2.ListModelConfigsRequest())
        return list(reply.configs)

    async def get_model_config(self, model: str) -> queue_pb2.ModelConfig:
        reply = await self._call(self.configs.GetModelConfig, queue_pb2.GetModelConfigRequest(model=model))
        return reply.config

    async def update_model_config(
        self, model: str, expected_version: int, patch: queue_pb2.ModelConfigPatch, updated_by: str
    ) -> queue_pb2.ModelConfig:
        request = queue_pb2.UpdateModelConfigRequest(
            model=model, expected_version=expected_version, patch=patch, updated_by=updated_by
        )
        reply = await self._call(self.configs.UpdateModelConfig, request)
        return reply.config

    async def auto_switch_enabled(self) -> bool | None:
        reply = await self._call(self.switches.GetAutoSwitchState, queue_pb2.GetAutoSwitchStateRequest())
        return reply.enabled if reply.HasField("enabled") else None

    async def set_auto_switch_enabled(self, enabled: bool, updated_by: str) -> None:
        request = queue_pb2.SetAutoSwitchStateRequest(enabled=enabled, updated_by=updated_by)
        await self._call(self.switches.SetAutoSwitchState, request)

    async def record_decision(self, decision: queue_pb2.SwitchDecision) -> queue_pb2.SwitchDecision:
        request = queue_pb2.RecordSwitchDecisionRequest(decision=decision)
        reply = await self._call(self.switches.RecordSwitchDecision, request)
        return reply.decision

    async def recent_decisions(self, limit: int) -> list[queue_pb2.SwitchDecision]:
        request = queue_pb2.ListSwitchDecisionsRequest(page_size=limit)
        reply = await self._call(self.switches.ListSwitchDecisions, request)
        return list(reply.decisions)


class BackendClient:
    """One backend's BackendService (the lifecycle contract every kind implements) and health check."""

    def __init__(self, channel: grpc.aio.Channel, config: BackendConfig) -> None:
        self.config = config
        self.health_stub = health_pb2_grpc.HealthStub(channel)
        self.stub = backend_pb2_grpc.BackendServiceStub(channel)
        self.load_timeout = config.startup_timeout_seconds + STORE_TIMEOUT_S
        self.unload_timeout = DRAIN_TIMEOUT_S + STORE_TIMEOUT_S

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
