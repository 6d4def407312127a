"""AdminService servicer: proto ⇄ domain only. Every RPC but IssueToken and RevokeToken needs the admin role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from aigw.admin.v1 import admin_pb2, admin_pb2_grpc
from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw_server.admin.access import Access
from aigw_server.admin.fleet import BackendSnapshot, Fleet, ModelView
from aigw_server.admin.identity import Accounts, UserChange
from aigw_server.admin.login_limiter import client_ip
from aigw_server.admin.model_config import ModelSettings
from aigw_server.admin.queue_mapping import (
    api_key_info,
    crash_filter,
    crash_page,
    history_filter,
    history_page,
    model_config,
    model_config_patch,
    queue_series,
    queue_stats,
    switch_decision,
    user_info,
)
from aigw_server.admin.sessions import Sessions, TokenPair
from aigw_server.admin.switcher import AutoSwitcher
from aigw_server.admin.token_request import parse_token_request
from aigw_server.runtime.auth import Principal
from aigw_server.runtime.authz import EDGE, caller_identity
from aigw_server.runtime.errors import InvalidArgument
from aigw_server.runtime.listing import check_listing

Ctx = grpc.aio.ServicerContext[Message, Message]

RECENT_DECISIONS = 20


def metadata(context: Ctx, key: str) -> str:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""


class History(Protocol):
    """The queue's request history and crash log, read page by page."""

    async def list_jobs(self, request: queue_pb2.ListJobsRequest) -> queue_pb2.ListJobsResponse:
        """A page of jobs, newest first."""

    async def list_crashes(self, request: queue_pb2.ListCrashesRequest) -> queue_pb2.ListCrashesResponse:
        """A page of crash events, newest first."""


@dataclass(frozen=True)
class AdminDomain:
    """The domain objects the servicer adapts."""

    access: Access
    sessions: Sessions
    accounts: Accounts
    fleet: Fleet
    settings: ModelSettings
    switcher: AutoSwitcher
    history: History


def token_response(pair: TokenPair) -> admin_pb2.IssueTokenResponse:
    return admin_pb2.IssueTokenResponse(
        access_token=pair.access_token,
        token_type="bearer",
        expires_in=pair.expires_in,
        refresh_token=pair.refresh_token,
        refresh_expires_in=pair.refresh_expires_in,
        role=pair.role,
    )


def model_info(view: ModelView) -> admin_pb2.ModelInfo:
    info = admin_pb2.ModelInfo(
        model=view.model,
        kind=view.kind,
        enabled=view.enabled,
        state=view.state,
        loaded_on=list(view.loaded_on),
        backends=list(view.backends),
    )
    if view.queue is not None:
        info.queue.CopyFrom(queue_stats(view.queue))
    return info


