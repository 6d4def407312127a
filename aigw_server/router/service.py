"""Assembles the router service: its servicer, the queue and backend clients, and the background loops."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import socket
import uuid
from collections.abc import Mapping

import grpc

from aigw.router.v1 import router_pb2, router_pb2_grpc
from aigw_server.router.backends import BackendPool
from aigw_server.router.background import ConfigRefresher, ReadinessWatch, StatusPoller
from aigw_server.router.catalog import DynamicModel, ModelCatalog
from aigw_server.router.clients import BackendClient, HealthClient
from aigw_server.router.convert import dynamic_model
from aigw_server.router.gate import Gate
from aigw_server.router.jobs.inference import Inference
from aigw_server.router.jobs.orphans import OrphanWorkers
from aigw_server.router.jobs.own_jobs import OwnJobs
from aigw_server.router.jobs.runner import JobRunner
from aigw_server.router.ocr_checks import DocumentRules, OcrPreflight
from aigw_server.router.ratelimit import RateLimiter
from aigw_server.router.servicer import RouterServicer
from aigw_server.runtime.auth import Authenticator, TokenVerifier, resolve_jwt_secret
from aigw_server.runtime.authz import mesh_tls
from aigw_server.runtime.config import BackendConfig, ConfigError, GatewayConfig, ServiceName
from aigw_server.runtime.queue_client import QueueClient
from aigw_server.runtime.server import Health


def new_worker_id() -> str:
    """A worker id unique to this process (leases and owned jobs name it)."""
    return f"router-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def gateway_version() -> str:
    try:
        return importlib.metadata.version("aigw")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def check_routing(cfg: GatewayConfig) -> None:
    """Cross-field checks of the router's part of the config, with the key named."""
    routing = cfg.routing
    if routing.workers < 0:
        raise ConfigError("routing.workers: must be >= 0")
    if routing.status_interval_seconds <= 0:
        raise ConfigError("routing.status_interval_seconds: must be > 0")
    if routing.saturation_threshold <= 0:
        raise ConfigError("routing.saturation_threshold: must be > 0")
    for i, backend in enumerate(cfg.backends):
        if not backend.address:
            raise ConfigError(f"backends[{i}].address: required (the {backend.kind} service the router calls)")


def document_rules(cfg: GatewayConfig) -> DocumentRules:
    """The most any OCR backend of the config accepts."""
    ocr = cfg.backends_of("ocr") or (BackendConfig(),)
    return DocumentRules(cfg.max_document_bytes, max(b.max_pages for b in ocr), max(b.max_pixels for b in ocr))


class RouterService:
    """The public inference API of the mesh."""

    name: ServiceName = "router"
    service_names = [router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name]

    def __init__(self, cfg: GatewayConfig, worker_id: str = "") -> None:
        check_routing(cfg)
        self.cfg = cfg
        self.worker_id = worker_id or new_worker_id()
        tls = mesh_tls(cfg, "router")
        self.queue = QueueClient.connect(cfg.services.queue.address, tls, cfg.routing.queue_session)
        self.catalog = ModelCatalog(cfg.models)
        self.pool = BackendPool(cfg.backends, cfg.routing)
        self.backends = {b.name: BackendClient(b, tls, cfg.routing.direct_engines) for b in cfg.backends}
        verifier = TokenVerifier(cfg.auth, resolve_jwt_secret(cfg))
        self.gate = Gate(
            Authenticator(verifier, self.queue.api_key_principal, users=self.queue.account), RateLimiter(cfg.rate_limit)
        )
        self.runner = JobRunner(self.queue, self.pool, self.backends, self.worker_id)
        self.own = OwnJobs(self.queue, self.runner)
        self.inference = Inference(self.queue, self.own, self.worker_id)
        self.admin = HealthClient(cfg.endpoint("admin").address)
        self.poller = StatusPoller(self.pool, self.backends, cfg.routing.status_interval_seconds, self.admin)
        self.refresher = ConfigRefresher(self.dynamic_models, self.catalog)
        self.readiness = ReadinessWatch(self.refresher, self.poller)
        self.poller.observer = self.refresher.observer = self.readiness.observe
        self.workers = OrphanWorkers(self.queue, self.runner, self.pool, cfg.routing.workers)
        self.tasks: list[asyncio.Task[None]] = []

    async def dynamic_models(self) -> Mapping[str, DynamicModel]:
        """Every model's dynamic config as the queue's ModelConfigService has it now."""
        return {c.model: dynamic_model(c) for c in await self.queue.model_configs()}

    def register(self, server: grpc.aio.Server) -> None:
        servicer = RouterServicer(
            self.gate,
            self.catalog,
            self.inference,
            self.queue,
            self.runner,
            (self.readiness, gateway_version()),
            OcrPreflight(document_rules(self.cfg), self.pool.languages),
        )
        router_pb2_grpc.add_RouterServiceServicer_to_server(servicer, server)

    async def start(self, health: Health) -> None:
        """NOT_SERVING until the mesh can serve; from then on health follows readiness (`GET /health`)."""
        await health.set(False)
        self.readiness.publish = health.set
        await asyncio.gather(self.poller.poll_once(), self.refresher.refresh_once())
        self.tasks = [asyncio.create_task(loop) for loop in (self.poller.run(), self.refresher.run(), self.workers.run())]

    def draining(self) -> None:
        """The server is about to stop: calls it cuts leave their jobs to another worker instead of cancelling them."""
        self.own.draining = True

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.own.stop()
        await asyncio.gather(self.queue.close(), self.admin.close(), *(b.close() for b in self.backends.values()))


def build(cfg: GatewayConfig) -> RouterService:
    return RouterService(cfg)
