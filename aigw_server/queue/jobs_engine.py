"""The job engine: admission, grants, leases, attempts, deadlines and results, with one writer per job.

This process is the only writer of job documents. Every transition of a job runs while holding
that job's lock (`JobLocks`), writes one document whose _id names the transition (an insert:
atomic on FerretDB and MongoDB alike), and changes the in-memory index (`ActiveJobs`) only after
the write is acknowledged. Who gets a queued job is the `GrantBroker`'s choice, reads are
`JobHistory`'s, subscriptions `JobWatchers`'; this module wires them and owns the writes. See
docs/queue.md for the design and why no attempt can run twice.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from aigw_server.queue import store_documents as docs
from aigw_server.queue.active_jobs import ActiveJobs
from aigw_server.queue.configs import ModelConfigs
from aigw_server.queue.crashlog import CrashEvent, CrashKind, CrashLog
from aigw_server.queue.grant_broker import GrantBroker
from aigw_server.queue.job_history import JobFilter, JobHistory
from aigw_server.queue.job_locks import JobLocks
from aigw_server.queue.job_watchers import JobWatchers, WatchEvent
from aigw_server.queue.jobs import (
    DEADLINE_CODE,
    STOP_CANCELLED,
    STOP_DEADLINE,
    STOP_LEASE_LOST,
    Grant,
    GrantEnd,
    JobError,
    JobRecord,
    Kind,
    Lease,
    Outcome,
    Priority,
    State,
    after_failure,
    apply_end,
    apply_grant,
    apply_outcome,
    cancelled,
    deadline_passed,
    lease_lost,
    released,
    replay,
    succeeded,
)
from aigw_server.queue.measures import QueueMeasures
from aigw_server.queue.model_settings import ModelSettings, admits, retry_after
from aigw_server.queue.series import WINDOW_MINUTES, MinuteView
from aigw_server.queue.stats import ModelStats
from aigw_server.queue.store import (
    EVENTS,
    JOBS,
    OUTCOMES,
    PAYLOADS,
    Doc,
    Duplicate,
    QueueStore,
    StoreUnavailable,
    stop_if_cancelled,
)
from aigw_server.runtime.config import GatewayConfig
from aigw_server.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
# A coroutine's send and yield types are never used here: Any is the stdlib's own spelling for them.
Action = Callable[[JobRecord], Coroutine[Any, Any, None]]
REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+=-]{1,128}")
MAX_TEXT = 256
MAX_TIMEOUT_SECONDS = 86_400.0
MAX_PAYLOAD_BYTES = 15 * 1024 * 1024
DOUBT_RETRY_SECONDS = (0.1, 2.0)
DEFAULT_USAGE_DAYS = 7
MAX_USAGE_DAYS = 366


@dataclass(frozen=True, slots=True)
class SubmitSpec:
    """A Submit request in domain terms (the payload already serialized)."""

    model: str
    kind: Kind | None
    payload: bytes
    priority: Priority = Priority.NORMAL
    request_id: str = ""
    client_id: str = ""
    subject: str = ""
    idempotency_key: str = ""
    timeout_seconds: float = 0.0
    owner_id: str = ""
    accept_lease: bool = False


@dataclass(frozen=True, slots=True)
class Admission:
    """A Submit's answer: the job, whether an idempotency key matched an existing one, and the owner's lease if
    the job was granted to it at once and it accepts one."""

    job: JobRecord
    existing: bool
    lease: Lease | None = None


@dataclass(frozen=True, slots=True)
class JobResult:
    """A CompleteJob's result: which kind of job it answers (None when absent), serialized."""

    kind: Kind | None
    data: bytes


@dataclass(frozen=True, slots=True)
class HeartbeatReply:
    """The renewed expiry, and whether (and why) the lease holder must stop."""

    expires_at: float
    cancel: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One model's queue metrics."""

    settings: ModelSettings
    processing: int
    waiting: int
    stats: ModelStats