def backend_info(snapshot: BackendSnapshot) -> admin_pb2.BackendInfo:
    status = snapshot.status or common_pb2.BackendStatus(backend=snapshot.config.name, detail="unreachable")
    return admin_pb2.BackendInfo(
        status=status, kind=snapshot.config.kind, address=snapshot.config.address, health=snapshot.health
    )


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Adapts AdminService RPCs to the admin domain."""

    def __init__(self, domain: AdminDomain) -> None:
        self.d = domain

    async def _admin(self, context: Ctx) -> Principal:
        return await self.d.access.admin(metadata(context, "authorization"), metadata(context, "x-api-key"))

    async def IssueToken(self, request: admin_pb2.IssueTokenRequest, context: Ctx) -> admin_pb2.IssueTokenResponse:
        typed = {
            "grant_type": request.grant_type,
            "username": request.username,
            "password": request.password,
            "refresh_token": request.refresh_token,
        }
        asked = parse_token_request(typed, request.form.content_type, request.form.data, over_rest=request.HasField("form"))
        if asked.grant_type == "refresh_token":
            return token_response(await self.d.sessions.refresh(asked.refresh_token))
        # Only the edge (proved by its certificate) may tell us the client's address; anyone else is their peer address.
        forwarded = metadata(context, "x-forwarded-for") if caller_identity(context) == EDGE else ""
        ip = client_ip(forwarded, context.peer() or "")
        return token_response(await self.d.sessions.login(asked.username, asked.password, ip))

    async def RevokeToken(self, request: admin_pb2.RevokeTokenRequest, context: Ctx) -> admin_pb2.RevokeTokenResponse:
        if not request.refresh_token:
            raise InvalidArgument("refresh_token: required", field="refresh_token")
        return admin_pb2.RevokeTokenResponse(revoked=await self.d.sessions.revoke(request.refresh_token))

    async def ListUsers(self, request: admin_pb2.ListUsersRequest, context: Ctx) -> admin_pb2.ListUsersResponse:
        await self._admin(context)
        return admin_pb2.ListUsersResponse(users=[user_info(u) for u in await self.d.accounts.list_users()])

    async def CreateUser(self, request: admin_pb2.CreateUserRequest, context: Ctx) -> admin_pb2.CreateUserResponse:
        await self._admin(context)
        user = await self.d.accounts.create_user(request.username, request.password, request.role, request.allowed_client_ids)
        return admin_pb2.CreateUserResponse(user=user_info(user))

    async def UpdateUser(self, request: admin_pb2.UpdateUserRequest, context: Ctx) -> admin_pb2.UpdateUserResponse:
        actor = await self._admin(context)
        change = UserChange(
            username=request.username,
            role=request.role if request.HasField("role") else None,
            password=request.password if request.HasField("password") else None,
            disabled=request.disabled if request.HasField("disabled") else None,
            allowed_client_ids=tuple(request.allowed_client_ids) if request.set_allowed_client_ids else None,
        )
        return admin_pb2.UpdateUserResponse(user=user_info(await self.d.accounts.update_user(actor, change)))

    async def DeleteUser(self, request: admin_pb2.DeleteUserRequest, context: Ctx) -> admin_pb2.DeleteUserResponse:
        actor = await self._admin(context)
        await self.d.accounts.delete_user(actor, request.username)
        return admin_pb2.DeleteUserResponse()

    async def CreateApiKey(self, request: admin_pb2.CreateApiKeyRequest, context: Ctx) -> admin_pb2.CreateApiKeyResponse:
        actor = await self._admin(context)
        issued = await self.d.accounts.create_api_key(actor, request.subject, request.role, request.name)
        return admin_pb2.CreateApiKeyResponse(key=api_key_info(issued.record), api_key=issued.api_key)

    async def ListApiKeys(self, request: admin_pb2.ListApiKeysRequest, context: Ctx) -> admin_pb2.ListApiKeysResponse:
        await self._admin(context)
        return admin_pb2.ListApiKeysResponse(keys=[api_key_info(k) for k in await self.d.accounts.list_api_keys(request.subject)])

    async def RevokeApiKey(self, request: admin_pb2.RevokeApiKeyRequest, context: Ctx) -> admin_pb2.RevokeApiKeyResponse:
        await self._admin(context)
        return admin_pb2.RevokeApiKeyResponse(key=api_key_info(await self.d.accounts.revoke_api_key(request.key_id)))

    async def ListModels(self, request: admin_pb2.ListModelsRequest, context: Ctx) -> admin_pb2.ListModelsResponse:
        await self._admin(context)
        models, backends = await self.d.fleet.models()
        return admin_pb2.ListModelsResponse(models=[model_info(m) for m in models], backends=[backend_info(b) for b in backends])

    async def StartModel(self, request: admin_pb2.StartModelRequest, context: Ctx) -> admin_pb2.StartModelResponse:
        await self._admin(context)
        result = await self.d.fleet.start_model(request.model, request.backend)
        reply = admin_pb2.StartModelResponse(outcome=result.outcome, backend=result.backend, elapsed_ms=result.elapsed_ms)
        if result.status is not None:
            reply.status.CopyFrom(result.status)
        return reply

    async def StopModel(self, request: admin_pb2.StopModelRequest, context: Ctx) -> admin_pb2.StopModelResponse:
        await self._admin(context)
        result = await self.d.fleet.stop_model(request.model, request.force)
        return admin_pb2.StopModelResponse(outcome=result.outcome, backends=list(result.backends), elapsed_ms=result.elapsed_ms)

    async def SwitchBackend(self, request: admin_pb2.SwitchBackendRequest, context: Ctx) -> admin_pb2.SwitchBackendResponse:
        await self._admin(context)
        result = await self.d.fleet.switch_backend(request.backend, request.model, request.force)
        return admin_pb2.SwitchBackendResponse(outcome=result.outcome, elapsed_ms=result.elapsed_ms, status=result.status)

    async def GetQueueStats(self, request: admin_pb2.GetQueueStatsRequest, context: Ctx) -> admin_pb2.GetQueueStatsResponse:
        await self._admin(context)
        return queue_stats(await self.d.fleet.queue_stats(request.model))

    async def GetQueueSeries(self, request: admin_pb2.GetQueueSeriesRequest, context: Ctx) -> admin_pb2.GetQueueSeriesResponse:
        await self._admin(context)
        minutes = request.minutes if request.HasField("minutes") else None
        return queue_series(await self.d.fleet.queue_series(request.model, minutes))

    async def ListCrashes(self, request: admin_pb2.ListCrashesRequest, context: Ctx) -> admin_pb2.ListCrashesResponse:
        await self._admin(context)
        check_listing(request.page_size, *_time_range(request))
        return crash_page(await self.d.history.list_crashes(crash_filter(request)))

    async def ListRequests(self, request: admin_pb2.ListRequestsRequest, context: Ctx) -> admin_pb2.ListRequestsResponse:
        await self._admin(context)
        check_listing(request.page_size, *_time_range(request))
        return history_page(await self.d.history.list_jobs(history_filter(request)))

    async def GetModelConfig(self, request: admin_pb2.GetModelConfigRequest, context: Ctx) -> admin_pb2.GetModelConfigResponse:
        await self._admin(context)
        return admin_pb2.GetModelConfigResponse(config=model_config(await self.d.settings.get(request.model)))

    async def UpdateModelConfig(
        self, request: admin_pb2.UpdateModelConfigRequest, context: Ctx
    ) -> admin_pb2.UpdateModelConfigResponse:
        actor = await self._admin(context)
        version = request.expected_version if request.HasField("expected_version") else None
        config = await self.d.settings.update(actor, request.model, version, model_config_patch(request.patch))
        return admin_pb2.UpdateModelConfigResponse(config=model_config(config))

    async def GetAutoSwitch(self, request: admin_pb2.GetAutoSwitchRequest, context: Ctx) -> admin_pb2.GetAutoSwitchResponse:
        await self._admin(context)
        switcher = self.d.switcher
        assessment = await switcher.assess()
        reply = admin_pb2.GetAutoSwitchResponse(
            enabled=await switcher.enabled(),
            window_days=switcher.settings.window_days,
            cooldown_seconds=switcher.settings.cooldown_seconds,
            demand_margin=switcher.settings.demand_margin,
            interval_seconds=switcher.cfg.interval_seconds,
            demand=[
                admin_pb2.ModelDemand(model=d.model, expected=d.expected, queued=d.queued, score=d.score)
                for d in assessment.demand.values()
            ],
            plan=[
                admin_pb2.BackendPlan(
                    backend=p.backend, current_model=p.from_model, target_model=p.to_model, reason=p.reason, action=p.action
                )
                for p in assessment.decisions
            ],
            decisions=[switch_decision(d) for d in await switcher.records.recent_decisions(RECENT_DECISIONS)],
        )
        reply.evaluated_at.FromDatetime(assessment.at)
        return reply

    async def SetAutoSwitch(self, request: admin_pb2.SetAutoSwitchRequest, context: Ctx) -> admin_pb2.SetAutoSwitchResponse:
        actor = await self._admin(context)
        return admin_pb2.SetAutoSwitchResponse(enabled=await self.d.switcher.set_enabled(request.enabled, actor.subject))

    async def SleepBackend(self, request: admin_pb2.SleepBackendRequest, context: Ctx) -> admin_pb2.SleepBackendResponse:
        await self._admin(context)
        result = await self.d.fleet.sleep_backend(request.backend, request.level)
        return admin_pb2.SleepBackendResponse(outcome=result.outcome, elapsed_ms=result.elapsed_ms, status=result.status)

    async def WakeBackend(self, request: admin_pb2.WakeBackendRequest, context: Ctx) -> admin_pb2.WakeBackendResponse:
        await self._admin(context)
        result = await self.d.fleet.wake_backend(request.backend)
        return admin_pb2.WakeBackendResponse(outcome=result.outcome, elapsed_ms=result.elapsed_ms, status=result.status)


def _time_range(
    request: admin_pb2.ListCrashesRequest | admin_pb2.ListRequestsRequest,
) -> tuple[timestamp_pb2.Timestamp | None, timestamp_pb2.Timestamp | None]:
    """A listing's `since` and `until` filters, None where the caller left one out."""
    since = request.since if request.HasField("since") else None
    until = request.until if request.HasField("until") else None
    return since, until
