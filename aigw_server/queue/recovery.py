"""Recovery at start: the index, counters, usage and series rebuilt from the store; each recovered lease logged."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from aigw_server.queue.active_jobs import ActiveJobs
from aigw_server.queue.configs import ModelConfigs
from aigw_server.queue.crashlog import CrashEvent, CrashKind, CrashLog
from aigw_server.queue.jobs import State
from aigw_server.queue.jobs_engine import JobEngine
from aigw_server.queue.measures import QueueMeasures
from aigw_server.queue.series import BUCKET_SECONDS, WINDOW_MINUTES, PastJob
from aigw_server.queue.store import CHUNK, COUNTERS, EVENTS, JOBS, OUTCOMES, RETIRED_ID, Doc, QueueStore
from aigw_server.queue.times import from_datetime, to_datetime
from aigw_server.runtime.config import QueueConfig

log = logging.getLogger(__name__)

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


class Recovery:
    """Reads the store once at start and hands what it finds to the engine, the index and the measures."""

    def __init__(
        self,
        engine: JobEngine,
        configs: ModelConfigs,
        jobs: ActiveJobs,
        measures: QueueMeasures,
        crashlog: CrashLog,
        store: QueueStore,
        clock: Callable[[], float],
        qcfg: QueueConfig,
    ) -> None:
        self.engine = engine
        self.configs = configs
        self.jobs = jobs
        self.measures = measures
        self.crashlog = crashlog
        self.store = store
        self.clock = clock
        self.retention_seconds = qcfg.history_retention_days * 86_400.0

    async def recover(self) -> Recovered:
        """Rebuilds counters, usage and every unfinished job from the store; each recovered lease is logged."""
        now = self.clock()
        await self.configs.load()
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
        self.jobs.delete_events_later(rid for rid in events if rid in finished_ids)
        loaded = await self.engine.adopt(job_docs, events, now)
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
            model = counts.get("model", "")
            self.measures.recover_finished(model, State.SUCCEEDED, "", int(counts.get("succeeded", 0)))
            self.measures.recover_finished(model, State.CANCELLED, "", int(counts.get("cancelled", 0)))
            for failure in counts.get("failures") or []:
                self.measures.recover_finished(model, State.FAILED, failure["code"], int(failure["n"]))
        return from_datetime(doc.get("through"))

    async def _load_outcomes(self, through: float) -> set[str]:
        """Counts finished jobs and takes the latest ones' latencies as the recent samples."""
        docs = await self.store.find(OUTCOMES, {}, projection=OUTCOME_FIELDS)
        docs.sort(key=lambda d: d["finished_at"])
        for doc in docs:
            if from_datetime(doc["finished_at"]) < through:
                continue
            model = doc.get("model", "")
            self.measures.recover_finished(model, State(doc["state"]), (doc.get("error") or {}).get("code", ""))
            ran = bool(doc.get("started_at"))
            self.measures.recover_sample(model, float(doc.get("queued_ms", 0.0)), float(doc.get("service_ms", 0.0)), ran)
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
        active = self.jobs.unfinished()
        jobs += [PastJob(r.model, r.submitted_at, r.started_at if r.state == State.RUNNING else 0.0, 0.0) for r in active]
        self.measures.rebuild_series(jobs, now)

    async def _load_submissions(self, now: float) -> list[str]:
        """Counts submissions per model and hour over the retention period; returns every stored job id."""
        since = now - self.retention_seconds
        ids: list[str] = []
        for doc in await self.store.find(JOBS, {}, projection={"model": 1, "submitted_at": 1}):
            ids.append(doc["_id"])
            submitted = from_datetime(doc.get("submitted_at"))
            if submitted >= since and self.jobs.has_model(doc.get("model", "")):
                self.measures.recover_submission(doc["model"], submitted)
        return ids
