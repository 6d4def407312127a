"""Assembles the admin service: clients of the queue and backends, the domain, the servicer and background work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc

from aigw.admin.v1 import admin_pb2, admin_pb2_grpc
from aigw_server.admin.access import Access
from aigw_server.admin.bootstrap import AdminBootstrap
from aigw_server.admin.clients import BackendClient
from aigw_server.admin.fleet import BackendControl, Fleet
from aigw_server.admin.identity import Accounts
from aigw_server.admin.login_limiter import LoginLimiter
from aigw_server.admin.model_config import ModelSettings
from aigw_server.admin.passwords import PasswordHashing
from aigw_server.admin.servicer import AdminDomain, AdminServicer
from aigw_server.admin.sessions import Sessions
from aigw_server.admin.switcher import AutoSwitcher
from aigw_server.runtime.auth import TokenSigner, TokenVerifier, resolve_jwt_secret
from aigw_server.runtime.authz import mesh_tls
from aigw_server.runtime.channels import make_channel
from aigw_server.runtime.config import GatewayConfig, ServiceName
from aigw_server.runtime.errors import GatewayError
from aigw_server.runtime.queue_client import QueueClient
from aigw_server.runtime.server import Health

log = logging.getLogger(__name__)

BOOTSTRAP_RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)


class AdminService:
    """Tokens, users, API keys, models, metrics, crash log, history, dynamic config and auto-switching."""

    name: ServiceName = "admin"
    service_names = [admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name]

    def __init__(self, cfg: GatewayConfig, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.cfg = cfg
        secret = resolve_jwt_secret(cfg)
        self.tls = mesh_tls(cfg, "admin")
        self.channels: list[grpc.aio.Channel] = [make_channel(cfg.services.queue.address, self.tls, "queue")]
        self.queue = QueueClient(self.channels[0])
        passwords = PasswordHashing()
        verifier = TokenVerifier(cfg.auth, secret)
        fleet = Fleet(cfg, self._backend_controls(), self.queue)
        self.switcher = AutoSwitcher(cfg.auto_switch, fleet, self.queue, self.queue, clock)
        self.domain = AdminDomain(
            access=Access(verifier, self.queue),
            sessions=Sessions(
                self.queue, passwords, TokenSigner(cfg.auth, secret), verifier, LoginLimiter(cfg.auth.login_attempts_per_minute)
            ),
            accounts=Accounts(self.queue, passwords),
            fleet=fleet,
            settings=ModelSettings(cfg, self.queue),
            switcher=self.switcher,
            history=self.queue,
        )
        self.bootstrap = AdminBootstrap(
            self.queue, passwords, cfg.auth.admin_username, cfg.auth.admin_password, Path(cfg.data_dir)
        )
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def _backend_controls(self) -> dict[str, BackendControl]:
        controls: dict[str, BackendControl] = {}
        for backend in self.cfg.backends:
            channel = make_channel(backend.address, self.tls, backend.kind)
            self.channels.append(channel)
            controls[backend.name] = BackendClient(channel, backend)
        return controls

    def register(self, server: grpc.aio.Server) -> None:
        admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(self.domain), server)

    async def start(self, health: Health) -> None:
        """Serving once the bootstrap admin is in place (retried until the queue answers); the switcher runs meanwhile."""
        await health.set(False)
        self._tasks = [asyncio.create_task(self._bootstrap(health)), asyncio.create_task(self.switcher.run())]

    async def _bootstrap(self, health: Health) -> None:
        attempt = 0
        while True:
            try:
                outcome = await self.bootstrap.run()
                break
            except GatewayError as exc:
                delay = BOOTSTRAP_RETRY_S[min(attempt, len(BOOTSTRAP_RETRY_S) - 1)]
                log.warning("bootstrap admin not ready (%s); retrying in %.1f s", exc.message, delay)
                attempt += 1
                await asyncio.sleep(delay)
        log.info("bootstrap admin: %s", outcome, extra={"username": self.cfg.auth.admin_username})
        await health.set(True)
        self.ready.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for channel in self.channels:
            await channel.close(None)


def build(cfg: GatewayConfig) -> AdminService:
    return AdminService(cfg)
