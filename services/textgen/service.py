"""Assembles the textgen service: its servicers, background work and health."""

from __future__ import annotations

import grpc

from aigw.textgen.v1 import textgen_pb2, textgen_pb2_grpc
from aigw_common.config import GatewayConfig, ServiceName
from aigw_common.server import Health


class TextgenService:
    """Serves the generated servicers: every RPC answers UNIMPLEMENTED until built."""

    name: ServiceName = "textgen"
    service_names = [
        textgen_pb2.DESCRIPTOR.services_by_name["TextgenService"].full_name,
    ]

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg

    def register(self, server: grpc.aio.Server) -> None:
        textgen_pb2_grpc.add_TextgenServiceServicer_to_server(textgen_pb2_grpc.TextgenServiceServicer(), server)  # type: ignore[abstract]

    async def start(self, health: Health) -> None:
        await health.set(True)

    async def stop(self) -> None:
        return None


def build(cfg: GatewayConfig) -> TextgenService:
    return TextgenService(cfg)
