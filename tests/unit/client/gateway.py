"""A TEST-ONLY stand-in for the router and admin APIs (fixed answers) to exercise the client's real requests and errors.

It runs behind the shared bootstrap (`create_server`), so errors travel through the gateway's real
error boundary (RetryInfo, BadRequest details), on its own event loop in a thread so that both the
blocking and the asyncio client can call it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from aigw.admin.v1 import admin_pb2, admin_pb2_grpc
from aigw.common.v1 import common_pb2
from aigw.router.v1 import router_pb2, router_pb2_grpc
from aigw_server.runtime.config import ServiceName
from aigw_server.runtime.errors import (
    Aborted,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from aigw_server.runtime.server import Health, create_server

Ctx = grpc.aio.ServicerContext[Any, Any]
PASSWORD = "correct horse battery"
USAGE = common_pb2.Usage(prompt_tokens=3, completion_tokens=5, total_tokens=8)


@dataclass
class Call:
    """One call as the stand-in received it."""

    method: str
    request: Any
    metadata: dict[str, str]


@dataclass
class GatewayState:
    """What the stand-in saw and how it behaves; tests read and tune it."""

    calls: list[Call] = field(default_factory=list)
    valid_tokens: set[str] = field(default_factory=lambda: {"key-user", "key-admin"})
    admin_tokens: set[str] = field(default_factory=lambda: {"key-admin"})
    refresh_tokens: dict[str, int] = field(default_factory=dict)
    issued: int = 0
    expires_in: int = 900
    full_times: int = 0
    retry_after: float = 0.05
    config_version: int = 3
    autoswitch: bool = False
    refresh_delay: float = 0.0

    def reset(self) -> None:
        """Back to a fresh state: no calls, the two API keys, default behaviour."""
        self.__dict__.update(GatewayState().__dict__)

    def record(self, method: str, request: Message, context: Ctx) -> dict[str, str]:
        metadata = {k: v if isinstance(v, str) else v.decode() for k, v in context.invocation_metadata() or ()}
        self.calls.append(Call(method, request, metadata))
        return metadata

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]

    def last(self, method: str) -> Call:
        return [c for c in self.calls if c.method == method][-1]

    def authenticate(self, metadata: dict[str, str], admin: bool = False) -> None:
        token = metadata.get("authorization", "").removeprefix("Bearer ")
        if not token:
            raise Unauthenticated("missing credential")
        if token not in self.valid_tokens:
            raise Unauthenticated("token expired")
        if admin and token not in self.admin_tokens:
            raise PermissionDenied("this operation needs the admin role")

    def issue(self, username: str) -> admin_pb2.IssueTokenResponse:
        self.issued += 1
        access, refresh = f"access-{self.issued}", f"refresh-{self.issued}"
        self.valid_tokens.add(access)
        if username == "admin":
            self.admin_tokens.add(access)
        self.refresh_tokens[refresh] = self.issued
        role = "admin" if username == "admin" else "user"
        return admin_pb2.IssueTokenResponse(
            access_token=access,
            token_type="bearer",
            expires_in=self.expires_in,
            refresh_token=refresh,
            refresh_expires_in=3600,
            role=role,
        )


def _job(request_id: str, state: common_pb2.JobState.ValueType = common_pb2.SUCCEEDED) -> common_pb2.Job:
    job = common_pb2.Job(
        request_id=request_id, model="tiny-chat", kind=common_pb2.JOB_KIND_CHAT, priority=common_pb2.PRIORITY_HIGH, state=state
    )
    if state == common_pb2.SUCCEEDED:
        message = common_pb2.ChatMessage(role="assistant", content="the answer")
        job.chat_result.CopyFrom(common_pb2.ChatResult(message=message, finish_reason="stop", usage=USAGE, model="tiny-chat"))
    if state == common_pb2.FAILED:
        job.error.CopyFrom(common_pb2.JobError(code="DEADLINE_EXCEEDED", message="the request's deadline passed"))
    if state == common_pb2.QUEUED:
        job.position = 2
    return job


def _pages(request: router_pb2.OcrRequest | router_pb2.StreamOcrRequest) -> list[common_pb2.OcrPage]:
    first = request.first_page or 1
    last = request.last_page or 4
    language = request.languages[0] if request.languages else "eng"
    return [
        common_pb2.OcrPage(page=n, text=f"page {n} text", source="ocr", language=language, confidence=91.5)
        for n in range(first, last + 1)
    ]


class RouterStandIn(router_pb2_grpc.RouterServiceServicer):
    """Fixed router answers; prompts steer the failure cases ("full", "down", "bad", "boom", "forbidden")."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    async def GetHealth(self, request: router_pb2.GetHealthRequest, context: Ctx) -> router_pb2.GetHealthResponse:
        self.state.record("GetHealth", request, context)
        return router_pb2.GetHealthResponse(status="ok", components={"queue": "SERVING"}, version="test")

    async def ListModels(self, request: router_pb2.ListModelsRequest, context: Ctx) -> router_pb2.ListModelsResponse:
        self.state.authenticate(self.state.record("ListModels", request, context))
        cards = [router_pb2.ModelCard(id=m, object="model", owned_by="aigw") for m in ("tiny-chat", "tesseract")]
        return router_pb2.ListModelsResponse(object="list", data=cards)

    def _fail_on(self, prompt: str) -> None:
        if prompt == "full" and self.state.full_times > 0:
            self.state.full_times -= 1
            raise ResourceExhausted("queue of tiny-chat is full (10 waiting)", retry_after=self.state.retry_after)
        if prompt == "down":
            raise Unavailable("no healthy backend holds tiny-chat")
        if prompt == "bad":
            raise InvalidArgument("temperature: must be in [0, 2]", field="temperature")
        if prompt == "forbidden":
            raise PermissionDenied("X-Client-ID 'other' is not allowed for 'alice'")
        if prompt == "boom":
            raise RuntimeError("internal detail that must not leak")

    async def Chat(self, request: router_pb2.ChatRequest, context: Ctx) -> router_pb2.ChatResponse:
        self.state.authenticate(self.state.record("Chat", request, context))
        prompt = request.messages[-1].content
        self._fail_on(prompt)
        if request.async_mode:
            return router_pb2.ChatResponse(request_id="req-async", status=common_pb2.QUEUED, model=request.model, position=2)
        message = common_pb2.ChatMessage(role="assistant", content=f"echo: {prompt}")
        return router_pb2.ChatResponse(
            request_id="req-1",
            status=common_pb2.SUCCEEDED,
            model=request.model or "tiny-chat",
            response=message.content,
            message=message,
            finish_reason="stop",
            usage=USAGE,
        )

    async def StreamChat(
        self, request: router_pb2.StreamChatRequest, context: Ctx
    ) -> AsyncIterator[router_pb2.StreamChatResponse]:
        self.state.authenticate(self.state.record("StreamChat", request, context))
        prompt = request.messages[-1].content
        self._fail_on(prompt)
        yield router_pb2.StreamChatResponse(request_id="req-2", status=common_pb2.QUEUED, position=1, model="tiny-chat")
        for piece in ("Hel", "lo"):
            yield router_pb2.StreamChatResponse(request_id="req-2", status=common_pb2.RUNNING, delta=piece, model="tiny-chat")
        if prompt == "break":
            raise Unavailable("backend cpu-0 went away")
        yield router_pb2.StreamChatResponse(
            request_id="req-2", status=common_pb2.SUCCEEDED, finish_reason="length", usage=USAGE, model="tiny-chat"
        )

    async def Ocr(self, request: router_pb2.OcrRequest, context: Ctx) -> router_pb2.OcrResponse:
        self.state.authenticate(self.state.record("Ocr", request, context))
        if request.async_mode:
            return router_pb2.OcrResponse(request_id="ocr-async", status=common_pb2.QUEUED, position=1)
        pages = _pages(request)
        kind = "pdf" if request.document.startswith(b"%PDF") else "png"
        text = "\f".join(p.text for p in pages)
        result = common_pb2.OcrResult(
            pages=pages, text=text, document_type=kind, page_count=4, engine="tesseract", model="tesseract"
        )
        return router_pb2.OcrResponse(request_id="ocr-1", status=common_pb2.SUCCEEDED, text=text, result=result)

    async def StreamOcr(self, request: router_pb2.StreamOcrRequest, context: Ctx) -> AsyncIterator[router_pb2.StreamOcrResponse]:
        self.state.authenticate(self.state.record("StreamOcr", request, context))
        yield router_pb2.StreamOcrResponse(request_id="ocr-2", status=common_pb2.QUEUED, position=1)
        for page in _pages(request):
            yield router_pb2.StreamOcrResponse(request_id="ocr-2", status=common_pb2.RUNNING, page=page, page_count=4)

    async def GetRequest(self, request: router_pb2.GetRequestRequest, context: Ctx) -> router_pb2.GetRequestResponse:
        self.state.authenticate(self.state.record("GetRequest", request, context))
        if request.request_id == "missing":
            raise NotFound("no request 'missing'")
        state = common_pb2.FAILED if request.request_id == "doomed" else common_pb2.SUCCEEDED
        return router_pb2.GetRequestResponse(request=_job(request.request_id, state))

    async def CancelRequest(self, request: router_pb2.CancelRequestRequest, context: Ctx) -> router_pb2.CancelRequestResponse:
        self.state.authenticate(self.state.record("CancelRequest", request, context))
        job = _job(request.request_id, common_pb2.CANCELLED)
        job.cancel_requested = True
        return router_pb2.CancelRequestResponse(request=job)

    async def WatchRequest(
        self, request: router_pb2.WatchRequestRequest, context: Ctx
    ) -> AsyncIterator[router_pb2.WatchRequestResponse]:
        self.state.authenticate(self.state.record("WatchRequest", request, context))
        rid = request.request_id
        yield router_pb2.WatchRequestResponse(event="position", request=_job(rid, common_pb2.QUEUED))
        running = _job(rid, common_pb2.RUNNING)
        running.backend = "cpu-0"
        yield router_pb2.WatchRequestResponse(event="granted", request=running)
        final = common_pb2.FAILED if rid == "doomed" else common_pb2.SUCCEEDED
        yield router_pb2.WatchRequestResponse(event="finished", request=_job(rid, final))


