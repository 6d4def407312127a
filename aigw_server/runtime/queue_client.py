"""The one client of the queue service for the other services: typed calls, downstream errors as domain errors.

It covers everything the router and the admin service ask of the queue: jobs (with the Session
stream for the router's hot path), identities, API keys, refresh tokens, queue statistics and
series, usage, the crash log, dynamic model config and the auto-switch records. Every call has the
same timeout (`timeout`, 10 s by default; AcquireJob adds its wait) and raises the domain error its
gRPC status stands for (`aigw_server.runtime.rpc_errors.from_rpc_error`).

The backends' crash-log sender (`aigw_server.engines.crashlog`) keeps a channel of its own: it
only records crashes, with its own retries and shorter timeout, from processes that make no
other queue call.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw_server.runtime.auth import Account, Principal, api_key_principal
from aigw_server.runtime.authz import MeshTls
from aigw_server.runtime.channels import make_channel
from aigw_server.runtime.errors import NotFound, Unauthenticated, Unimplemented
from aigw_server.runtime.queue_session import QueueSession
from aigw_server.runtime.rpc_errors import from_rpc_error
from aigw_server.runtime.usage import UsageCount

log = logging.getLogger(__name__)

QUEUE_CALL_SECONDS = 10.0
"""Timeout of every queue call (AcquireJob: its wait plus this)."""

Req = TypeVar("Req", bound=Message)
Reply = TypeVar("Reply", bound=Message)
T = TypeVar("T")


async def unary(pending: Awaitable[T]) -> T:
    """The reply of a unary call; a failure becomes the domain error it stands for."""
    try:
        return await pending
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None


async def server_stream(call: grpc.aio.UnaryStreamCall[Req, Reply]) -> AsyncGenerator[Reply, None]:
    """Yields a server stream's messages; closing early (or being cancelled) cancels the call."""
    try:
        async for item in call:
            yield item
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None
    finally:
        call.cancel()


