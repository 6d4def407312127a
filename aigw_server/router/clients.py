"""gRPC clients of the backends and the admin service's health; downstream errors come out as domain errors.

The queue's client is the services' shared one (`aigw_server.runtime.queue_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Hashable

from grpc_health.v1 import health_pb2, health_pb2_grpc

from aigw.backend.v1 import backend_pb2, backend_pb2_grpc
from aigw.common.v1 import common_pb2
from aigw.ocr.v1 import ocr_pb2, ocr_pb2_grpc
from aigw.textgen.v1 import textgen_pb2, textgen_pb2_grpc
from aigw_server.router.engines import EngineRoute, EngineTable, status_fingerprint
from aigw_server.runtime.authz import MeshTls
from aigw_server.runtime.channels import make_channel
from aigw_server.runtime.config import BackendConfig
from aigw_server.runtime.errors import GatewayError, PermissionDenied, Unavailable, Unimplemented
from aigw_server.runtime.queue_client import server_stream, unary

log = logging.getLogger(__name__)
STATUS_CALL_SECONDS = 2.0


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
            check = await unary(self.health.Check(health_pb2.HealthCheckRequest(), timeout=STATUS_CALL_SECONDS))
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
        """The backend's status and whether its health check says SERVING; refreshes the engines when it changed.

        A backend that does not answer may be gone (a deleted pod) or come back as another process (a
        replaced pod: same status, new engine address): its engines are dropped, their idle clients closed,
        and read again once it answers.
        """
        try:
            reply = await unary(self.lifecycle.GetStatus(backend_pb2.GetStatusRequest(), timeout=STATUS_CALL_SECONDS))
            check = await unary(self.health.Check(health_pb2.HealthCheckRequest(), timeout=STATUS_CALL_SECONDS))
        except GatewayError:
            if self.engines is not None:
                self.engines.update(None, [])
                await asyncio.gather(*(c.aclose() for c in self.engines.closable()))
            raise
        if self.engines is not None:
            await self._refresh_engines(status_fingerprint(reply.status))
        return reply.status, check.status == health_pb2.HealthCheckResponse.SERVING

    async def _refresh_engines(self, fingerprint: Hashable) -> None:
        assert self.engines is not None
        if self.engines.needs_refresh(fingerprint):
            try:
                reply = await unary(self.lifecycle.GetEngines(backend_pb2.GetEnginesRequest(), timeout=STATUS_CALL_SECONDS))
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
        return (await unary(self.textgen.Generate(request, timeout=timeout))).result

    def stream_generate(
        self, request: textgen_pb2.StreamGenerateRequest, timeout: float
    ) -> AsyncGenerator[textgen_pb2.StreamGenerateResponse, None]:
        return server_stream(self.textgen.StreamGenerate(request, timeout=timeout))

    async def recognize(self, request: ocr_pb2.RecognizeRequest, timeout: float) -> common_pb2.OcrResult:
        return (await unary(self.ocr.Recognize(request, timeout=timeout))).result

    def stream_recognize(
        self, request: ocr_pb2.StreamRecognizeRequest, timeout: float
    ) -> AsyncGenerator[ocr_pb2.StreamRecognizeResponse, None]:
        return server_stream(self.ocr.StreamRecognize(request, timeout=timeout))