class JobEngine:
    """Jobs of every configured model: the only path by which they change."""

    def __init__(self, cfg: GatewayConfig, store: QueueStore, crashlog: CrashLog, clock: Callable[[], float]) -> None:
        self.store = store
        self.crashlog = crashlog
        self.clock = clock
        self.ttl = cfg.queue.lease_ttl_seconds
        self.retention_seconds = cfg.queue.history_retention_days * 86_400.0
        self.configs = ModelConfigs(cfg, store, clock, self.dispatch)
        self.jobs = ActiveJobs(cfg.models, cfg.queue.ageing_seconds)
        self.measures = QueueMeasures(cfg.models)
        self.locks = JobLocks(self.dispatch)
        self.watchers = JobWatchers(self.jobs, clock)
        self.grants = GrantBroker(self.jobs, self.locks, self.watchers, self.configs.get, cfg.queue, clock)
        self.history = JobHistory(self.jobs, store)
        self._admissions: dict[str, asyncio.Future[bool]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()  # transitions of every result type

    def dispatch(self, model: str) -> None:
        """Grants what the model's free slots and waiting takers allow (after a job is set free or settings change)."""
        if self.jobs.has_model(model):
            self.grants.dispatch(model)

    # ---- background tasks and per-job locks

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Runs `coro` in a task of its own, kept until done; its failure is logged, never lost."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, (StoreUnavailable, FailedPrecondition, NotFound, AlreadyExists, ResourceExhausted)):
                log.error("queue task failed", exc_info=exc)

    async def _shielded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs a transition to its end even if the calling RPC goes away meanwhile."""
        return await asyncio.shield(self.spawn(coro))

    async def _locked(self, rec: JobRecord, body: Callable[[], Awaitable[T]]) -> T:
        """Runs `body` holding the job's lock, after settling any doubt about its stored state."""
        await self.locks.acquire(rec)
        try:
            if rec.in_doubt:
                await self._resync(rec)
            return await body()
        finally:
            self.locks.release(rec)

    # ---- Submit

    async def submit(self, spec: SubmitSpec) -> Admission:
        """Admits a job durably (written before this returns), or finds the one its idempotency key names."""
        rec, existing = await self._admit(spec)
        return Admission(rec, existing, self.grants.lease_at_submit(rec, spec.accept_lease, existing))

    async def _admit(self, spec: SubmitSpec) -> tuple[JobRecord, bool]:
        settings = self._check_submit(spec)
        if spec.idempotency_key:
            existing = self.jobs.by_idempotency_key(docs.idem_scope(spec), spec.idempotency_key)
            if existing is not None:
                return await self._once_stored(existing), True
        if not admits(self.jobs.queued(spec.model), self.jobs.running(spec.model), settings):
            return await self._refuse(spec, settings)
        request_id = spec.request_id or uuid.uuid4().hex
        if self.jobs.id_taken(request_id):
            raise AlreadyExists(f"request {request_id} already exists")
        rec = self._new_record(request_id, spec, settings)
        self._admit_in_memory(rec, settings)
        return await self._shielded(self._write_submission(rec))

    def _check_submit(self, spec: SubmitSpec) -> ModelSettings:
        settings = self.configs.get(spec.model)
        if not settings.enabled:
            raise FailedPrecondition(f"model {spec.model!r} is disabled")
        if spec.kind is None:
            raise InvalidArgument("payload: a chat or ocr request is required", field="payload")
        if (spec.kind == Kind.CHAT) != (settings.kind == "chat"):
            raise InvalidArgument(f"payload: model {spec.model!r} takes {settings.kind} requests", field="payload")
        if spec.request_id and not REQUEST_ID.fullmatch(spec.request_id):
            raise InvalidArgument("request_id: 1 to 128 letters, digits or . _ : @ + = -", field="request_id")
        if not 0 <= spec.timeout_seconds <= MAX_TIMEOUT_SECONDS:
            raise InvalidArgument(f"timeout_seconds: must be between 0 and {MAX_TIMEOUT_SECONDS:g}", field="timeout_seconds")
        if len(spec.payload) > MAX_PAYLOAD_BYTES:
            raise InvalidArgument(f"payload: larger than {MAX_PAYLOAD_BYTES} bytes", field="payload")
        for name in ("client_id", "subject", "idempotency_key", "owner_id"):
            if len(getattr(spec, name)) > MAX_TEXT:
                raise InvalidArgument(f"{name}: at most {MAX_TEXT} characters", field=name)
        return settings

    async def _once_stored(self, rec: JobRecord) -> JobRecord:
        """The job, once its own Submit's write is acknowledged (UNAVAILABLE if that write failed)."""
        pending = self._admissions.get(rec.request_id)
        if pending is not None and not await asyncio.shield(pending):
            raise StoreUnavailable(uncertain=False)
        return rec

    async def _stored_idempotent(self, scope: str, key: str) -> JobRecord | None:
        doc = await self.store.find_one(JOBS, {"idem": docs.idem_key(scope, key)}, {"_id": 1})
        return await self.history.find(doc["_id"]) if doc is not None else None

    async def _refuse(self, spec: SubmitSpec, settings: ModelSettings) -> tuple[JobRecord, bool]:
        if spec.idempotency_key:
            existing = await self._stored_idempotent(docs.idem_scope(spec), spec.idempotency_key)
            if existing is not None:
                return existing, True
        service_seconds = self.measures.rejected(spec.model)
        now = self.clock()
        running_for = [now - rec.started_at for rec in self.jobs.running_jobs(spec.model)]
        queued, running = self.jobs.queued(spec.model), self.jobs.running(spec.model)
        wait = retry_after(queued, running_for, settings, service_seconds)
        raise ResourceExhausted(
            f"model {spec.model!r} is full: {running} running (max {settings.max_concurrent}), "
            f"{queued} waiting (max {settings.max_waiting}); retry in {wait:g} s",
            retry_after=wait,
        )

    def _new_record(self, request_id: str, spec: SubmitSpec, settings: ModelSettings) -> JobRecord:
        now = self.clock()
        assert spec.kind is not None
        return JobRecord(
            request_id=request_id,
            model=spec.model,
            kind=spec.kind,
            priority=spec.priority,
            seq=self.jobs.next_seq(),
            submitted_at=now,
            deadline=now + (spec.timeout_seconds or settings.timeout_seconds),
            max_attempts=settings.max_attempts,
            client_id=spec.client_id,
            subject=spec.subject,
            idempotency_key=spec.idempotency_key,
            owner_id=spec.owner_id,
            payload=spec.payload,
            payload_apart=len(spec.payload) > docs.INLINE_PAYLOAD_BYTES,
            queued_since=now,
            owner_seen=now,
        )

    def _admit_in_memory(self, rec: JobRecord, settings: ModelSettings) -> None:
        """Reserves the job's place (locked until its write returns); the broker places it."""
        self.locks.hold(rec)
        self._admissions[rec.request_id] = asyncio.get_running_loop().create_future()
        self.jobs.add(rec)
        self.grants.admit(rec, settings)

    def _admission_done(self, rec: JobRecord, stored: bool) -> None:
        pending = self._admissions.pop(rec.request_id, None)
        if pending is not None and not pending.done():
            pending.set_result(stored)

    def _forget(self, rec: JobRecord) -> None:
        """Undoes an admission whose write failed."""
        self._admission_done(rec, False)
        self.jobs.remove(rec)
        self.locks.release(rec)

    async def _write_submission(self, rec: JobRecord) -> tuple[JobRecord, bool]:
        try:
            if rec.payload_apart:
                await self.store.replace(PAYLOADS, docs.payload_document(rec, self.retention_seconds), upsert=True)
            await self.store.insert(JOBS, docs.job_document(rec, self.retention_seconds))
        except Duplicate:
            self._forget(rec)
            existing = await self._stored_idempotent(docs.idem_scope(rec), rec.idempotency_key) if rec.idempotency_key else None
            if existing is not None:
                return existing, True
            raise AlreadyExists(f"request {rec.request_id} already exists") from None
        except StoreUnavailable as exc:
            self._forget(rec)
            if exc.uncertain:
                self._adopt_later(rec.request_id)
            raise
        self._admission_done(rec, True)
        self.measures.submitted(rec.model, rec.submitted_at)
        self.locks.release(rec)
        self._queue_changed(rec.model)
        return rec, False

    def _adopt_later(self, request_id: str) -> None:
        """A submission whose write may have happened: once the database answers, run it if it is there."""
        self.jobs.doubt_submission(request_id)
        self.spawn(self._adopt(request_id))

    async def _adopt(self, request_id: str) -> None:
        delay, cap = DOUBT_RETRY_SECONDS
        while True:
            stop_if_cancelled()
            try:
                doc = await self.store.find_one(JOBS, {"_id": request_id})
                if doc is not None and self.jobs.get(request_id) is None:
                    events = await self.store.find(EVENTS, {"rid": request_id})
                    for rec in await self.adopt([doc], {request_id: events}, self.clock()):
                        self.measures.recover_submission(rec.model, rec.submitted_at)
                        self.dispatch(rec.model)
                break
            except StoreUnavailable:
                await asyncio.sleep(delay)
                delay = min(cap, delay * 2)
        self.jobs.submission_settled(request_id)

    # ---- grants

    async def acquire(self, request_id: str, worker_id: str, models: list[str], wait_s: float) -> tuple[JobRecord, Lease] | None:
        """A grant for the worker: of its own job `request_id` when it names one, else of orphaned work of `models`."""
        if request_id:
            return await self.acquire_own(request_id, worker_id, wait_s)
        return await self.acquire_orphan(worker_id, models, wait_s)

    async def acquire_own(self, request_id: str, worker_id: str, wait_s: float) -> tuple[JobRecord, Lease] | None:
        """Waits until the caller's own job is granted; None when wait_s passes first."""
        rec = self.jobs.get(request_id)
        if rec is None:
            done = await self.history.find(request_id)
            raise FailedPrecondition(f"request {request_id} already ended {done.state.name}")
        if rec.state == State.RUNNING:
            return self.grants.deliver(rec, worker_id)
        granted = await self.grants.wait_own(rec, wait_s)
        if granted is None:
            return None
        return await self._grant(granted, worker_id)

    async def acquire_orphan(self, worker_id: str, models: list[str], wait_s: float) -> tuple[JobRecord, Lease] | None:
        """Waits for orphaned work of `models` (all when empty): jobs without an owner, or whose owner went away."""
        for model in models:
            self.configs.get(model)
        granted = await self.grants.wait_orphan(worker_id, models, wait_s)
        if granted is None:
            return None
        return await self._grant(granted, worker_id)

    async def _grant(self, rec: JobRecord, worker_id: str) -> tuple[JobRecord, Lease]:
        task = self.spawn(self._write_grant(rec, worker_id))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._undeliver)
            raise

    def _undeliver(self, task: asyncio.Task[tuple[JobRecord, Lease]]) -> None:
        """The taker went away while its grant was being written: the lease waits for a new taker."""
        if task.cancelled() or task.exception() is not None:
            return
        rec, lease = task.result()
        if rec.lease is lease:
            lease.delivered = False
            rec.owner_seen = self.clock()

    async def _write_grant(self, rec: JobRecord, worker_id: str) -> tuple[JobRecord, Lease]:
        """Writes the grant of a reserved job (its lock is held) and starts the lease."""
        now = self.clock()
        grant = Grant(rec.grants + 1, uuid.uuid4().hex, worker_id, rec.attempt + 1, now)
        try:
            await self._insert(rec, EVENTS, docs.grant_document(rec.request_id, grant))
        except BaseException:
            self.grants.unreserve(rec)
            raise
        lease = apply_grant(rec, grant, self.ttl, now, delivered=True)
        self.jobs.has_events(rec.request_id)
        self.locks.release(rec)
        self.watchers.notify(rec, WatchEvent.GRANTED)
        self._queue_changed(rec.model)
        return rec, lease

    async def _insert(self, rec: JobRecord, collection: str, doc: Doc) -> None:
        """Writes one transition of `rec`; a write that may have happened puts the job in doubt until reread."""
        try:
            await self.store.insert(collection, doc)
        except Duplicate:
            self._doubt(rec)
            raise StoreUnavailable(uncertain=True) from None
        except StoreUnavailable as exc:
            if exc.uncertain:
                self._doubt(rec)
            raise

    # ---- leases

    def heartbeat(self, lease_id: str, request_id: str, progress: int, backend: str) -> HeartbeatReply:
        """Renews a lease (in memory: a restart grants every lease a fresh TTL) and says whether to stop."""
        now = self.clock()
        rec = self.jobs.get(request_id)
        lease = rec.lease if rec is not None else None
        if rec is None or lease is None or lease.lease_id != lease_id:
            return HeartbeatReply(now, True, self.jobs.why_ended(lease_id) or STOP_LEASE_LOST)
        lease.delivered = True
        lease.expires_at = now + self.ttl
        _owner_active(rec, lease, now)
        if backend:
            rec.backend = backend[:MAX_TEXT]
        if progress > rec.progress:
            rec.progress = progress
            self.watchers.notify(rec, WatchEvent.PROGRESS)
        if rec.cancel_requested:
            return HeartbeatReply(lease.expires_at, True, STOP_CANCELLED)
        if now >= rec.deadline:
            return HeartbeatReply(lease.expires_at, True, STOP_DEADLINE)
        return HeartbeatReply(lease.expires_at, False)

    async def _leased(self, request_id: str, lease_id: str, body: Callable[[JobRecord], Awaitable[T]]) -> T | None:
        """Runs `body` on the job if `lease_id` is its current lease; None when the job is no longer active."""
        rec = self.jobs.get(request_id)
        if rec is None:
            return None

        async def checked() -> T:
            lease = rec.lease
            if rec.terminal or lease is None or lease.lease_id != lease_id:
                raise FailedPrecondition(
                    f"lease {lease_id} is not the current lease of request {request_id} "
                    "(the attempt was requeued, taken over or ended); stop and discard its work"
                )
            return await body(rec)

        return await self._shielded(self._locked(rec, checked))

    async def _settled(self, request_id: str, lease_id: str, states: tuple[State, ...]) -> JobRecord:
        """A repeated call after the job ended by this lease (its answer was lost) gets the job; others are refused."""
        rec = await self.history.find(request_id)
        if rec.finished_lease == lease_id and rec.state in states:
            return rec
        raise FailedPrecondition(f"lease {lease_id} is not the current lease of request {request_id} (it ended {rec.state.name})")

    async def complete(self, lease_id: str, request_id: str, backend: str, result: JobResult) -> JobRecord:
        """Stores the result of the leased attempt: SUCCEEDED (CANCELLED when cancellation was asked for)."""
        current = self.jobs.get(request_id)
        kind = current.kind if current is not None else (await self.history.find(request_id)).kind
        if result.kind is None:
            raise InvalidArgument("result: a chat_result or ocr_result is required", field="result")
        if result.kind != kind:
            raise InvalidArgument(f"result: a {kind.name.lower()} job takes a {kind.name.lower()} result", field="result")

        async def body(rec: JobRecord) -> JobRecord:
            outcome = succeeded(rec, lease_id, result.data, backend[:MAX_TEXT] or rec.backend, self.clock())
            return await self._finish(rec, outcome)

        done = await self._leased(request_id, lease_id, body)
        return done if done is not None else await self._settled(request_id, lease_id, (State.SUCCEEDED, State.CANCELLED))

    async def fail(self, lease_id: str, request_id: str, error: JobError, retryable: bool) -> JobRecord:
        """Records a failed attempt: requeued while attempts remain and it is retryable, FAILED otherwise."""

        async def body(rec: JobRecord) -> JobRecord:
            assert rec.lease is not None
            now = self.clock()
            err = JobError(error.code or "UNKNOWN", error.message[:2000], rec.lease.attempt, error.backend or rec.backend, now)
            decision = after_failure(rec, err, retryable, now)
            _owner_active(rec, rec.lease, now)
            if isinstance(decision, GrantEnd):
                return await self._end_grant(rec, decision, CrashKind.RETRY)
            return await self._finish(rec, decision)

        done = await self._leased(request_id, lease_id, body)
        return done if done is not None else await self._settled(request_id, lease_id, (State.FAILED, State.CANCELLED))

    async def release(self, lease_id: str, request_id: str, reason: str) -> JobRecord:
        """Gives the leased job back without using an attempt."""

        async def body(rec: JobRecord) -> JobRecord:
            now = self.clock()
            assert rec.lease is not None
            _owner_active(rec, rec.lease, now)
            return await self._end_grant(rec, released(rec, reason[:500], now), None)

        done = await self._leased(request_id, lease_id, body)
        return done if done is not None else await self._settled(request_id, lease_id, ())

    async def _end_grant(self, rec: JobRecord, end: GrantEnd, crash: CrashKind | None) -> JobRecord:
        """Ends the running grant without ending the job: QUEUED again, or CANCELLED when that was asked (lock held)."""
        assert rec.lease is not None
        lease = rec.lease
        if rec.cancel_requested:
            return await self._finish(rec, cancelled(rec, "cancelled while running", end.at, lease.lease_id))
        await self._insert(rec, EVENTS, docs.end_document(rec.request_id, end))
        apply_end(rec, end)
        self.jobs.has_events(rec.request_id)
        self.jobs.lease_ended(lease.lease_id, STOP_LEASE_LOST)
        self.jobs.enqueue(rec)
        if crash is not None and end.error is not None:
            self._note(crash, rec, f"attempt {lease.attempt} of {rec.max_attempts} failed ({end.error.code}); requeued")
        self.watchers.notify(rec, WatchEvent.REQUEUED)
        self._queue_changed(rec.model)
        return rec

    async def _finish(self, rec: JobRecord, outcome: Outcome) -> JobRecord:
        """Writes the outcome (the job's last write) and settles it in memory (lock held)."""
        now = self.clock()
        await self._insert(rec, OUTCOMES, docs.outcome_document(rec, outcome, now))
        self._settle(rec, outcome)
        return rec

    def _settle(self, rec: JobRecord, outcome: Outcome) -> None:
        lease = rec.lease
        ran = rec.started_at > 0
        apply_outcome(rec, outcome)
        if lease is not None:
            reason = STOP_CANCELLED if outcome.state == State.CANCELLED else STOP_LEASE_LOST
            if outcome.error is not None and outcome.error.code == DEADLINE_CODE:
                reason = STOP_DEADLINE
            self.jobs.lease_ended(lease.lease_id, reason)
        self.jobs.finished(rec)
        self.grants.job_ended(rec)
        self.measures.finished(rec, outcome, ran)
        self.watchers.notify(rec, WatchEvent.FINISHED)
        self._queue_changed(rec.model)

    # ---- cancellation, deadlines, lapses (the last three are due from the housekeeping tick)

    async def cancel(self, request_id: str, requested_by: str) -> JobRecord:
        """Cancels a queued job at once; asks a running job's worker to stop (it learns it from its heartbeat)."""
        rec = self.jobs.get(request_id)
        if rec is None:
            return await self.history.find(request_id)
        who = requested_by[:MAX_TEXT]

        async def body() -> JobRecord:
            now = self.clock()
            if rec.terminal:
                return rec
            if rec.state == State.QUEUED or (rec.lease is not None and not rec.lease.delivered):
                return await self._finish(rec, cancelled(rec, f"cancelled by {who or 'its owner'}", now))
            if not rec.cancel_requested:
                await self._insert(rec, EVENTS, docs.cancel_document(rec.request_id, who, now))
                rec.cancel_requested = True
                self.jobs.has_events(rec.request_id)
            return rec

        return await self._shielded(self._locked(rec, body))

    async def expire(self, rec: JobRecord) -> None:
        """Fails a job past its deadline, queued or running."""

        async def body() -> None:
            now = self.clock()
            if rec.terminal or now < rec.deadline:
                return
            outcome = deadline_passed(rec, now)
            await self._finish(rec, outcome)
            assert outcome.error is not None
            self._note(CrashKind.DEADLINE, rec, outcome.error.message)

        await self._locked(rec, body)

    async def lapse(self, rec: JobRecord) -> None:
        """Requeues (or fails) a job whose lease was not renewed in time."""

        async def body() -> None:
            now = self.clock()
            lease = rec.lease
            if rec.state != State.RUNNING or lease is None or not lease.delivered or now < lease.expires_at:
                return
            error = lease_lost(rec, now)
            self._note(CrashKind.LEASE_LOST, rec, error.message)
            decision = after_failure(rec, error, True, now)
            if isinstance(decision, GrantEnd):
                await self._end_grant(rec, decision, CrashKind.RETRY)
            else:
                await self._finish(rec, decision)

        await self._locked(rec, body)

    async def reclaim(self, rec: JobRecord) -> None:
        """Returns a lease nobody received (its taker went away, or its owner never came) to the queue, unused."""

        async def body() -> None:
            now = self.clock()
            lease = rec.lease
            if rec.state != State.RUNNING or lease is None or lease.delivered or self.grants.owner_present(rec, now):
                return
            await self._end_grant(rec, released(rec, "granted, but nobody took the lease", now), None)

        await self._locked(rec, body)

    def due(self, now: float) -> list[tuple[Action, JobRecord]]:
        """The deadline, lapse and reclaim actions due now."""
        actions: list[tuple[Action, JobRecord]] = []
        for rec in self.jobs.unfinished():
            if rec.busy or rec.in_doubt:
                continue
            lease = rec.lease
            if now >= rec.deadline:
                actions.append((self.expire, rec))
            elif lease is not None and lease.delivered and now >= lease.expires_at:
                actions.append((self.lapse, rec))
            elif lease is not None and not lease.delivered and not self.grants.owner_present(rec, now):
                actions.append((self.reclaim, rec))
        return actions

    def run_due(self) -> None:
        """Starts what is due now (deadlines, lapsed and unclaimed leases), then grants (ageing, orphans) and
        tells watchers of moved places."""
        for action, rec in self.due(self.clock()):
            self.spawn(action(rec))
        for model in self.jobs.models():
            self.dispatch(model)
        for model in self.jobs.models():
            self._queue_changed(model)

    # ---- doubt: a write that may or may not have happened

    def _doubt(self, rec: JobRecord) -> None:
        if not rec.in_doubt:
            rec.in_doubt = True
            self.spawn(self._settle_doubt(rec))

    async def _settle_doubt(self, rec: JobRecord) -> None:
        delay, cap = DOUBT_RETRY_SECONDS
        while rec.in_doubt and not rec.terminal:
            stop_if_cancelled()
            try:
                await self._locked(rec, _nothing)
            except StoreUnavailable:
                await asyncio.sleep(delay)
                delay = min(cap, delay * 2)

    async def _resync(self, rec: JobRecord) -> None:
        """Rereads a job's stored transitions and takes them as the truth (lock held)."""
        outcome = await self.store.find_one(OUTCOMES, {"_id": rec.request_id})
        if outcome is not None:
            finished = docs.finished_record(outcome)
            rec.attempt = finished.attempt
            self._settle(rec, _outcome_of(finished))
            rec.in_doubt = False
            return
        job = await self.store.find_one(JOBS, {"_id": rec.request_id}, {"grant": 1, "submitted_at": 1})
        events = await self.store.find(EVENTS, {"rid": rec.request_id})
        delivered = rec.lease.lease_id if rec.lease is not None and rec.lease.delivered else ""
        self._rebuild(rec, job or {}, events, self.clock())
        if rec.lease is not None:
            rec.lease.delivered = rec.lease.lease_id == delivered
            rec.owner_seen = self.clock()
        rec.in_doubt = False

    def _rebuild(self, rec: JobRecord, job: Doc, events: list[Doc], now: float) -> None:
        """Replays a job's stored grants and ends onto its record, and puts it in its place."""
        grants, ends, cancel_asked = docs.split_events(events)
        first = docs.inline_grant(job)
        if first is not None:
            grants.append(first)
        replay(rec, grants, ends, self.ttl, now)
        rec.cancel_requested = cancel_asked
        if events:
            self.jobs.has_events(rec.request_id)
        self.jobs.place(rec)

    async def adopt(self, job_docs: list[Doc], events: dict[str, list[Doc]], now: float) -> list[JobRecord]:
        """Takes stored unfinished jobs into the index: queued ones keep their place, running ones get one TTL to heartbeat."""
        loaded: list[JobRecord] = []
        for doc in job_docs:
            if not self.jobs.has_model(doc.get("model", "")):
                log.warning("stored job of an unconfigured model left as is", extra={"request_id": doc["_id"]})
                continue
            rec = docs.record_from_document(doc)
            if rec.payload_apart:
                stored = await self.store.find_one(PAYLOADS, {"_id": rec.request_id})
                rec.payload = bytes(stored["payload"]) if stored is not None else b""
            rec.owner_seen = now
            self.jobs.saw_seq(rec.seq)
            self.jobs.add(rec)
            self._rebuild(rec, doc, events.get(rec.request_id, []), now)
            loaded.append(rec)
        return loaded

    # ---- reads

    async def find(self, request_id: str, include_payload: bool = False) -> JobRecord:
        """A job by id, from memory or the store; NotFound when unknown (or past retention)."""
        return await self.history.find(request_id, include_payload)

    async def list_jobs(self, f: JobFilter, size: int, token: str) -> tuple[list[JobRecord], str]:
        """One page of the history, newest first, and the next page's token ("" at the end)."""
        return await self.history.list_jobs(f, size, token)

    def position(self, rec: JobRecord) -> int:
        """1-based place in grant order while queued; 0 otherwise."""
        return self.jobs.position(rec, self.clock())

    def models(self) -> list[str]:
        """The configured models."""
        return self.jobs.models()

    def queue_stats(self, model: str) -> QueueStats:
        settings = self.configs.get(model)
        return QueueStats(settings, self.jobs.running(model), self.jobs.queued(model), self.measures.stats(model))

    def series(self, model: str, minutes: int | None) -> list[MinuteView]:
        """The model's last `minutes` minutes (the whole window when None), oldest first."""
        self.configs.get(model)
        minutes = WINDOW_MINUTES if minutes is None else minutes
        if not 1 <= minutes <= WINDOW_MINUTES:
            raise InvalidArgument(f"minutes: between 1 and {WINDOW_MINUTES}, not {minutes}", field="minutes")
        return self.measures.series(model, minutes, self.clock())

    def usage(self, window_days: int) -> tuple[float, dict[tuple[str, int], int]]:
        """Since when, and the submissions since then by model and hour of the week (the last week when 0 days)."""
        days = window_days or DEFAULT_USAGE_DAYS
        if not 0 < days <= MAX_USAGE_DAYS:
            raise InvalidArgument(f"window_days: between 1 and {MAX_USAGE_DAYS}", field="window_days")
        since = self.clock() - days * 86_400
        return since, self.measures.usage_by_hour_of_week(since)

    async def watch(self, request_id: str) -> AsyncIterator[tuple[WatchEvent, JobRecord]]:
        """The job's events until it ends: its state first (POSITION, GRANTED or FINISHED), then every change."""
        rec = self.jobs.get(request_id)
        if rec is None:
            yield WatchEvent.FINISHED, await self.history.find(request_id)
            return
        async for event in self.watchers.follow(rec):
            yield event

    def _queue_changed(self, model: str) -> None:
        """Notes the model's new depth; tells watchers of its queued jobs whose place changed."""
        self.measures.depth(model, self.jobs.running(model), self.jobs.queued(model), self.clock())
        self.watchers.positions_moved(model)

    def _note(self, kind: CrashKind, rec: JobRecord, message: str) -> None:
        details = {"attempt": str(rec.attempt), "max_attempts": str(rec.max_attempts)}
        event = CrashEvent(kind, message, "queue", rec.model, rec.backend, rec.request_id, details)
        self.crashlog.note(event)

    async def close(self) -> None:
        """Lets running transitions finish (briefly), then cancels what is left."""
        self.grants.close()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)


def _owner_active(rec: JobRecord, lease: Lease, now: float) -> None:
    """The owner running its own job is present: if the job is requeued, it stays the owner's to take."""
    if lease.worker_id == rec.owner_id:
        rec.owner_seen = now


async def _nothing() -> None:
    return None


def _outcome_of(rec: JobRecord) -> Outcome:
    return Outcome(rec.state, rec.finished_at, rec.error, rec.result, rec.backend, rec.finished_lease, tuple(rec.attempt_errors))
