"""Assembles the textgen service: settings, crash log, backend, servicer and health."""

from __future__ import annotations

import os
from collections.abc import Mapping

import grpc

from aigw.backend.v1 import backend_pb2, backend_pb2_grpc
from aigw.textgen.v1 import textgen_pb2, textgen_pb2_grpc
from aigw_server.engines.crashlog import QueueCrashLog
from aigw_server.runtime.authz import MeshTls, mesh_tls
from aigw_server.runtime.config import GatewayConfig, ServiceName
from aigw_server.runtime.server import Health
from aigw_server.textgen.backend import TextgenBackend
from aigw_server.textgen.servicer import TextgenLifecycleServicer, TextgenServicer
from aigw_server.textgen.settings import TextgenSettings, resolve_settings


class TextgenService:
    """One backend's textgen service; it binds the backend's own address (`bind_address`)."""

    name: ServiceName = "textgen"
    service_names = [
        textgen_pb2.DESCRIPTOR.services_by_name["TextgenService"].full_name,
        backend_pb2.DESCRIPTOR.services_by_name["BackendService"].full_name,
    ]

    def __init__(self, settings: TextgenSettings, tls: MeshTls | None = None) -> None:
        self.settings = settings
        self.bind_address = settings.address
        self.metrics_port = settings.metrics_port
        self.crash_log = QueueCrashLog(settings.queue_address, settings.name, tls)
        self.backend = TextgenBackend(settings, self.crash_log)

    def register(self, server: grpc.aio.Server) -> None:
        textgen_pb2_grpc.add_TextgenServiceServicer_to_server(TextgenServicer(self.backend), server)
        backend_pb2_grpc.add_BackendServiceServicer_to_server(TextgenLifecycleServicer(self.backend), server)

    async def start(self, health: Health) -> None:
        await self.backend.start(health.set)

    async def stop(self) -> None:
        await self.backend.stop()
        await self.crash_log.close()


def build(cfg: GatewayConfig, env: Mapping[str, str] | None = None) -> TextgenService:
    """The service of the backend named by AIGW_BACKEND (default: the first textgen backend)."""
    return TextgenService(resolve_settings(cfg, os.environ if env is None else env), tls=mesh_tls(cfg, "textgen"))
