"""Shared pieces of the textgen integration tests: configs, a crash-log recorder, gRPC waits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aigw.backend.v1 import backend_pb2, backend_pb2_grpc
from aigw.common.v1 import common_pb2
from aigw.textgen.v1 import textgen_pb2, textgen_pb2_grpc
from aigw_server.runtime.config import GatewayConfig, parse_config
from aigw_server.runtime.server import create_server
from aigw_server.textgen.service import TextgenService

STARTUP_SECONDS = 120.0


def raw_config(
    model_dir: Path,
    *,
    mode: str = "supervise",
    port: int = 0,
    url: str = "",
    queue_port: int = 0,
    database: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A gateway config with one transformers backend serving two names of the tiny model."""
    return {
        "mesh_tls": {"mode": "plaintext"},  # in-process services on loopback: no service identity
        "database": database or {},
        "services": {"queue": {"port": queue_port, "metrics_port": 0}, "textgen": {"metrics_port": 0}},
        "models": {
            "tiny-chat": {"path": str(model_dir), "default_max_tokens": 16},
            "tiny-chat-b": {"path": str(model_dir), "default_max_tokens": 16},
            "elsewhere": {},
        },
        "backends": [
            {
                "name": "cpu-test",
                "kind": "textgen",
                "engine": "transformers",
                "mode": mode,
                "port": port,
                "url": url,
                "models": ["tiny-chat", "tiny-chat-b"] if mode == "supervise" else ["tiny-chat"],
                "initial_model": "tiny-chat",
                "capacity": 4,
                "startup_timeout_seconds": STARTUP_SECONDS,
            }
        ],
    }


def config(model_dir: Path, **kwargs: Any) -> GatewayConfig:
    return parse_config(raw_config(model_dir, **kwargs), env={})


def chat(text: str = "Hello! What is a token?", **params: Any) -> common_pb2.ChatJob:
    return common_pb2.ChatJob(
        messages=[common_pb2.ChatMessage(role="user", content=text)], params=common_pb2.GenerationParams(**params)
    )


class Client:
    """The textgen, lifecycle (BackendService) and health stubs on one channel."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.textgen: Any = textgen_pb2_grpc.TextgenServiceStub(self.channel)
        self.lifecycle: Any = backend_pb2_grpc.BackendServiceStub(self.channel)
        self.health: Any = health_pb2_grpc.HealthStub(self.channel)

    async def health_status(self) -> str:
        reply = await self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return name

    async def status(self) -> common_pb2.BackendStatus:
        reply = await self.lifecycle.GetStatus(backend_pb2.GetStatusRequest(), timeout=5)
        status: common_pb2.BackendStatus = reply.status
        return status

    async def state(self) -> str:
        return common_pb2.BackendState.Name((await self.status()).state)

    async def wait_health(self, want: str, timeout: float) -> float:
        """Seconds until health says `want`; fails with the last answer."""
        start = time.monotonic()
        last = ""
        while time.monotonic() - start < timeout:
            last = await self.health_status()
            if last == want:
                return time.monotonic() - start
            await asyncio.sleep(0.05)
        raise AssertionError(f"health not {want} after {timeout}s (last {last}; status {await self.status()})")

    async def generate(self, model: str = "tiny-chat", **params: Any) -> textgen_pb2.GenerateResponse:
        reply: textgen_pb2.GenerateResponse = await self.textgen.Generate(
            textgen_pb2.GenerateRequest(model=model, chat=chat(**params), request_id="it-1"), timeout=60
        )
        return reply

    async def close(self) -> None:
        await self.channel.close(None)


@contextlib.asynccontextmanager
async def serving(service: TextgenService) -> AsyncIterator[Client]:
    """The service on an in-process server (port 0), and a client of it."""
    server, port, health = await create_server(service, "127.0.0.1:0")
    await server.start()
    await service.start(health)
    client = Client(f"127.0.0.1:{port}")
    try:
        yield client
    finally:
        await client.close()
        await server.stop(0)
        await service.stop()
