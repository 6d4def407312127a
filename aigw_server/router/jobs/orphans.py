"""Workers for orphaned jobs: granted jobs nobody waits for (async ones, or ones whose router died), run here."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aigw_server.router.backends import BackendPool
from aigw_server.router.jobs.contracts import JobQueue
from aigw_server.router.jobs.runner import JobRunner
from aigw_server.runtime.errors import GatewayError

log = logging.getLogger(__name__)

ORPHAN_WAIT_MS = 5_000
IDLE_SECONDS = 0.5


@dataclass
class OrphanWorkers:
    """`count` loops that take granted jobs nobody waits for (async ones, or ones whose router died) and run them."""

    queue: JobQueue
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
