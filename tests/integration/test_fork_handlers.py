"""Child processes started while gRPC is busy: none is aborted by gRPC's fork handlers.

A service starts model servers and Tesseract from its event loop while its gRPC threads serve calls.
With gRPC's fork handlers on, a forked child can abort before its exec (a failed check in gRPC's epoll
poller; the model server then "exits during startup with SIGABRT, no output"), and gRPC logs that it
skipped them. The package turns them off before gRPC is imported; this runs a service-like process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SERVICE_LIKE = """
import asyncio
import aigw_server  # first, as every service's entry point imports it
import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

async def main() -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    running = True

    async def calls() -> None:
        while running:
            await stub.Check(health_pb2.HealthCheckRequest())

    callers = [asyncio.create_task(calls()) for _ in range(4)]
    codes = []
    for _ in range(300):
        child = await asyncio.create_subprocess_exec("/bin/true")
        codes.append(await child.wait())
    running = False
    await asyncio.gather(*callers)
    await channel.close()
    await server.stop(0)
    print(sum(code != 0 for code in codes))

uvloop.run(main())
"""


def test_children_started_under_grpc_load_all_exec() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SERVICE_LIKE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO}:{REPO / 'gen'}"},
    )
    assert done.stdout.strip() == "0", f"children that died before their exec: {done.stdout.strip()}\n{done.stderr}"
    assert "fork_posix" not in done.stderr, done.stderr
