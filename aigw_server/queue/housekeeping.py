"""Recovery at start, the periodic tick (deadlines, lapsed leases, ageing, orphans) and retention sweeps."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aigw_server.queue.crashlog import CrashEvent, CrashKind, CrashLog
from aigw_server.queue.identity import Identities
from aigw_server.queue.jobs import State
from aigw_server.queue.jobs_engine import QueueEngine
from aigw_server.queue.series import BUCKET_SECONDS, WINDOW_MINUTES, PastJob
from aigw_server.queue.store import (
    COUNTERS,
    CRASHES,
    DECISIONS,
    EVENTS,
    JOBS,
    OUTCOMES,
    PAYLOADS,
    REFRESH_TOKEN_USES,
    REFRESH_TOKENS,
    QueueStore,
    StoreUnavailable,
    stop_if_cancelled,
)
from aigw_server.queue.times import from_datetime, to_datetime

log = logging.getLogger(__name__)

Doc = dict[str, Any]
RETIRED_ID = "retired"
RETENTION_SWEEP_SECONDS = 600.0
KEY_USE_FLUSH_SECONDS = 30.0
CHUNK = 500
OUTCOME_FIELDS = {"model": 1, "state": 1, "error.code": 1, "queued_ms": 1, "service_ms": 1, "finished_at": 1, "started_at": 1}
SERIES_FIELDS = {"model": 1, "state": 1, "error.code": 1, "queued_ms": 1, "submitted_at": 1, "started_at": 1, "finished_at": 1}
SERIES_MAX_JOBS = 200_000
"""At most this many of the last hour's finished jobs are read back for the queue series (the latest ones)."""


@dataclass(frozen=True)
class Recovered:
    """What the start found in the store."""

    queued: int
    running: int
    finished: int


