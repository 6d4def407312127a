"""gRPC clients of the queue and the backends; downstream errors come out as domain errors (one place)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aigw.backend.v1 import backend_pb2, backend_pb2_grpc
from aigw.common.v1 import common_pb2
from aigw.ocr.v1 import ocr_pb2, ocr_pb2_grpc
from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw.textgen.v1 import textgen_pb2, textgen_pb2_grpc
from aigw_server.router.engines import EngineRoute, EngineTable, status_fingerprint
from aigw_server.router.queue_session import QueueSession
from aigw_server.runtime.auth import Account, Principal, api_key_principal
from aigw_server.runtime.authz import MeshTls
from aigw_server.runtime.channels import make_channel
from aigw_server.runtime.config import BackendConfig
from aigw_server.runtime.errors import GatewayError, NotFound, PermissionDenied, Unauthenticated, Unavailable, Unimplemented
from aigw_server.runtime.rpc_errors import from_rpc_error

log = logging.getLogger(__name__)
T = TypeVar("T")
QUEUE_CALL_SECONDS = 10.0
STATUS_CALL_SECONDS = 2.0


async def _call(pending: Awaitable[T]) -> T:
    try:
        return await pending
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None


async def _stream(call: grpc.aio.UnaryStreamCall) -> AsyncGenerator[T, None]:  # type: ignore[type-arg]
    """Yields a server stream's messages; closing early (or being cancelled) cancels the call."""
    try:
        async for item in call:
            yield item
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None
    finally:
        call.cancel()


