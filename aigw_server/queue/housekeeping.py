"""The periodic tick (deadlines, lapsed leases, ageing, orphans), deletion of finished jobs' events, and retention."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aigw_server.queue.active_jobs import ActiveJobs
from aigw_server.queue.identity import Identities
from aigw_server.queue.jobs import State
from aigw_server.queue.jobs_engine import JobEngine
from aigw_server.queue.measures import QueueMeasures
from aigw_server.queue.recovery import OUTCOME_FIELDS
from aigw_server.queue.store import (
    CHUNK,
    COUNTERS,
    CRASHES,
    DECISIONS,
    EVENTS,
    JOBS,
    OUTCOMES,
    PAYLOADS,
    REFRESH_TOKEN_USES,
    REFRESH_TOKENS,
    RETIRED_ID,
    Doc,
    QueueStore,
    StoreUnavailable,
    stop_if_cancelled,
)
from aigw_server.queue.times import from_datetime, to_datetime
from aigw_server.runtime.config import QueueConfig

log = logging.getLogger(__name__)

RETENTION_SWEEP_SECONDS = 600.0
KEY_USE_FLUSH_SECONDS = 30.0


class Housekeeping:
    """Keeps time-driven transitions and retention going once recovery is done."""

    def __init__(
        self,
        engine: JobEngine,
        jobs: ActiveJobs,
        measures: QueueMeasures,
        identities: Identities,
        store: QueueStore,
        clock: Callable[[], float],
        qcfg: QueueConfig,
    ) -> None:
        self.engine = engine
        self.jobs = jobs
        self.measures = measures
        self.identities = identities
        self.store = store
        self.clock = clock
        self.interval = qcfg.sweep_interval_seconds
        self.retention_seconds = qcfg.history_retention_days * 86_400.0
        self._last_retention = 0.0
        self._last_key_flush = 0.0

    def tick(self) -> None:
        """Runs what is due: deadlines, lapsed leases, unclaimed leases; then grants (ageing, orphans) and positions."""
        self.engine.run_due()

    async def run(self) -> None:
        """The housekeeping loop; survives database outages."""
        while True:
            stop_if_cancelled()
            await asyncio.sleep(self.interval)
            try:
                self.tick()
                await self._periodic()
            except StoreUnavailable:
                log.warning("housekeeping postponed: the store is unavailable")
            except Exception:  # the loop must outlive any one failure; logged with its stack
                log.exception("housekeeping failed; continuing")

    async def _periodic(self) -> None:
        now = self.clock()
        await self.drain_cleanup()
        if now - self._last_key_flush >= KEY_USE_FLUSH_SECONDS:
            self._last_key_flush = now
            await self.identities.flush_key_use()
        if now - self._last_retention >= RETENTION_SWEEP_SECONDS:
            await self.sweep_retention(now)
            self._last_retention = now

    async def drain_cleanup(self) -> None:
        """Deletes the attempt events of finished jobs (their outcome documents hold everything now)."""
        pending = self.jobs.take_events_to_delete()
        try:
            for start in range(0, len(pending), CHUNK):
                await self.store.delete_many(EVENTS, {"rid": {"$in": pending[start : start + CHUNK]}})
        except StoreUnavailable:
            self.jobs.delete_events_later(pending)
            raise

    async def sweep_retention(self, now: float) -> int:
        """Deletes history older than the retention period (counting it first); returns how many jobs went."""
        cutoff = now - self.retention_seconds
        old = await self.store.find(OUTCOMES, {"finished_at": {"$lt": to_datetime(cutoff)}}, projection=OUTCOME_FIELDS)
        if old:
            await self._retire(old, cutoff)
            ids = [d["_id"] for d in old]
            for name in (JOBS, PAYLOADS):
                await self.store.delete_ids(name, ids)
            for start in range(0, len(ids), CHUNK):
                await self.store.delete_many(EVENTS, {"rid": {"$in": ids[start : start + CHUNK]}})
            await self.store.delete_ids(OUTCOMES, ids)
        expired = to_datetime(now)
        for name, key, limit in (
            (CRASHES, "at", to_datetime(cutoff)),
            (DECISIONS, "at", to_datetime(cutoff)),
            (JOBS, "expires_at", expired),
            (PAYLOADS, "expires_at", expired),
            (REFRESH_TOKENS, "expires_at", to_datetime(now - 86_400)),
            (REFRESH_TOKEN_USES, "expires_at", to_datetime(now - 86_400)),
        ):
            await self.store.delete_many(name, {key: {"$lt": limit}})
        self.measures.prune_usage(cutoff)
        if old:
            log.info("retention sweep", extra={"jobs": len(old)})
        return len(old)

    async def _retire(self, old: list[Doc], cutoff: float) -> None:
        """Adds the jobs about to be deleted to the retired counters (once: only those after the last sweep's cutoff)."""
        doc = await self.store.find_one(COUNTERS, {"_id": RETIRED_ID}) or {}
        through = from_datetime(doc.get("through"))
        models: dict[str, Doc] = {c["model"]: c for c in doc.get("models") or []}
        for outcome in old:
            if from_datetime(outcome["finished_at"]) < through:
                continue
            model = outcome.get("model", "")
            counts = models.setdefault(model, {"model": model, "succeeded": 0, "cancelled": 0, "failures": []})
            state = State(outcome["state"])
            if state == State.SUCCEEDED:
                counts["succeeded"] += 1
            elif state == State.CANCELLED:
                counts["cancelled"] += 1
            else:
                _add_failure(counts["failures"], (outcome.get("error") or {}).get("code", "") or "UNKNOWN")
        retired = {"_id": RETIRED_ID, "models": list(models.values()), "through": to_datetime(cutoff)}
        await self.store.replace(COUNTERS, retired, upsert=True)


def _add_failure(failures: list[Doc], code: str) -> None:
    for failure in failures:
        if failure["code"] == code:
            failure["n"] += 1
            return
    failures.append({"code": code, "n": 1})
