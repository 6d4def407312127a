"""Assembles the admin service: its servicers, background work and health."""

from __future__ import annotations

import grpc

from aigw.admin.v1 import admin_pb2, admin_pb2_grpc
from aigw_common.config import GatewayConfig, ServiceName
from aigw_common.server import Health


class AdminService:
    """Serves the generated servicers: every RPC answers UNIMPLEMENTED until built."""

    name: ServiceName = "admin"
    service_names = [
        admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    ]

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg

    def register(self, server: grpc.aio.Server) -> None:
        admin_pb2_grpc.add_AdminServiceServicer_to_server(admin_pb2_grpc.AdminServiceServicer(), server)  # type: ignore[abstract]

    async def start(self, health: Health) -> None:
        await health.set(True)

    async def stop(self) -> None:
        return None


def build(cfg: GatewayConfig) -> AdminService:
    return AdminService(cfg)