class QueueClient:
    """The queue's QueueService, CrashLogService, ModelConfigService, IdentityService and AutoSwitchStoreService.

    With `session` the job calls of the router's hot path (submit, get, cancel, acquire, heartbeat,
    complete, fail, release) share one long-lived Session stream; otherwise, or against a queue that
    does not implement Session, each is a unary call. Either way a call raises the same domain errors.
    """

    def __init__(
        self, channel: grpc.aio.Channel, timeout: float = QUEUE_CALL_SECONDS, session: bool = False, owns_channel: bool = False
    ) -> None:
        self.channel = channel
        self.timeout = timeout
        self.owns_channel = owns_channel
        self.jobs = queue_pb2_grpc.QueueServiceStub(channel)
        self.crashes = queue_pb2_grpc.CrashLogServiceStub(channel)
        self.configs = queue_pb2_grpc.ModelConfigServiceStub(channel)
        self.identity = queue_pb2_grpc.IdentityServiceStub(channel)
        self.switches = queue_pb2_grpc.AutoSwitchStoreServiceStub(channel)
        self.session = QueueSession(self.jobs.Session, self.jobs.SessionBatches) if session else None

    @classmethod
    def connect(cls, address: str, tls: MeshTls | None = None, session: bool = True) -> QueueClient:
        """A client on a channel of its own to the queue at `address` (closed by `close`)."""
        return cls(make_channel(address, tls, "queue"), session=session, owns_channel=True)

    async def close(self) -> None:
        """Ends the Session stream, and the channel when this client opened it."""
        if self.session is not None:
            await self.session.close()
        if self.owns_channel:
            await self.channel.close(None)

    async def _job_call(
        self,
        field: str,
        rpc: grpc.aio.UnaryUnaryMultiCallable[Req, Reply],
        request: Req,
        reply_type: type[Reply],
        timeout: float | None = None,
    ) -> Reply:
        """One job call: over the session as its `field` call when there is one, else the unary RPC `rpc`."""
        timeout = self.timeout if timeout is None else timeout
        if self.session is not None:
            try:
                return await self.session.call(field, request, reply_type, timeout)
            except Unimplemented:
                log.warning("the queue does not implement Session; using unary calls")
                self.session = None
        return await unary(rpc(request, timeout=timeout))

    async def _call(self, rpc: grpc.aio.UnaryUnaryMultiCallable[Req, Reply], request: Req) -> Reply:
        return await unary(rpc(request, timeout=self.timeout))

    # Jobs

    async def submit(self, request: queue_pb2.SubmitRequest) -> queue_pb2.SubmitResponse:
        return await self._job_call("submit", self.jobs.Submit, request, queue_pb2.SubmitResponse)

    async def get(self, request_id: str, include_payload: bool = False) -> common_pb2.Job:
        request = queue_pb2.GetJobRequest(request_id=request_id, include_payload=include_payload)
        return (await self._job_call("get_job", self.jobs.GetJob, request, queue_pb2.GetJobResponse)).job

    async def cancel(self, request_id: str, requested_by: str) -> common_pb2.Job:
        request = queue_pb2.CancelJobRequest(request_id=request_id, requested_by=requested_by)
        return (await self._job_call("cancel_job", self.jobs.CancelJob, request, queue_pb2.CancelJobResponse)).job

    def watch(self, request_id: str) -> AsyncIterator[queue_pb2.WatchJobResponse]:
        """The job's events until it ends; closing the iterator ends the call."""
        return server_stream(self.jobs.WatchJob(queue_pb2.WatchJobRequest(request_id=request_id)))

    async def acquire(
        self, worker_id: str, wait_ms: int, request_id: str = "", models: Sequence[str] = ()
    ) -> queue_pb2.AcquireJobResponse | None:
        """A granted job and its lease, or None when nothing was granted within wait_ms."""
        request = queue_pb2.AcquireJobRequest(worker_id=worker_id, request_id=request_id, models=models, wait_ms=wait_ms)
        timeout = wait_ms / 1000 + self.timeout
        reply = await self._job_call("acquire_job", self.jobs.AcquireJob, request, queue_pb2.AcquireJobResponse, timeout)
        return reply if reply.HasField("lease") else None

    async def heartbeat(self, request: queue_pb2.HeartbeatRequest) -> queue_pb2.HeartbeatResponse:
        return await self._job_call("heartbeat", self.jobs.Heartbeat, request, queue_pb2.HeartbeatResponse)

    async def complete(self, request: queue_pb2.CompleteJobRequest) -> common_pb2.Job:
        return (await self._job_call("complete_job", self.jobs.CompleteJob, request, queue_pb2.CompleteJobResponse)).job

    async def fail(self, request: queue_pb2.FailJobRequest) -> common_pb2.Job:
        return (await self._job_call("fail_job", self.jobs.FailJob, request, queue_pb2.FailJobResponse)).job

    async def release(self, request: queue_pb2.ReleaseJobRequest) -> common_pb2.Job:
        return (await self._job_call("release_job", self.jobs.ReleaseJob, request, queue_pb2.ReleaseJobResponse)).job

    async def list_jobs(self, request: queue_pb2.ListJobsRequest) -> queue_pb2.ListJobsResponse:
        return await self._call(self.jobs.ListJobs, request)

    # Queue statistics and usage

    async def queue_stats(self, model: str) -> queue_pb2.GetQueueStatsResponse:
        return await self._call(self.jobs.GetQueueStats, queue_pb2.GetQueueStatsRequest(model=model))

    async def queue_series(self, model: str, minutes: int | None) -> queue_pb2.GetQueueSeriesResponse:
        return await self._call(self.jobs.GetQueueSeries, queue_pb2.GetQueueSeriesRequest(model=model, minutes=minutes))

    async def queued(self, model: str) -> int:
        """Requests waiting in a model's queue now."""
        return int((await self.queue_stats(model)).waiting)

    async def usage(self, window_days: int) -> list[UsageCount]:
        """Request counts by model and hour of the week over the last `window_days` days."""
        reply = await self._call(self.jobs.GetUsage, queue_pb2.GetUsageRequest(window_days=window_days))
        return [UsageCount(b.model, b.hour_of_week, b.count) for b in reply.buckets]

    # Crash log

    async def list_crashes(self, request: queue_pb2.ListCrashesRequest) -> queue_pb2.ListCrashesResponse:
        return await self._call(self.crashes.ListCrashes, request)

    # Dynamic model config

    async def model_configs(self) -> list[queue_pb2.ModelConfig]:
        reply = await self._call(self.configs.ListModelConfigs, queue_pb2.ListModelConfigsRequest())
        return list(reply.configs)

    async def get_model_config(self, model: str) -> queue_pb2.ModelConfig:
        return (await self._call(self.configs.GetModelConfig, queue_pb2.GetModelConfigRequest(model=model))).config

    async def update_model_config(
        self, model: str, expected_version: int, patch: queue_pb2.ModelConfigPatch, updated_by: str
    ) -> queue_pb2.ModelConfig:
        request = queue_pb2.UpdateModelConfigRequest(
            model=model, expected_version=expected_version, patch=patch, updated_by=updated_by
        )
        return (await self._call(self.configs.UpdateModelConfig, request)).config

    # Users

    async def get_user(self, username: str) -> queue_pb2.User:
        return (await self._call(self.identity.GetUser, queue_pb2.GetUserRequest(username=username))).user

    async def account(self, username: str) -> Account | None:
        """The user's current role and disabled flag, or None when there is no such user."""
        try:
            user = await self.get_user(username)
        except NotFound:
            return None
        return Account(user.role, user.disabled)

    async def verify_password(self, username: str, password: str) -> queue_pb2.User:
        request = queue_pb2.VerifyPasswordRequest(username=username, password=password)
        return (await self._call(self.identity.VerifyPassword, request)).user

    async def create_user(self, user: queue_pb2.User) -> queue_pb2.User:
        return (await self._call(self.identity.CreateUser, queue_pb2.CreateUserRequest(user=user))).user

    async def list_users(self) -> list[queue_pb2.User]:
        return list((await self._call(self.identity.ListUsers, queue_pb2.ListUsersRequest())).users)

    async def update_user(self, change: queue_pb2.UpdateUserRequest) -> queue_pb2.User:
        return (await self._call(self.identity.UpdateUser, change)).user

    async def delete_user(self, username: str) -> None:
        await self._call(self.identity.DeleteUser, queue_pb2.DeleteUserRequest(username=username))

    # API keys

    async def create_api_key(self, key: queue_pb2.ApiKey) -> queue_pb2.ApiKey:
        return (await self._call(self.identity.CreateApiKey, queue_pb2.CreateApiKeyRequest(key=key))).key

    async def lookup_api_key(self, key_id: str, secret_hash: str) -> queue_pb2.ApiKey:
        request = queue_pb2.LookupApiKeyRequest(key_id=key_id, secret_hash=secret_hash)
        return (await self._call(self.identity.LookupApiKey, request)).key

    async def api_key_principal(self, key_id: str, secret_hash: str) -> Principal:
        """Who an active API key acts as now (aigw_server.runtime.auth.api_key_principal); UNAUTHENTICATED otherwise."""
        try:
            key = await self.lookup_api_key(key_id, secret_hash)
            user = await self.get_user(key.subject)
        except NotFound:
            raise Unauthenticated("API key is invalid or revoked") from None
        return api_key_principal(key.key_id, key.subject, key.role, (user.role, user.disabled, tuple(user.allowed_client_ids)))

    async def list_api_keys(self, subject: str) -> list[queue_pb2.ApiKey]:
        return list((await self._call(self.identity.ListApiKeys, queue_pb2.ListApiKeysRequest(subject=subject))).keys)

    async def revoke_api_key(self, key_id: str) -> queue_pb2.ApiKey:
        return (await self._call(self.identity.RevokeApiKey, queue_pb2.RevokeApiKeyRequest(key_id=key_id))).key

    # Refresh tokens

    async def store_refresh_token(self, token: queue_pb2.RefreshToken) -> None:
        await self._call(self.identity.StoreRefreshToken, queue_pb2.StoreRefreshTokenRequest(token=token))

    async def consume_refresh_token(self, token_id: str, token_hash: str) -> queue_pb2.RefreshToken:
        request = queue_pb2.ConsumeRefreshTokenRequest(token_id=token_id, token_hash=token_hash)
        return (await self._call(self.identity.ConsumeRefreshToken, request)).token

    async def revoke_refresh_tokens(self, family_id: str = "", subject: str = "") -> int:
        request = queue_pb2.RevokeRefreshTokensRequest(family_id=family_id, subject=subject)
        return int((await self._call(self.identity.RevokeRefreshTokens, request)).revoked)

    # Auto-switch records

    async def auto_switch_enabled(self) -> bool | None:
        """The operator's stored auto-switch setting, or None when none was stored."""
        reply = await self._call(self.switches.GetAutoSwitchState, queue_pb2.GetAutoSwitchStateRequest())
        return reply.enabled if reply.HasField("enabled") else None

    async def set_auto_switch_enabled(self, enabled: bool, updated_by: str) -> None:
        request = queue_pb2.SetAutoSwitchStateRequest(enabled=enabled, updated_by=updated_by)
        await self._call(self.switches.SetAutoSwitchState, request)

    async def record_decision(self, decision: queue_pb2.SwitchDecision) -> queue_pb2.SwitchDecision:
        request = queue_pb2.RecordSwitchDecisionRequest(decision=decision)
        return (await self._call(self.switches.RecordSwitchDecision, request)).decision

    async def recent_decisions(self, limit: int) -> list[queue_pb2.SwitchDecision]:
        request = queue_pb2.ListSwitchDecisionsRequest(page_size=limit)
        return list((await self._call(self.switches.ListSwitchDecisions, request)).decisions)
