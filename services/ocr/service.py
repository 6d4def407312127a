"""Assembles the ocr service: its servicers, background work and health."""

from __future__ import annotations

import grpc

from aigw.ocr.v1 import ocr_pb2, ocr_pb2_grpc
from aigw_common.config import GatewayConfig, ServiceName
from aigw_common.server import Health


class OcrService:
    """Serves the generated servicers: every RPC answers UNIMPLEMENTED until built."""

    name: ServiceName = "ocr"
    service_names = [
        ocr_pb2.DESCRIPTOR.services_by_name["OcrService"].full_name,
    ]

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg

    def register(self, server: grpc.aio.Server) -> None:
        ocr_pb2_grpc.add_OcrServiceServicer_to_server(ocr_pb2_grpc.OcrServiceServicer(), server)  # type: ignore[abstract]

    async def start(self, health: Health) -> None:
        await health.set(True)

    async def stop(self) -> None:
        return None


def build(cfg: GatewayConfig) -> OcrService:
    return OcrService(cfg)
