"""Shared pieces of the admin integration tests: configs, in-process queue and admin servers, clients and credentials."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from aigw.admin.v1 import admin_pb2, admin_pb2_grpc
from aigw.queue.v1 import queue_pb2_grpc
from aigw_server.admin.service import AdminService
from aigw_server.queue.service import build as build_queue
from aigw_server.runtime.config import GatewayConfig, parse_config
from aigw_server.runtime.rpc_errors import retry_after_of
from aigw_server.runtime.server import create_server

SECRET = "admin-integration-secret-" + "k" * 40
ADMIN_PASSWORD = "bootstrap-admin-password-1"
READY_SECONDS = 20.0


def raw_config(ferretdb_uri: str, db_name: str, data_dir: Path, **sections: Any) -> dict[str, Any]:
    """A mesh config on the test's own database, with fixed secrets; `sections` replace or extend sections."""
    raw: dict[str, Any] = {
        "data_dir": str(data_dir),
        "mesh_tls": {"mode": "plaintext"},  # in-process services on loopback: no service identity
        "database": {"uri": ferretdb_uri, "name": db_name},
        "services": {name: {"port": 0, "metrics_port": 0} for name in ("queue", "admin", "textgen", "ocr", "router")},
        "auth": {"jwt_secret": SECRET, "admin_password": ADMIN_PASSWORD, "login_attempts_per_minute": 1000},
        "models": {"chat-a": {"kind": "chat", "max_concurrent": 10}},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


def with_queue_port(raw: dict[str, Any], port: int) -> GatewayConfig:
    """The config pointing at the queue service listening on `port`."""
    services = {**raw["services"], "queue": {"port": port, "metrics_port": 0}}
    return parse_config({**raw, "services": services}, env={})


@dataclass
class Running:
    """An in-process server and a channel to it."""

    address: str
    channel: grpc.aio.Channel


@contextlib.asynccontextmanager
async def serve(service: Any) -> AsyncIterator[Running]:
    """Runs `service` on a free loopback port until the block ends."""
    server, port, health = await create_server(service, "127.0.0.1:0")
    await server.start()
    await service.start(health)
    address = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(address)
    try:
        yield Running(address, channel)
    finally:
        await channel.close(None)
        await server.stop(0)
        await service.stop()


@dataclass
class Mesh:
    """The queue and admin services of one test, with typed-as-Any stubs (grpc-stubs types aio stubs as sync)."""

    cfg: GatewayConfig
    admin_service: AdminService
    admin_address: str
    admin: Any
    queue: Any
    configs: Any
    crashes: Any

    async def login(
        self, username: str = "admin", password: str = ADMIN_PASSWORD, **metadata: str
    ) -> admin_pb2.IssueTokenResponse:
        request = admin_pb2.IssueTokenRequest(username=username, password=password)
        reply: admin_pb2.IssueTokenResponse = await self.admin.IssueToken(request, metadata=tuple(metadata.items()), timeout=10)
        return reply

    async def admin_token(self) -> str:
        return (await self.login()).access_token


@contextlib.asynccontextmanager
async def mesh(raw: dict[str, Any]) -> AsyncIterator[Mesh]:
    """The queue service on the test's database and the admin service in front of it, ready to log in."""
    queue_cfg = parse_config(raw, env={})
    async with serve(build_queue(queue_cfg)) as queue:
        cfg = with_queue_port(raw, int(queue.address.rsplit(":", 1)[1]))
        admin_service = AdminService(cfg)
        async with serve(admin_service) as admin:
            await asyncio.wait_for(admin_service.ready.wait(), READY_SECONDS)
            yield Mesh(
                cfg,
                admin_service,
                admin.address,
                admin_pb2_grpc.AdminServiceStub(admin.channel),
                queue_pb2_grpc.QueueServiceStub(queue.channel),
                queue_pb2_grpc.ModelConfigServiceStub(queue.channel),
                queue_pb2_grpc.CrashLogServiceStub(queue.channel),
            )


def bearer(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


def bad_field(err: grpc.aio.AioRpcError) -> str:
    """The field a BadRequest detail names, or ""."""
    # grpc_status types `from_call` for a sync grpc.Call; an aio error answers the same methods it reads.
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return str(bad.field_violations[0].field)
    return ""


def retry_delay(err: grpc.aio.AioRpcError) -> float | None:
    """The RetryInfo delay an error carries, if any."""
    return retry_after_of(err)
