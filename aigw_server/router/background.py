"""The router's background loops: backend status polls and dynamic model config refresh (orphans: `jobs.orphans`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from aigw.common.v1 import common_pb2
from aigw_server.router.backends import BackendPool, StatusReport
from aigw_server.router.catalog import DynamicModel, ModelCatalog
from aigw_server.router.readiness import SERVING, UNREACHABLE, Readiness, assess
from aigw_server.runtime.enums import BACKEND_STATE_WORDS
from aigw_server.runtime.errors import GatewayError

log = logging.getLogger(__name__)

MODEL_CONFIG_REFRESH_SECONDS = 3.0

Observer = Callable[[], Awaitable[None]]
"""Called after each round of a background loop (the readiness watch re-reads what the round left behind)."""

DynamicModels = Callable[[], Awaitable[Mapping[str, DynamicModel]]]
"""Reads every model's dynamic config from the queue (ModelConfigService); a failure raises a domain error."""


class PolledBackend(Protocol):
    """A backend's status through the BackendService contract (`aigw_server.router.clients.BackendClient`)."""

    async def status(self) -> tuple[common_pb2.BackendStatus, bool]:
        """The backend's status and whether its health check says SERVING."""


class ServiceHealth(Protocol):
    """The standard health check of a service the router depends on (`aigw_server.router.clients.HealthClient`)."""

    async def state(self) -> str:
        """ "serving", "starting" or "unreachable"."""


def status_report(status: common_pb2.BackendStatus, serving: bool) -> StatusReport:
    """What routing needs from a backend's GetStatus answer."""
    state = BACKEND_STATE_WORDS.get(status.state, "unspecified")
    return StatusReport(
        state=state,
        loaded_models=frozenset(status.loaded_models),
        in_flight=status.in_flight,
        capacity=status.capacity,
        server_waiting=status.server_waiting,
        server_running=status.server_running,
        kv_cache_usage=status.kv_cache_usage,
        detail=status.detail,
        serving=serving,
        languages=frozenset(status.languages),
    )


@dataclass
class StatusPoller:
    """Polls every backend's GetStatus and health check, and the admin service's health, every `interval` seconds."""

    pool: BackendPool
    clients: Mapping[str, PolledBackend]
    interval: float
    admin: ServiceHealth | None = None
    admin_state: str = UNREACHABLE
    observer: Observer | None = None

    async def poll_once(self) -> None:
        await asyncio.gather(*(self._poll(name, client) for name, client in self.clients.items()), self._poll_admin())
        if self.observer is not None:
            await self.observer()

    async def _poll_admin(self) -> None:
        if self.admin is not None:
            self.admin_state = await self.admin.state()

    async def _poll(self, name: str, client: PolledBackend) -> None:
        try:
            status, serving = await client.status()
        except GatewayError as exc:
            self.pool.observe(name, None, exc.message)
            return
        self.pool.observe(name, status_report(status, serving))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.poll_once()


@dataclass
class ConfigRefresher:
    """Applies the queue's dynamic model config every few seconds, so admin changes need no restart."""

    load: DynamicModels
    catalog: ModelCatalog
    interval: float = MODEL_CONFIG_REFRESH_SECONDS
    clock: Callable[[], float] = time.monotonic
    last_success: float = float("-inf")
    observer: Observer | None = None

    @property
    def queue_reachable(self) -> bool:
        return self.clock() - self.last_success < 3 * self.interval

    async def refresh_once(self) -> None:
        try:
            models = await self.load()
        except GatewayError as exc:
            log.warning("cannot refresh the model config", extra={"code": exc.code})
        else:
            self.catalog.update(models)
            self.last_success = self.clock()
        if self.observer is not None:
            await self.observer()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh_once()


@dataclass
class ReadinessWatch:
    """The mesh's readiness as the background loops last saw it, told to `publish` whenever it changes.

    `current()` reads only what the status poller and the config refresher left behind (no network
    call), so `GET /health` and the standard gRPC health status come from one assessment; `observe()`
    runs after each of their rounds and publishes a change (SERVING when ready, NOT_SERVING when not).
    """

    refresher: ConfigRefresher
    poller: StatusPoller
    publish: Callable[[bool], Awaitable[None]] | None = None
    published: bool | None = None

    def current(self) -> Readiness:
        queue = SERVING if self.refresher.queue_reachable else UNREACHABLE
        return assess(queue, self.poller.admin_state, self.poller.pool.summaries())

    async def observe(self) -> None:
        if self.publish is None:
            return
        readiness = self.current()
        if readiness.ready == self.published:
            return
        self.published = readiness.ready
        if readiness.ready:
            log.info("ready to serve", extra={"status": readiness.status})
        else:
            log.warning("not ready to serve", extra={"reason": readiness.explanation()})
        await self.publish(readiness.ready)
