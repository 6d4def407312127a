"""Assembles the ocr service for one OCR backend (AIGW_BACKEND, default the first): engine, workers, servicer, health."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence

import grpc
from PIL import Image

from aigw.backend.v1 import backend_pb2, backend_pb2_grpc
from aigw.ocr.v1 import ocr_pb2, ocr_pb2_grpc
from aigw_server.engines.crashlog import QueueCrashLog
from aigw_server.engines.supervisor import CrashSink
from aigw_server.ocr.backend import OcrBackend
from aigw_server.ocr.deepseek import DeepSeekOcrEngine
from aigw_server.ocr.languages import LanguageIdentification
from aigw_server.ocr.ocr_engine import OcrEngine
from aigw_server.ocr.servicer import OcrLifecycleServicer, OcrServicer
from aigw_server.ocr.tesseract import TesseractEngine
from aigw_server.ocr.workers import WorkerPool
from aigw_server.runtime.authz import mesh_tls
from aigw_server.runtime.config import BackendConfig, ConfigError, GatewayConfig, ServiceName
from aigw_server.runtime.errors import GatewayError
from aigw_server.runtime.server import Health

log = logging.getLogger(__name__)


class OcrService:
    """One OCR backend's gRPC service; health is SERVING while its engine has a model loaded."""

    name: ServiceName = "ocr"
    service_names = [
        ocr_pb2.DESCRIPTOR.services_by_name["OcrService"].full_name,
        backend_pb2.DESCRIPTOR.services_by_name["BackendService"].full_name,
    ]

    def __init__(self, cfg: GatewayConfig, backend: OcrBackend, crash_log: QueueCrashLog | None = None) -> None:
        self.cfg = cfg
        self.backend = backend
        self.crash_log = crash_log
        self.bind_address = backend.backend.address or cfg.services.ocr.address
        first_ocr = cfg.backends_of("ocr")[0].name == backend.backend.name
        self.metrics_port = backend.backend.metrics_port or (cfg.services.ocr.metrics_port if first_ocr else 0)
        self._loading: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None

    def register(self, server: grpc.aio.Server) -> None:
        ocr_pb2_grpc.add_OcrServiceServicer_to_server(OcrServicer(self.backend), server)
        backend_pb2_grpc.add_BackendServiceServicer_to_server(OcrLifecycleServicer(self.backend), server)

    async def start(self, health: Health) -> None:
        self.backend.on_health(health.set)
        await health.set(False)
        if self.backend.backend.models:
            self._loading = asyncio.create_task(self._load_initial(), name="ocr-initial-load")
        self._watching = asyncio.create_task(self.backend.watch(), name="ocr-health-watch")

    async def _load_initial(self) -> None:
        try:
            done = await self.backend.load()
            log.info("model loaded", extra={"outcome": done.outcome, "elapsed_ms": round(done.elapsed_ms, 1)})
        except GatewayError as exc:
            log.error("initial model load failed", extra={"error": exc.message})

    async def wait_loaded(self) -> None:
        """Waits for the initial load started by `start` (tests and tools)."""
        if self._loading is not None:
            await self._loading

    async def stop(self) -> None:
        for task in (self._loading, self._watching):
            if task is not None:
                task.cancel()
        await self.backend.close()
        if self.crash_log is not None:
            await self.crash_log.close()


def select_backend(cfg: GatewayConfig, name: str = "") -> BackendConfig:
    """The OCR backend named `name` (or by AIGW_BACKEND), else the first one configured."""
    name = name or os.environ.get("AIGW_BACKEND", "")
    if name:
        chosen = cfg.backend(name)
        if chosen.kind != "ocr":
            raise ConfigError(f"backends: {name!r} is a {chosen.kind} backend, not an ocr one")
        return chosen
    backends = cfg.backends_of("ocr")
    if not backends:
        raise ConfigError("backends: no backend of kind ocr is configured")
    return backends[0]


class _NoCrashLog:
    """The crash sink of an engine that supervises no process (Tesseract, an attached DeepSeek-OCR server)."""

    def record(
        self, kind: str, model: str, message: str, log_tail: Sequence[str] = (), details: Mapping[str, str] | None = None
    ) -> None:
        """Nothing runs here that could crash on its own."""


NO_CRASH_LOG = _NoCrashLog()


def make_engine(
    cfg: GatewayConfig, backend: BackendConfig, pool: WorkerPool, identification: LanguageIdentification, crash_log: CrashSink
) -> OcrEngine:
    """The engine the backend names."""
    if backend.engine == "tesseract":
        return TesseractEngine(backend, pool, identification)
    if backend.engine == "deepseek-ocr":
        return DeepSeekOcrEngine(backend, pool, identification, crash_log)
    raise ConfigError(f"backends: {backend.name!r} has engine {backend.engine!r}; an ocr backend uses tesseract or deepseek-ocr")


def build(cfg: GatewayConfig, backend_name: str = "") -> OcrService:
    """The ocr service for one backend of `cfg`."""
    backend = select_backend(cfg, backend_name)
    # Pillow refuses images past twice this (DecompressionBombError) and warns past it; the documents module checks too.
    Image.MAX_IMAGE_PIXELS = backend.max_pixels
    pool = WorkerPool(backend.workers)
    identification = LanguageIdentification()
    # Only a supervised engine has crashes to record (Tesseract runs in this process).
    supervised = backend.engine == "deepseek-ocr" and backend.mode == "supervise"
    crash_log = QueueCrashLog(cfg.services.queue.address, backend.name, mesh_tls(cfg, "ocr"), "ocr") if supervised else None
    engine = make_engine(cfg, backend, pool, identification, crash_log or NO_CRASH_LOG)
    return OcrService(cfg, OcrBackend(cfg, backend, engine, pool, identification), crash_log)
