"""Assembles the queue service: store, job engine, records, servicers, recovery and housekeeping, health."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw_server.queue.autoswitch import AutoSwitchRecords
from aigw_server.queue.crashlog import CrashLog
from aigw_server.queue.housekeeping import Housekeeping
from aigw_server.queue.identity import Identities
from aigw_server.queue.jobs_engine import JobEngine
from aigw_server.queue.metrics import QueueCollector, register, unregister
from aigw_server.queue.records_servicer import AutoSwitchStoreServicer, IdentityServicer, ModelConfigServicer
from aigw_server.queue.recovery import Recovery
from aigw_server.queue.servicer import CrashLogServicer, QueueServicer, Readiness
from aigw_server.queue.store import QueueStore, StoreUnavailable, stop_if_cancelled
from aigw_server.runtime.config import GatewayConfig, ServiceName
from aigw_server.runtime.server import Health

log = logging.getLogger(__name__)

START_RETRY_SECONDS = (0.2, 2.0)
STOP_WAIT_SECONDS = 5.0
STORE_CHECK_SECONDS = 1.0
"""How often the recovered queue checks that the database answers (its health follows)."""


class QueueService:
    """The only owner of MongoDB: jobs, history, crash log, usage, model config, identities, auto-switch records."""

    name: ServiceName = "queue"
    service_names = [
        queue_pb2.DESCRIPTOR.services_by_name["QueueService"].full_name,
        queue_pb2.DESCRIPTOR.services_by_name["CrashLogService"].full_name,
        queue_pb2.DESCRIPTOR.services_by_name["ModelConfigService"].full_name,
        queue_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name,
        queue_pb2.DESCRIPTOR.services_by_name["AutoSwitchStoreService"].full_name,
    ]

    def __init__(self, cfg: GatewayConfig, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.store = QueueStore(cfg.database, cfg.data_path, cfg.queue.history_retention_days * 86_400.0)
        self.crashlog = CrashLog(self.store, clock)
        self.engine = engine = JobEngine(cfg, self.store, self.crashlog, clock)
        self.identities = Identities(self.store, clock)
        self.autoswitch = AutoSwitchRecords(self.store, clock)
        jobs, measures = engine.jobs, engine.measures
        self.recovery = Recovery(engine, engine.configs, jobs, measures, self.crashlog, self.store, clock, cfg.queue)
        self.housekeeping = Housekeeping(engine, jobs, measures, self.identities, self.store, clock, cfg.queue)
        self.readiness = Readiness()
        self.collector = QueueCollector(self.engine)
        self._registered = False
        self.jobs: QueueServicer | None = None
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def register(self, server: grpc.aio.Server) -> None:
        r = self.readiness
        self.jobs = QueueServicer(self.engine, r)
        queue_pb2_grpc.add_QueueServiceServicer_to_server(self.jobs, server)
        queue_pb2_grpc.add_CrashLogServiceServicer_to_server(CrashLogServicer(self.crashlog, r), server)
        queue_pb2_grpc.add_ModelConfigServiceServicer_to_server(ModelConfigServicer(self.engine.configs, r), server)
        queue_pb2_grpc.add_IdentityServiceServicer_to_server(IdentityServicer(self.identities, r), server)
        queue_pb2_grpc.add_AutoSwitchStoreServiceServicer_to_server(AutoSwitchStoreServicer(self.autoswitch, r), server)

    def draining(self) -> None:
        """The server stops next: Session streams end once their calls are answered, so routers reconnect at once."""
        if self.jobs is not None:
            self.jobs.session.drain()

    async def start(self, health: Health) -> None:
        """Connects and recovers in the background (retrying while the database is down); SERVING once recovered,
        NOT_SERVING again while the database does not answer."""
        await health.set(False)
        self._registered = register(self.collector)
        self._tasks.append(asyncio.create_task(self._recover_then_serve(health)))

    async def wait_ready(self, timeout: float) -> None:
        """Waits until the view is rebuilt (tests)."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def _recover_then_serve(self, health: Health) -> None:
        delay, cap = START_RETRY_SECONDS
        while True:
            stop_if_cancelled()
            try:
                features = await self.store.connect()
                await self.identities.load()
                await self.autoswitch.load()
                await self.recovery.recover()
                break
            except StoreUnavailable:
                log.warning("database unavailable at start; retrying", extra={"retry_seconds": delay})
                await asyncio.sleep(delay)
                delay = min(cap, delay * 2)
        log.info("queue ready", extra={"replica_set": features.replica_set, "ttl_indexes": features.ttl_indexes})
        self.readiness.ready = True
        self._ready.set()
        self._tasks.append(asyncio.create_task(self.housekeeping.run()))
        await health.set(True)
        self._tasks.append(asyncio.create_task(self._follow_store(health)))

    async def _follow_store(self, health: Health) -> None:
        """Health is NOT_SERVING while the database does not answer, SERVING again once it does."""
        serving = True
        while True:
            await asyncio.sleep(STORE_CHECK_SECONDS)
            answers = await self.store.ping()
            if answers == serving:
                continue
            serving = answers
            if serving:
                log.info("database answers again: serving")
            else:
                log.warning("database unavailable: not serving")
            await health.set(serving)

    async def stop(self) -> None:
        self.readiness.ready = False
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_WAIT_SECONDS)
        await self.engine.close()
        await self.crashlog.close()
        await self.store.close()
        if self._registered:
            unregister(self.collector)


def build(cfg: GatewayConfig) -> QueueService:
    return QueueService(cfg)
