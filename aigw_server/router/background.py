"""The router's background loops: backend status polls, dynamic model config refresh, workers for orphaned jobs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aigw.common.v1 import common_pb2
from aigw_server.router.backends import BackendPool, StatusReport
from aigw_server.router.catalog import ModelCatalog
from aigw_server.router.clients import BackendClient, HealthClient, QueueClient
from aigw_server.router.convert import dynamic_model
from aigw_server.router.readiness import SERVING, UNREACHABLE, Readiness, assess
from aigw_server.router.runner import JobRunner
from aigw_server.runtime.errors import GatewayError

log = logging.getLogger(__name__)

MODEL_CONFIG_REFRESH_SECONDS = 3.0
ORPHAN_WAIT_MS = 5_000
IDLE_SECONDS = 0.5

Observer = Callable[[], Awaitable[None]]
"""Called after each round of a background loop (the readiness watch re-reads what the round left behind)."""


def status_report(status: common_pb2.BackendStatus, serving: bool) -> StatusReport:
    """What routing needs from a backend's GetStatus answer."""
    state = common_pb2.BackendState.Name(status.state).removeprefix("BACKEND_STATE_").lower()
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
    clients: dict[str, BackendClient]
    interval: float
    admin: HealthClient | None = None
    admin_state: str = UNREACHABLE
    observer: Observer | None = None

    async def poll_once(self) -> None:
        await asyncio.gather(*(self._poll(name, client) for name, client in self.clients.items()), self._poll_admin())
        if self.observer is not None:
            await self.observer()

    async def _poll_admin(self) -> None:
        if self.admin is not None:
            self.admin_state = await self.admin.state()

    async def _poll(self, name: str, client: BackendClient) -> None:
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

    queue: QueueClient
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
            configs = await self.queue.model_configs()
        except GatewayError as exc:
            log.warning("cannot refresh the model config", extra={"code": exc.code})
        else:
            self.catalog.update({c.model: dynamic_model(c) for c in configs})
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


@dataclass
class OrphanWorkers:
    """`count` loops that take granted jobs nobody waits for (async ones, or ones whose router died) and run them."""

    queue: QueueClient
    runner: JobRunner
    pool: BackendPool
    count: int

    async def run(self) -> None:
        await asyncio.gather(*(self._loop() for _ in range(self.count)))

    async def _loop(self) -> None:
        while True:
            try:
                await self._take_one()
            except GatewayError as exc:
                log.warning("orphan worker: queue call failed", extra={"code": exc.code})
                await asyncio.sleep(IDLE_SECONDS)
            except Exception:
                log.exception("orphan worker failed; continuing")
                await asyncio.sleep(IDLE_SECONDS)

    async def _take_one(self) -> None:
        models = sorted(self.pool.servable_models())
        if not models:
            await asyncio.sleep(IDLE_SECONDS)
            return
        granted = await self.queue.acquire(self.runner.worker_id, ORPHAN_WAIT_MS, models=models)
        if granted is not None:
            await self.runner.run(granted.job, granted.lease, None, owner=False)