class Housekeeping:
    """Rebuilds the view from the store, then keeps time-driven transitions and retention going."""

    def __init__(
        self, engine: QueueEngine, identities: Identities, crashlog: CrashLog, store: QueueStore, clock: Callable[[], float]
    ) -> None:
        self.engine = engine
        self.identities = identities
        self.crashlog = crashlog
        self.store = store
        self.clock = clock
        self.interval = engine.qcfg.sweep_interval_seconds
        self._last_retention = 0.0
        self._last_key_flush = 0.0

    async def recover(self) -> Recovered:
        """Rebuilds counters, usage and every unfinished job from the store; each recovered lease is logged."""
        engine = self.engine
        now = self.clock()
        await engine.configs.load()
        through = await self._load_retired()
        finished_ids = await self._load_outcomes(through)
        job_ids = await self._load_submissions(now)
        unfinished = [i for i in job_ids if i not in finished_ids]
        job_docs: list[Doc] = []
        for start in range(0, len(unfinished), CHUNK):
            job_docs += await self.store.find(JOBS, {"_id": {"$in": unfinished[start : start + CHUNK]}})
        events: dict[str, list[Doc]] = defaultdict(list)
        for doc in await self.store.find(EVENTS, {}):
            events[doc["rid"]].append(doc)
        engine.cleanup += [rid for rid in events if rid in finished_ids]
        loaded = await engine.load_active(job_docs, events, now)
        await self._load_series()
        running = [rec for rec in loaded if rec.state == State.RUNNING]
        for rec in running:
            assert rec.lease is not None
            worker = rec.lease.worker_id or "unknown"
            message = f"lease of attempt {rec.attempt} (worker {worker}) kept; it must be renewed within the lease TTL"
            self.crashlog.note(CrashEvent(CrashKind.RECOVERY, message, "queue", rec.model, "", rec.request_id))
        summary = Recovered(len(loaded) - len(running), len(running), len(finished_ids))
        if loaded:
            message = f"queue restarted: recovered {summary.queued} queued and {summary.running} running jobs"
            details = {"queued": str(summary.queued), "running": str(summary.running)}
            self.crashlog.note(CrashEvent(CrashKind.RECOVERY, message, "queue", details=details))
        log.info("recovered", extra={"queued": summary.queued, "running": summary.running, "finished": summary.finished})
        return summary

    async def _load_retired(self) -> float:
        """Adds the counts of jobs already swept by retention; returns the time up to which they were counted."""
        doc = await self.store.find_one(COUNTERS, {"_id": RETIRED_ID})
        if doc is None:
            return 0.0
        for counts in doc.get("models") or []:
            stats = self.engine.stats.get(counts.get("model", ""))
            if stats is None:
                continue
            stats.count_finished(State.SUCCEEDED, "", int(counts.get("succeeded", 0)))
            stats.count_finished(State.CANCELLED, "", int(counts.get("cancelled", 0)))
            for failure in counts.get("failures") or []:
                stats.count_finished(State.FAILED, failure["code"], int(failure["n"]))
        return from_datetime(doc.get("through"))

    async def _load_outcomes(self, through: float) -> set[str]:
        """Counts finished jobs and takes the latest ones' latencies as the recent samples."""
        docs = await self.store.find(OUTCOMES, {}, projection=OUTCOME_FIELDS)
        docs.sort(key=lambda d: d["finished_at"])
        for doc in docs:
            stats = self.engine.stats.get(doc.get("model", ""))
            if stats is None or from_datetime(doc["finished_at"]) < through:
                continue
            stats.count_finished(State(doc["state"]), (doc.get("error") or {}).get("code", ""))
            stats.sample(float(doc.get("queued_ms", 0.0)), float(doc.get("service_ms", 0.0)), bool(doc.get("started_at")))
        return {doc["_id"] for doc in docs}

    async def _load_series(self) -> None:
        """Rebuilds the per-minute series of the last hour from the jobs that finished in it and those still active."""
        now = self.clock()
        since = to_datetime((int(now // BUCKET_SECONDS) - WINDOW_MINUTES + 1) * BUCKET_SECONDS)
        rows = await self.store.find(
            OUTCOMES,
            {"finished_at": {"$gte": since}},
            projection=SERIES_FIELDS,
            sort=[("finished_at", -1)],
            limit=SERIES_MAX_JOBS,
        )
        jobs = [
            PastJob(
                model=doc.get("model", ""),
                submitted_at=from_datetime(doc.get("submitted_at")),
                started_at=from_datetime(doc.get("started_at")),
                finished_at=from_datetime(doc.get("finished_at")),
                state=State(doc["state"]),
                code=(doc.get("error") or {}).get("code", ""),
                wait_ms=float(doc.get("queued_ms", 0.0)),
            )
            for doc in rows
        ]
        active = self.engine.active.values()
        jobs += [PastJob(r.model, r.submitted_at, r.started_at if r.state == State.RUNNING else 0.0, 0.0) for r in active]
        self.engine.series.rebuild(jobs, now)

    async def _load_submissions(self, now: float) -> list[str]:
        """Counts submissions per model and hour over the retention period; returns every stored job id."""
        since = now - self.engine.retention_seconds
        ids: list[str] = []
        for doc in await self.store.find(JOBS, {}, projection={"model": 1, "submitted_at": 1}):
            ids.append(doc["_id"])
            submitted = from_datetime(doc.get("submitted_at"))
            if submitted >= since and doc.get("model") in self.engine.queues:
                self.engine.usage.add(doc["model"], submitted)
        return ids

    def tick(self) -> None:
        """Runs what is due: deadlines, lapsed leases, unclaimed leases; then grants (ageing, orphans) and positions."""
        engine = self.engine
        for action, rec in engine.due(self.clock()):
            engine.spawn(action(rec))
        for model in engine.queues:
            engine.dispatch(model)
        engine.notify_all_positions()

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
        pending, self.engine.cleanup = self.engine.cleanup, []
        try:
            for start in range(0, len(pending), CHUNK):
                await self.store.delete_many(EVENTS, {"rid": {"$in": pending[start : start + CHUNK]}})
        except StoreUnavailable:
            self.engine.cleanup += pending
            raise

    async def sweep_retention(self, now: float) -> int:
        """Deletes history older than the retention period (counting it first); returns how many jobs went."""
        cutoff = now - self.engine.retention_seconds
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
        self.engine.usage.prune(cutoff)
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
