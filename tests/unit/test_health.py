"""The standard health service of a server: set per service and overall, and NOT_SERVING for good once stopping."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aigw_server.runtime.server import Health

SERVICE = "aigw.example.v1.ExampleService"


async def statuses(health: Health) -> dict[str, str]:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            check: Any = health_pb2_grpc.HealthStub(channel).Check
            answers = {}
            for name in ("", SERVICE):
                reply = await check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                answers[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            return answers
    finally:
        await server.stop(0)


async def test_set_follows_each_change_until_shutdown_makes_it_final() -> None:
    health = Health([SERVICE])
    await health.set(True)
    assert await statuses(health) == {"": "SERVING", SERVICE: "SERVING"}
    await health.set(False)
    assert await statuses(health) == {"": "NOT_SERVING", SERVICE: "NOT_SERVING"}
    await health.set(True)
    await health.shutdown()
    assert await statuses(health) == {"": "NOT_SERVING", SERVICE: "NOT_SERVING"}
    await health.set(True)  # a background loop still running during the grace period
    assert await statuses(health) == {"": "NOT_SERVING", SERVICE: "NOT_SERVING"}