class AdminStandIn(admin_pb2_grpc.AdminServiceServicer):
    """Fixed admin answers; tokens are issued and rotated like the real service's (single-use refresh tokens)."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def _admin(self, method: str, request: Message, context: Ctx) -> None:
        self.state.authenticate(self.state.record(method, request, context), admin=True)

    async def IssueToken(self, request: admin_pb2.IssueTokenRequest, context: Ctx) -> admin_pb2.IssueTokenResponse:
        self.state.record("IssueToken", request, context)
        if request.grant_type == "refresh_token":
            await asyncio.sleep(self.state.refresh_delay)
            if self.state.refresh_tokens.pop(request.refresh_token, None) is None:
                raise Unauthenticated("refresh token is invalid or was used already")
            return self.state.issue("admin")
        if request.password != PASSWORD or request.username not in ("admin", "alice"):
            raise Unauthenticated("invalid username or password")
        return self.state.issue(request.username)

    async def RevokeToken(self, request: admin_pb2.RevokeTokenRequest, context: Ctx) -> admin_pb2.RevokeTokenResponse:
        self.state.record("RevokeToken", request, context)
        return admin_pb2.RevokeTokenResponse(revoked=1 if self.state.refresh_tokens.pop(request.refresh_token, None) else 0)

    async def ListModels(self, request: admin_pb2.ListModelsRequest, context: Ctx) -> admin_pb2.ListModelsResponse:
        self._admin("ListModels", request, context)
        model = admin_pb2.ModelInfo(model="tiny-chat", kind="chat", enabled=True, state="loaded", loaded_on=["cpu-0"])
        model.queue.processing, model.queue.waiting = 1, 2
        status = common_pb2.BackendStatus(
            backend="cpu-0", state=common_pb2.BACKEND_STATE_READY, loaded_models=["tiny-chat"], in_flight=1, capacity=10
        )
        backend = admin_pb2.BackendInfo(status=status, kind="textgen", address="127.0.0.1:50053", health="SERVING")
        return admin_pb2.ListModelsResponse(models=[model], backends=[backend])

    async def StartModel(self, request: admin_pb2.StartModelRequest, context: Ctx) -> admin_pb2.StartModelResponse:
        self._admin("StartModel", request, context)
        if request.model != "tiny-chat":
            raise NotFound(f"no model {request.model!r}")
        return admin_pb2.StartModelResponse(outcome="loaded", backend=request.backend or "cpu-0", elapsed_ms=1234.0)

    async def StopModel(self, request: admin_pb2.StopModelRequest, context: Ctx) -> admin_pb2.StopModelResponse:
        self._admin("StopModel", request, context)
        return admin_pb2.StopModelResponse(outcome="unloaded", backends=["cpu-0"], elapsed_ms=56.0)

    async def SwitchBackend(self, request: admin_pb2.SwitchBackendRequest, context: Ctx) -> admin_pb2.SwitchBackendResponse:
        self._admin("SwitchBackend", request, context)
        return admin_pb2.SwitchBackendResponse(outcome=f"switched to {request.model}", elapsed_ms=10.0)

    async def SleepBackend(self, request: admin_pb2.SleepBackendRequest, context: Ctx) -> admin_pb2.SleepBackendResponse:
        self._admin("SleepBackend", request, context)
        return admin_pb2.SleepBackendResponse(outcome=f"asleep at level {request.level}", elapsed_ms=20.0)

    async def WakeBackend(self, request: admin_pb2.WakeBackendRequest, context: Ctx) -> admin_pb2.WakeBackendResponse:
        self._admin("WakeBackend", request, context)
        return admin_pb2.WakeBackendResponse(outcome=f"woken: {request.backend}", elapsed_ms=30.0)

    async def GetQueueStats(self, request: admin_pb2.GetQueueStatsRequest, context: Ctx) -> admin_pb2.GetQueueStatsResponse:
        self._admin("GetQueueStats", request, context)
        return admin_pb2.GetQueueStatsResponse(
            model=request.model, processing=3, waiting=4, utilization=0.3, total_processed=120, max_concurrent=10, max_waiting=10
        )

    async def GetQueueSeries(self, request: admin_pb2.GetQueueSeriesRequest, context: Ctx) -> admin_pb2.GetQueueSeriesResponse:
        self._admin("GetQueueSeries", request, context)
        quiet = admin_pb2.QueueMinute(start=Timestamp(seconds=1_800_000_000), seconds=60)
        busy = admin_pb2.QueueMinute(
            start=Timestamp(seconds=1_800_000_060),
            seconds=30,
            succeeded=5,
            failed=1,
            finished_per_minute=12,
            total_ms=admin_pb2.SeriesPercentiles(p50=120, p95=300, p99=410, count=6),
            queue_wait_ms=admin_pb2.SeriesPercentiles(p50=2, p95=9, p99=9, count=6),
            peak_running=3,
            peak_waiting=1,
        )
        return admin_pb2.GetQueueSeriesResponse(model=request.model, bucket_seconds=60, minutes=[quiet, busy])

    async def ListCrashes(self, request: admin_pb2.ListCrashesRequest, context: Ctx) -> admin_pb2.ListCrashesResponse:
        self._admin("ListCrashes", request, context)
        event = admin_pb2.CrashEvent(
            id="c1",
            kind=admin_pb2.CRASH_KIND_LEASE_LOST,
            service="router",
            model="tiny-chat",
            request_id="r9",
            message="lease lapsed",
        )
        event.at.FromSeconds(1_800_000_000)
        return admin_pb2.ListCrashesResponse(events=[event])

    async def ListRequests(self, request: admin_pb2.ListRequestsRequest, context: Ctx) -> admin_pb2.ListRequestsResponse:
        self._admin("ListRequests", request, context)
        return admin_pb2.ListRequestsResponse(requests=[_job("r1"), _job("r2", common_pb2.FAILED)], next_page_token="p2")

    def _config(self) -> admin_pb2.ModelConfig:
        params = common_pb2.GenerationParams(max_tokens=64, temperature=0.7)
        return admin_pb2.ModelConfig(
            model="tiny-chat",
            version=self.state.config_version,
            max_concurrent=10,
            max_waiting=10,
            enabled=True,
            default_params=params,
        )

    async def GetModelConfig(self, request: admin_pb2.GetModelConfigRequest, context: Ctx) -> admin_pb2.GetModelConfigResponse:
        self._admin("GetModelConfig", request, context)
        return admin_pb2.GetModelConfigResponse(config=self._config())

    async def UpdateModelConfig(
        self, request: admin_pb2.UpdateModelConfigRequest, context: Ctx
    ) -> admin_pb2.UpdateModelConfigResponse:
        self._admin("UpdateModelConfig", request, context)
        if request.expected_version != self.state.config_version:
            raise Aborted(f"config of tiny-chat is at version {self.state.config_version}, not {request.expected_version}")
        self.state.config_version += 1
        config = self._config()
        patch = request.patch
        if patch.HasField("max_concurrent"):
            config.max_concurrent = patch.max_concurrent
        if patch.HasField("default_params"):
            config.default_params.CopyFrom(patch.default_params)
        return admin_pb2.UpdateModelConfigResponse(config=config)

    async def ListUsers(self, request: admin_pb2.ListUsersRequest, context: Ctx) -> admin_pb2.ListUsersResponse:
        self._admin("ListUsers", request, context)
        return admin_pb2.ListUsersResponse(users=[admin_pb2.UserInfo(username="admin", role="admin")])

    async def CreateUser(self, request: admin_pb2.CreateUserRequest, context: Ctx) -> admin_pb2.CreateUserResponse:
        self._admin("CreateUser", request, context)
        user = admin_pb2.UserInfo(username=request.username, role=request.role, allowed_client_ids=request.allowed_client_ids)
        return admin_pb2.CreateUserResponse(user=user)

    async def UpdateUser(self, request: admin_pb2.UpdateUserRequest, context: Ctx) -> admin_pb2.UpdateUserResponse:
        self._admin("UpdateUser", request, context)
        user = admin_pb2.UserInfo(username=request.username, role=request.role or "user", disabled=request.disabled)
        return admin_pb2.UpdateUserResponse(user=user)

    async def DeleteUser(self, request: admin_pb2.DeleteUserRequest, context: Ctx) -> admin_pb2.DeleteUserResponse:
        self._admin("DeleteUser", request, context)
        return admin_pb2.DeleteUserResponse()

    async def CreateApiKey(self, request: admin_pb2.CreateApiKeyRequest, context: Ctx) -> admin_pb2.CreateApiKeyResponse:
        self._admin("CreateApiKey", request, context)
        key = admin_pb2.ApiKeyInfo(
            key_id="k1", subject=request.subject or "admin", role=request.role or "user", name=request.name
        )
        return admin_pb2.CreateApiKeyResponse(key=key, api_key="aigw_k1_s3cr3t")

    async def ListApiKeys(self, request: admin_pb2.ListApiKeysRequest, context: Ctx) -> admin_pb2.ListApiKeysResponse:
        self._admin("ListApiKeys", request, context)
        return admin_pb2.ListApiKeysResponse(keys=[admin_pb2.ApiKeyInfo(key_id="k1", subject="admin", role="user")])

    async def RevokeApiKey(self, request: admin_pb2.RevokeApiKeyRequest, context: Ctx) -> admin_pb2.RevokeApiKeyResponse:
        self._admin("RevokeApiKey", request, context)
        key = admin_pb2.ApiKeyInfo(key_id=request.key_id, subject="admin", role="user")
        key.revoked_at.FromSeconds(1_800_000_000)
        return admin_pb2.RevokeApiKeyResponse(key=key)

    async def GetAutoSwitch(self, request: admin_pb2.GetAutoSwitchRequest, context: Ctx) -> admin_pb2.GetAutoSwitchResponse:
        self._admin("GetAutoSwitch", request, context)
        plan = admin_pb2.BackendPlan(backend="gpu-0", current_model="a", target_model="b", reason="b is queued")
        return admin_pb2.GetAutoSwitchResponse(enabled=self.state.autoswitch, window_days=7, cooldown_seconds=300, plan=[plan])

    async def SetAutoSwitch(self, request: admin_pb2.SetAutoSwitchRequest, context: Ctx) -> admin_pb2.SetAutoSwitchResponse:
        self._admin("SetAutoSwitch", request, context)
        self.state.autoswitch = request.enabled
        return admin_pb2.SetAutoSwitchResponse(enabled=request.enabled)


class StandInGateway:
    """Both APIs on one port, as Envoy serves them."""

    name: ServiceName = "router"
    service_names: Sequence[str] = (
        router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name,
        admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    )

    def __init__(self) -> None:
        self.state = GatewayState()
        self.health: Health | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def register(self, server: grpc.aio.Server) -> None:
        # The stand-in serves the RPCs the client calls; grpc answers UNIMPLEMENTED for the rest, as the stubs' base does.
        router_pb2_grpc.add_RouterServiceServicer_to_server(RouterStandIn(self.state), server)  # type: ignore[abstract]
        admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminStandIn(self.state), server)

    async def start(self, health: Health) -> None:
        self.health, self.loop = health, asyncio.get_running_loop()
        await health.set(True)

    def set_serving(self, serving: bool) -> None:
        """Flips the standard health status from another thread."""
        assert self.health is not None
        assert self.loop is not None
        asyncio.run_coroutine_threadsafe(self.health.set(serving), self.loop).result(5)

    async def stop(self) -> None:
        return None


@contextmanager
def serving(service: StandInGateway) -> Iterator[str]:
    """Runs the service on 127.0.0.1 in a thread with its own event loop; yields its address."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    bound: dict[str, Any] = {}

    async def start() -> None:
        server, port, health = await create_server(service, "127.0.0.1:0")
        await server.start()
        await service.start(health)
        bound.update(server=server, port=port)

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(bound["server"].stop(0))
        loop.close()

    thread = threading.Thread(target=run, name="stand-in-gateway", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the stand-in gateway did not start")
    try:
        yield f"127.0.0.1:{bound['port']}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
