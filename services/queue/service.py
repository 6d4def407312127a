"""Assembles the queue service: its servicers, background work and health."""

from __future__ import annotations

import grpc

from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw_common.config import GatewayConfig, ServiceName
from aigw_common.server import Health


class QueueService:
    """Serves the generated servicers: every RPC answers UNIMPLEMENTED until built."""

    name: ServiceName = "queue"
    service_names = [
        queue_pb2.DESCRIPTOR.services_by_name["QueueService"].full_name,
        queue_pb2.DESCRIPTOR.services_by_name["CrashLogService"].full_name,
        queue_pb2.DESCRIPTOR.services_by_name["ModelConfigService"].full_name,
        queue_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name,
        queue_pb2.DESCRIPTOR.services_by_name["AutoSwitchStoreService"].full_name,
    ]

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg

    def register(self, server: grpc.aio.Server) -> None:
        queue_pb2_grpc.add_QueueServiceServicer_to_server(queue_pb2_grpc.QueueServiceServicer(), server)  # type: ignore[abstract]
        queue_pb2_grpc.add_CrashLogServiceServicer_to_server(queue_pb2_grpc.CrashLogServiceServicer(), server)  # type: ignore[abstract]
        queue_pb2_grpc.add_ModelConfigServiceServicer_to_server(queue_pb2_grpc.ModelConfigServiceServicer(), server)  # type: ignore[abstract]
        queue_pb2_grpc.add_IdentityServiceServicer_to_server(queue_pb2_grpc.IdentityServiceServicer(), server)  # type: ignore[abstract]
        queue_pb2_grpc.add_AutoSwitchStoreServiceServicer_to_server(queue_pb2_grpc.AutoSwitchStoreServiceServicer(), server)  # type: ignore[abstract]

    async def start(self, health: Health) -> None:
        await health.set(True)

    async def stop(self) -> None:
        return None


def build(cfg: GatewayConfig) -> QueueService:
    return QueueService(cfg)
