"""Assembles the router service: its servicers, background work and health."""

from __future__ import annotations

import grpc

from aigw.router.v1 import router_pb2, router_pb2_grpc
from aigw_common.config import GatewayConfig, ServiceName
from aigw_common.server import Health


class RouterService:
    """Serves the generated servicers: every RPC answers UNIMPLEMENTED until built."""

    name: ServiceName = "router"
    service_names = [
        router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name,
    ]

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg

    def register(self, server: grpc.aio.Server) -> None:
        router_pb2_grpc.add_RouterServiceServicer_to_server(router_pb2_grpc.RouterServiceServicer(), server)  # type: ignore[abstract]

    async def start(self, health: Health) -> None:
        await health.set(True)

    async def stop(self) -> None:
        return None


def build(cfg: GatewayConfig) -> RouterService:
    return RouterService(cfg)