class QueueClient:
    """The queue's QueueService, ModelConfigService and IdentityService, as the router uses them.

    With `session` (the default, `routing.queue_session`) the job calls of the hot path (submit,
    get, cancel, acquire, heartbeat, complete, fail, release) share one long-lived Session stream;
    otherwise, or against a queue that does not implement Session, each is a unary call. Either
    way a call raises the same domain errors.
    """

    def __init__(self, address: str, tls: MeshTls | None = None, session: bool = True) -> None:
        self.channel = make_channel(address, tls, "queue")
        self.jobs = queue_pb2_grpc.QueueServiceStub(self.channel)
        self.configs = queue_pb2_grpc.ModelConfigServiceStub(self.channel)
        self.identity = queue_pb2_grpc.IdentityServiceStub(self.channel)
        self.session = QueueSession(self.jobs.Session) if session else None

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        await self.channel.close(None)

    async def _job_call(self, field: str, unary: Callable[..., Awaitable[T]], request: Any, timeout: float) -> T:
        """One job call: over the session when there is one, else the unary RPC `unary`."""
        if self.session is not None:
            try:
                reply: T = await self.session.call(field, request, timeout)
                return reply
            except Unimplemented:
                log.warning("the queue does not implement Session; using unary calls")
                self.session = None
        return await _call(unary(request, timeout=timeout))

    async def submit(self, request: queue_pb2.SubmitRequest) -> queue_pb2.SubmitResponse:
        return await self._job_call("submit", self.jobs.Submit, request, QUEUE_CALL_SECONDS)

    async def get(self, request_id: str, include_payload: bool = False) -> common_pb2.Job:
        request = queue_pb2.GetJobRequest(request_id=request_id, include_payload=include_payload)
        reply: queue_pb2.GetJobResponse = await self._job_call("get_job", self.jobs.GetJob, request, QUEUE_CALL_SECONDS)
        return reply.job

    async def list_jobs(self, request: queue_pb2.ListJobsRequest) -> queue_pb2.ListJobsResponse:
        return await _call(self.jobs.ListJobs(request, timeout=QUEUE_CALL_SECONDS))

    async def cancel(self, request_id: str, requested_by: str) -> common_pb2.Job:
        request = queue_pb2.CancelJobRequest(request_id=request_id, requested_by=requested_by)
        reply: queue_pb2.CancelJobResponse = await self._job_call("cancel_job", self.jobs.CancelJob, request, QUEUE_CALL_SECONDS)
        return reply.job

    def watch(self, request_id: str) -> AsyncIterator[queue_pb2.WatchJobResponse]:
        return _stream(self.jobs.WatchJob(queue_pb2.WatchJobRequest(request_id=request_id)))

    async def acquire(
        self, worker_id: str, wait_ms: int, request_id: str = "", models: Sequence[str] = ()
    ) -> queue_pb2.AcquireJobResponse | None:
        """A granted job and its lease, or None when nothing was granted within wait_ms."""
        request = queue_pb2.AcquireJobRequest(worker_id=worker_id, request_id=request_id, models=models, wait_ms=wait_ms)
        timeout = wait_ms / 1000 + QUEUE_CALL_SECONDS
        reply: queue_pb2.AcquireJobResponse = await self._job_call("acquire_job", self.jobs.AcquireJob, request, timeout)
        return reply if reply.HasField("lease") else None

    async def heartbeat(self, request: queue_pb2.HeartbeatRequest) -> queue_pb2.HeartbeatResponse:
        return await self._job_call("heartbeat", self.jobs.Heartbeat, request, QUEUE_CALL_SECONDS)

    async def complete(self, request: queue_pb2.CompleteJobRequest) -> common_pb2.Job:
        reply: queue_pb2.CompleteJobResponse = await self._job_call(
            "complete_job", self.jobs.CompleteJob, request, QUEUE_CALL_SECONDS
        )
        return reply.job

    async def fail(self, request: queue_pb2.FailJobRequest) -> common_pb2.Job:
        reply: queue_pb2.FailJobResponse = await self._job_call("fail_job", self.jobs.FailJob, request, QUEUE_CALL_SECONDS)
        return reply.job

    async def release(self, request: queue_pb2.ReleaseJobRequest) -> common_pb2.Job:
        reply: queue_pb2.ReleaseJobResponse = await self._job_call(
            "release_job", self.jobs.ReleaseJob, request, QUEUE_CALL_SECONDS
        )
        return reply.job

    async def model_configs(self) -> Sequence[queue_pb2.ModelConfig]:
        reply = await _call(self.configs.ListModelConfigs(queue_pb2.ListModelConfigsRequest(), timeout=QUEUE_CALL_SECONDS))
        return reply.configs

    async def account(self, username: str) -> Account | None:
        """The user's current role and disabled flag, or None when there is no such user."""
        try:
            request = queue_pb2.GetUserRequest(username=username)
            user = (await _call(self.identity.GetUser(request, timeout=QUEUE_CALL_SECONDS))).user
        except NotFound:
            return None
        return Account(user.role, user.disabled)

    async def api_key_principal(self, key_id: str, secret_hash: str) -> Principal:
        """Who an active API key acts as now (aigw_server.runtime.auth.api_key_principal); UNAUTHENTICATED otherwise."""
        try:
            lookup = queue_pb2.LookupApiKeyRequest(key_id=key_id, secret_hash=secret_hash)
            key = (await _call(self.identity.LookupApiKey(lookup, timeout=QUEUE_CALL_SECONDS))).key
            user = (
                await _call(self.identity.GetUser(queue_pb2.GetUserRequest(username=key.subject), timeout=QUEUE_CALL_SECONDS))
            ).user
        except NotFound:
            raise Unauthenticated("API key is invalid or revoked") from None
        return api_key_principal(key.key_id, key.subject, key.role, (user.role, user.disabled, tuple(user.allowed_client_ids)))


class HealthClient:
    """The standard health check of a service the router depends on (the admin service, which issues tokens)."""

    def __init__(self, address: str) -> None:
        self.channel = make_channel(address)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    async def close(self) -> None:
        await self.channel.close(None)

    async def state(self) -> str:
        """ "serving", "starting" (it answers, not yet SERVING) or "unreachable"."""
        try:
            check = await _call(self.health.Check(health_pb2.HealthCheckRequest(), timeout=STATUS_CALL_SECONDS))
        except GatewayError:
            return "unreachable"
        return "serving" if check.status == health_pb2.HealthCheckResponse.SERVING else "starting"


