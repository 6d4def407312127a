"""Reads of jobs: one by id (GetJob, WatchJob of a finished job) and the history newest first (ListJobs), from memory
while at hand and from the store within the retention window."""

from __future__ import annotations

from dataclasses import dataclass, replace

from aigw_server.queue import store_documents as docs
from aigw_server.queue.active_jobs import ActiveJobs
from aigw_server.queue.crashlog import before_cursor, decode_cursor, encode_cursor, page_size
from aigw_server.queue.jobs import JobRecord, Kind, State
from aigw_server.queue.store import JOBS, OUTCOMES, PAYLOADS, Doc, QueueStore
from aigw_server.queue.times import stored_millis, to_datetime
from aigw_server.runtime.errors import InvalidArgument, request_not_found

LIST_PROJECTION = {"payload": 0, "grant": 0}


@dataclass(frozen=True)
class JobFilter:
    """What ListJobs selects (zero values select everything)."""

    model: str = ""
    state: int = 0
    client_id: str = ""
    kind: int = 0
    since: float = 0.0
    until: float = 0.0
    subject: str = ""

    def check(self) -> None:
        if self.state and self.state not in {int(s) for s in State}:
            raise InvalidArgument(f"state: {self.state} is not a job state", field="state")
        if self.kind and self.kind not in {int(k) for k in Kind}:
            raise InvalidArgument(f"kind: {self.kind} is not a job kind", field="kind")


def _query(f: JobFilter, token: str) -> Doc:
    query: Doc = {}
    for name in ("model", "client_id", "subject"):
        if getattr(f, name):
            query[name] = getattr(f, name)
    if f.kind:
        query["kind"] = f.kind
    if f.state:
        query["state"] = f.state
    bounds: Doc = {}
    if f.since:
        bounds["$gte"] = to_datetime(f.since)
    if f.until:
        bounds["$lt"] = to_datetime(f.until)
    if bounds:
        query["submitted_at"] = bounds
    if token:
        query = {"$and": [query, before_cursor("submitted_at", token)]}
    return query


def _matches(rec: JobRecord, f: JobFilter, cursor: tuple[int, str] | None) -> bool:
    if (f.model and rec.model != f.model) or (f.client_id and rec.client_id != f.client_id) or (f.kind and rec.kind != f.kind):
        return False
    if f.subject and rec.subject != f.subject:
        return False
    if (
        (f.state and rec.state != f.state)
        or (f.since and rec.submitted_at < f.since)
        or (f.until and rec.submitted_at >= f.until)
    ):
        return False
    return cursor is None or (stored_millis(rec.submitted_at), rec.request_id) < cursor


class JobHistory:
    """Jobs as they stand, by id or by filter; reads only (the engine alone changes jobs)."""

    def __init__(self, jobs: ActiveJobs, store: QueueStore) -> None:
        self.jobs = jobs
        self.store = store

    async def find(self, request_id: str, include_payload: bool = False) -> JobRecord:
        """A job by id, from memory or the store; NotFound when unknown (or past retention)."""
        rec = self.jobs.at_hand(request_id)
        if rec is None:
            rec = await self._load(request_id)
        if include_payload and not rec.payload:
            rec = replace(rec, attempt_errors=list(rec.attempt_errors))
            rec.payload = await self._payload(request_id)
        return rec

    async def _load(self, request_id: str) -> JobRecord:
        if not request_id:
            raise InvalidArgument("request_id: required", field="request_id")
        outcome = await self.store.find_one(OUTCOMES, {"_id": request_id})
        if outcome is not None:
            return docs.finished_record(outcome)
        job = await self.store.find_one(JOBS, {"_id": request_id}, {"payload": 0})
        if job is None:
            raise request_not_found(request_id)
        return docs.record_from_document(job)

    async def _payload(self, request_id: str) -> bytes:
        job = await self.store.find_one(JOBS, {"_id": request_id}, {"payload": 1, "payload_apart": 1})
        if job is None:
            return b""
        if job.get("payload_apart"):
            stored = await self.store.find_one(PAYLOADS, {"_id": request_id})
            return bytes(stored["payload"]) if stored is not None else b""
        return bytes(job.get("payload", b""))

    async def list_jobs(self, f: JobFilter, size: int, token: str) -> tuple[list[JobRecord], str]:
        """One page of jobs, newest first, and the next page's token ("" at the end)."""
        f.check()
        limit = page_size(size)
        if f.state in (State.QUEUED, State.RUNNING):
            cursor = decode_cursor(token) if token else None
            found = [r for r in self.jobs.unfinished() if _matches(r, f, cursor)]
            found.sort(key=lambda r: (stored_millis(r.submitted_at), r.request_id), reverse=True)
            page = found[:limit]
            more = len(found) > limit
        elif f.state:
            rows = await self.store.find(OUTCOMES, _query(f, token), sort=[("submitted_at", -1), ("_id", -1)], limit=limit + 1)
            page = [docs.finished_record(d) for d in rows[:limit]]
            more = len(rows) > limit
        else:
            rows = await self.store.find(
                JOBS, _query(f, token), projection=LIST_PROJECTION, sort=[("submitted_at", -1), ("_id", -1)], limit=limit + 1
            )
            page = await self._current(rows[:limit])
            more = len(rows) > limit
        next_token = encode_cursor(stored_millis(page[-1].submitted_at), page[-1].request_id) if more and page else ""
        return page, next_token

    async def _current(self, rows: list[Doc]) -> list[JobRecord]:
        """Each listed job as it stands now: from memory while at hand, else its outcome, else as submitted."""
        known = {rid: rec for rid in (d["_id"] for d in rows) if (rec := self.jobs.at_hand(rid))}
        missing = [d["_id"] for d in rows if d["_id"] not in known]
        finished: dict[str, JobRecord] = {}
        if missing:
            for doc in await self.store.find(OUTCOMES, {"_id": {"$in": missing}}):
                finished[doc["_id"]] = docs.finished_record(doc)
        return [known.get(d["_id"]) or finished.get(d["_id"]) or docs.record_from_document(d) for d in rows]