class BackendClient:
    """One backend: its status through the BackendService contract (the same for every kind), its data plane by kind.

    Chat on a textgen backend goes straight to its HTTP engines when `direct` (routing.direct_engines):
    `engines` holds where they listen, refreshed from GetEngines whenever the status changes.
    """

    def __init__(self, cfg: BackendConfig, tls: MeshTls | None = None, direct: bool = False) -> None:
        self.name = cfg.name
        self.kind = cfg.kind
        self.channel = make_channel(cfg.address, tls, cfg.kind)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.lifecycle = backend_pb2_grpc.BackendServiceStub(self.channel)
        self.textgen = textgen_pb2_grpc.TextgenServiceStub(self.channel)
        self.ocr = ocr_pb2_grpc.OcrServiceStub(self.channel)
        self.engines = EngineTable(cfg.address) if direct and cfg.kind == "textgen" else None

    async def close(self) -> None:
        if self.engines is not None:
            await asyncio.gather(*(c.aclose() for c in self.engines.all_clients()))
        await self.channel.close(None)

    async def status(self) -> tuple[common_pb2.BackendStatus, bool]:
        """The backend's status and whether its health check says SERVING; refreshes the engines when it changed."""
        reply = await _call(self.lifecycle.GetStatus(backend_pb2.GetStatusRequest(), timeout=STATUS_CALL_SECONDS))
        check = await _call(self.health.Check(health_pb2.HealthCheckRequest(), timeout=STATUS_CALL_SECONDS))
        if self.engines is not None:
            await self._refresh_engines(status_fingerprint(reply.status))
        return reply.status, check.status == health_pb2.HealthCheckResponse.SERVING

    async def _refresh_engines(self, fingerprint: Hashable) -> None:
        assert self.engines is not None
        if self.engines.needs_refresh(fingerprint):
            try:
                reply = await _call(self.lifecycle.GetEngines(backend_pb2.GetEnginesRequest(), timeout=STATUS_CALL_SECONDS))
            except (Unimplemented, PermissionDenied) as exc:
                # A backend that predates direct calls, or does not let this router see its engines: through it.
                log.warning("backend lists no engines for direct calls", extra={"backend": self.name, "code": exc.code})
                self.engines.update(fingerprint, [])
            except GatewayError as exc:
                # The engines may have changed: calls go through the backend until the next poll reads them.
                log.warning("cannot read the backend's engines; asking again", extra={"backend": self.name, "code": exc.code})
                self.engines.update(None, [])
            else:
                self.engines.update(fingerprint, reply.engines)
        await asyncio.gather(*(c.aclose() for c in self.engines.closable()))

    @contextlib.asynccontextmanager
    async def engine_route(self, model: str) -> AsyncIterator[EngineRoute | None]:
        """The direct route for `model` while the call runs; None when the call goes through the backend's RPCs.

        A failed direct call makes the next status poll ask for the engines again (a restart brings a new key).
        """
        route = self.engines.acquire(model) if self.engines is not None else None
        if route is None:
            yield None
            return
        assert self.engines is not None
        try:
            yield route
        except Unavailable:
            self.engines.invalidate()
            raise
        finally:
            self.engines.release(route)

    async def generate(self, request: textgen_pb2.GenerateRequest, timeout: float) -> common_pb2.ChatResult:
        return (await _call(self.textgen.Generate(request, timeout=timeout))).result

    def stream_generate(
        self, request: textgen_pb2.StreamGenerateRequest, timeout: float
    ) -> AsyncGenerator[textgen_pb2.StreamGenerateResponse, None]:
        return _stream(self.textgen.StreamGenerate(request, timeout=timeout))

    async def recognize(self, request: ocr_pb2.RecognizeRequest, timeout: float) -> common_pb2.OcrResult:
        return (await _call(self.ocr.Recognize(request, timeout=timeout))).result

    def stream_recognize(
        self, request: ocr_pb2.StreamRecognizeRequest, timeout: float
    ) -> AsyncGenerator[ocr_pb2.StreamRecognizeResponse, None]:
        return _stream(self.ocr.StreamRecognize(request, timeout=timeout))
