"""The queue engine: admission, grant order, leases, attempts, deadlines and results, with one writer per job.

This process is the only writer of job documents. Every transition of a job runs while holding
that job's in-memory lock, writes one document whose _id names the transition (an insert: atomic
on FerretDB and MongoDB alike), and changes the in-memory view only after the write is
acknowledged. See docs/queue.md for the design and why no attempt can run twice.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any, TypeVar

from aigw_server.queue import store_documents as docs
from aigw_server.queue.configs import ModelConfigs
from aigw_server.queue.crashlog import CrashEvent, CrashKind, CrashLog
from aigw_server.queue.jobs import (
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
from aigw_server.queue.model_settings import ModelSettings, admits, retry_after
from aigw_server.queue.ordering import ModelQueue
from aigw_server.queue.series import QueueSeries
from aigw_server.queue.stats import ModelStats, Usage
from aigw_server.queue.store import EVENTS, JOBS, OUTCOMES, PAYLOADS, Duplicate, QueueStore, StoreUnavailable, stop_if_cancelled
from aigw_server.runtime.config import GatewayConfig
from aigw_server.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    request_not_found,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Action = Callable[[JobRecord], Coroutine[Any, Any, None]]
REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+=-]{1,128}")
MAX_TEXT = 256
MAX_TIMEOUT_SECONDS = 86_400.0
MAX_PAYLOAD_BYTES = 15 * 1024 * 1024
MAX_WAIT_SECONDS = 30.0
RECENT_JOBS = 2000
RECENT_RESULT_BYTES = 64 * 1024
ENDED_LEASES = 20_000
DOUBT_RETRY_SECONDS = (0.1, 2.0)


class WatchEvent(IntEnum):
    """What a WatchJob event reports (values as in aigw.queue.v1.WatchEvent)."""

    POSITION = 1
    GRANTED = 2
    PROGRESS = 3
    REQUEUED = 4
    FINISHED = 5


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


@dataclass(frozen=True, slots=True)
class HeartbeatReply:
    """The renewed expiry, and whether (and why) the lease holder must stop."""

    expires_at: float
    cancel: bool
    reason: str = ""


@dataclass(eq=False)
class OrphanWaiter:
    """A worker waiting for orphaned work of some models (all when `models` is empty)."""

    worker_id: str
    models: frozenset[str]
    fut: asyncio.Future[JobRecord | None]


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One model's queue metrics."""

    settings: ModelSettings
    processing: int
    waiting: int
    stats: ModelStats


class QueueEngine:
    """Jobs of every configured model: the in-memory view, and the only path by which they change."""

    def __init__(self, cfg: GatewayConfig, store: QueueStore, crashlog: CrashLog, clock: Callable[[], float] = time.time) -> None:
        self.qcfg = cfg.queue
        self.store = store
        self.crashlog = crashlog
        self.clock = clock
        self.retention_seconds = cfg.queue.history_retention_days * 86_400.0
        self.configs = ModelConfigs(cfg, store, clock, self.dispatch)
        self.queues = {name: ModelQueue() for name in cfg.models}
        self.stats = {name: ModelStats() for name in cfg.models}
        self.usage = Usage()
        self.series = QueueSeries(cfg.models)
        self.active: dict[str, JobRecord] = {}
        self.recent: OrderedDict[str, JobRecord] = OrderedDict()
        self.idem: dict[tuple[str, str], str] = {}
        self.by_lease: dict[str, str] = {}
        self.ended_leases: OrderedDict[str, str] = OrderedDict()
        self.with_events: set[str] = set()
        self.cleanup: list[str] = []
        self.doubtful_submits: set[str] = set()
        self._owner_waiters: dict[str, asyncio.Future[JobRecord | None]] = {}
        self._orphan_waiters: list[OrphanWaiter] = []
        self._lock_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._admissions: dict[str, asyncio.Future[bool]] = {}
        self._watchers: dict[str, list[asyncio.Queue[WatchEvent]]] = {}
        self._positions: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._seq = time.time_ns()

    @property
    def ttl(self) -> float:
        return self.qcfg.lease_ttl_seconds

    @property
    def ageing(self) -> float:
        return self.qcfg.ageing_seconds

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

    async def _lock(self, rec: JobRecord) -> None:
        while rec.busy:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._lock_waiters.setdefault(rec.request_id, []).append(fut)
            await fut
        rec.busy = True

    def _unlock(self, rec: JobRecord) -> None:
        rec.busy = False
        for fut in self._lock_waiters.pop(rec.request_id, ()):
            if not fut.done():
                fut.set_result(None)
        if rec.model in self.queues:
            self.dispatch(rec.model)

    async def _locked(self, rec: JobRecord, body: Callable[[], Awaitable[T]]) -> T:
        """Runs `body` holding the job's lock, after settling any doubt about its stored state."""
        await self._lock(rec)
        try:
            if rec.in_doubt:
                await self._resync(rec)
            return await body()
        finally:
            self._unlock(rec)

    # ---- Submit

    async def submit(self, spec: SubmitSpec) -> tuple[JobRecord, bool]:
        """Admits a job durably; returns it and whether an idempotency key matched an existing job."""
        settings = self._check_submit(spec)
        if spec.idempotency_key:
            existing = self._idempotent(docs.idem_scope(spec), spec.idempotency_key)
            if existing is not None:
                return await self._once_stored(existing), True
        mq = self.queues[spec.model]
        if not admits(len(mq), len(mq.running), settings):
            return await self._refuse(spec, settings, mq)
        request_id = spec.request_id or uuid.uuid4().hex
        if request_id in self.active or request_id in self.recent or request_id in self.doubtful_submits:
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

    def _idempotent(self, client_id: str, key: str) -> JobRecord | None:
        request_id = self.idem.get((client_id, key))
        if request_id is None:
            return None
        return self.active.get(request_id) or self.recent.get(request_id)

    async def _once_stored(self, rec: JobRecord) -> JobRecord:
        """The job, once its own Submit's write is acknowledged (UNAVAILABLE if that write failed)."""
        pending = self._admissions.get(rec.request_id)
        if pending is not None and not await asyncio.shield(pending):
            raise StoreUnavailable(uncertain=False)
        return rec

    async def _stored_idempotent(self, client_id: str, key: str) -> JobRecord | None:
        doc = await self.store.find_one(JOBS, {"idem": docs.idem_key(client_id, key)}, {"_id": 1})
        return await self.find(doc["_id"]) if doc is not None else None

    async def _refuse(self, spec: SubmitSpec, settings: ModelSettings, mq: ModelQueue) -> tuple[JobRecord, bool]:
        if spec.idempotency_key:
            existing = await self._stored_idempotent(docs.idem_scope(spec), spec.idempotency_key)
            if existing is not None:
                return existing, True
        stats = self.stats[spec.model]
        stats.rejected += 1
        now = self.clock()
        running_for = [now - rec.started_at for rid in mq.running if (rec := self.active.get(rid)) is not None]
        wait = retry_after(len(mq), running_for, settings, stats.median_service_seconds())
        raise ResourceExhausted(
            f"model {spec.model!r} is full: {len(mq.running)} running (max {settings.max_concurrent}), "
            f"{len(mq)} waiting (max {settings.max_waiting}); retry in {wait:g} s",
            retry_after=wait,
        )

    def _new_record(self, request_id: str, spec: SubmitSpec, settings: ModelSettings) -> JobRecord:
        now = self.clock()
        self._seq += 1
        assert spec.kind is not None
        return JobRecord(
            request_id=request_id,
            model=spec.model,
            kind=spec.kind,
            priority=spec.priority,
            seq=self._seq,
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
        """Reserves the job's place (locked until its write returns); an owner's job at the front is granted at once."""
        mq = self.queues[rec.model]
        rec.busy = True
        self._admissions[rec.request_id] = asyncio.get_running_loop().create_future()
        self.active[rec.request_id] = rec
        if rec.idempotency_key:
            self.idem[(docs.idem_scope(rec), rec.idempotency_key)] = rec.request_id
        now = rec.submitted_at
        ahead = mq.ahead_of_new(rec.priority, now, self.ageing) if rec.owner_id else 0
        if rec.owner_id and len(mq.running) + ahead < settings.max_concurrent:
            grant = Grant(1, uuid.uuid4().hex, rec.owner_id, 1, now)
            apply_grant(rec, grant, self.ttl, now, delivered=False)
            mq.running.add(rec.request_id)
            self.by_lease[grant.lease_id] = rec.request_id
        else:
            mq.push(rec)

    def _admission_done(self, rec: JobRecord, stored: bool) -> None:
        pending = self._admissions.pop(rec.request_id, None)
        if pending is not None and not pending.done():
            pending.set_result(stored)

    def _forget(self, rec: JobRecord) -> None:
        """Undoes an admission whose write failed."""
        self._admission_done(rec, False)
        self.active.pop(rec.request_id, None)
        if rec.idempotency_key:
            self.idem.pop((docs.idem_scope(rec), rec.idempotency_key), None)
        mq = self.queues[rec.model]
        mq.remove(rec)
        mq.running.discard(rec.request_id)
        if rec.lease is not None:
            self.by_lease.pop(rec.lease.lease_id, None)
        self._unlock(rec)

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
        self.stats[rec.model].submitted += 1
        self.usage.add(rec.model, rec.submitted_at)
        self._unlock(rec)
        self._notify_positions(rec.model)
        return rec, False

    def _adopt_later(self, request_id: str) -> None:
        """A submission whose write may have happened: once the database answers, run it if it is there."""
        self.doubtful_submits.add(request_id)
        self.spawn(self._adopt(request_id))

    async def _adopt(self, request_id: str) -> None:
        delay, cap = DOUBT_RETRY_SECONDS
        while True:
            stop_if_cancelled()
            try:
                doc = await self.store.find_one(JOBS, {"_id": request_id})
                if doc is not None and request_id not in self.active:
                    events = await self.store.find(EVENTS, {"rid": request_id})
                    for rec in await self.load_active([doc], {request_id: events}, self.clock()):
                        self.usage.add(rec.model, rec.submitted_at)
                        self.dispatch(rec.model)
                break
            except StoreUnavailable:
                await asyncio.sleep(delay)
                delay = min(cap, delay * 2)
        self.doubtful_submits.discard(request_id)

    # ---- grants

    def dispatch(self, model: str) -> None:
        """Grants the model's queued jobs, in grant order, to the takers waiting for them while running slots are free.

        A job nobody is waiting to take keeps a slot promised: a job behind it is granted only into a slot
        that remains free after every job ahead has one.
        """
        mq = self.queues[model]
        free = self.configs.settings[model].max_concurrent - len(mq.running)
        if free <= 0 or not len(mq):
            return
        now = self.clock()
        chosen: list[tuple[JobRecord, asyncio.Future[JobRecord | None]]] = []
        promised = 0
        for rec in mq.iter_grant_order(now, self.ageing):
            if len(chosen) + promised >= free:
                break
            if now >= rec.deadline:
                continue
            fut = None if rec.busy or rec.in_doubt else self._taker(rec, now)
            if fut is None:
                promised += 1
            else:
                chosen.append((rec, fut))
        for rec, fut in chosen:
            mq.remove(rec)
            mq.running.add(rec.request_id)
            rec.busy = True
            fut.set_result(rec)

    def _owner_present(self, rec: JobRecord, now: float) -> bool:
        return bool(rec.owner_id) and (rec.owner_waiting or now - rec.owner_seen <= self.qcfg.orphan_grace_seconds)

    def _taker(self, rec: JobRecord, now: float) -> asyncio.Future[JobRecord | None] | None:
        if self._owner_present(rec, now):
            fut = self._owner_waiters.get(rec.request_id)
            if fut is None or fut.done():
                return None
            del self._owner_waiters[rec.request_id]
            return fut
        for i, waiter in enumerate(self._orphan_waiters):
            if not waiter.fut.done() and (not waiter.models or rec.model in waiter.models):
                del self._orphan_waiters[i]
                return waiter.fut
        return None

    def _unreserve(self, rec: JobRecord) -> None:
        """Puts a job reserved for a taker that is gone back at its place."""
        mq = self.queues[rec.model]
        mq.running.discard(rec.request_id)
        mq.push(rec)
        self._unlock(rec)

    async def _wait_for_grant(self, fut: asyncio.Future[JobRecord | None], wait_s: float) -> JobRecord | None:
        handle = asyncio.get_running_loop().call_later(wait_s, _expire, fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result() is not None:
                reserved = fut.result()
                assert reserved is not None
                self._unreserve(reserved)
            raise
        finally:
            handle.cancel()

    async def acquire_own(self, request_id: str, worker_id: str, wait_s: float) -> tuple[JobRecord, Lease] | None:
        """Waits until the caller's own job is granted; None when wait_s passes first."""
        rec = self.active.get(request_id)
        if rec is None:
            done = await self.find(request_id)
            raise FailedPrecondition(f"request {request_id} already ended {done.state.name}")
        if rec.state == State.RUNNING:
            return self._deliver(rec, worker_id)
        previous = self._owner_waiters.pop(request_id, None)
        if previous is not None and not previous.done():
            previous.set_result(None)
        fut: asyncio.Future[JobRecord | None] = asyncio.get_running_loop().create_future()
        self._owner_waiters[request_id] = fut
        rec.owner_waiting = True
        try:
            self.dispatch(rec.model)
            granted = await self._wait_for_grant(fut, _clamp_wait(wait_s))
        finally:
            if self._owner_waiters.get(request_id) is fut:
                del self._owner_waiters[request_id]
                rec.owner_waiting = False
            rec.owner_seen = self.clock()
        if granted is None:
            return None
        return await self._grant(granted, worker_id)

    def lease_at_submit(self, rec: JobRecord) -> Lease | None:
        """The lease of a job granted to its owner at Submit, delivered with the Submit answer (accept_lease)."""
        lease = rec.lease
        if rec.state != State.RUNNING or lease is None or lease.delivered or rec.busy:
            return None
        return self._deliver(rec, rec.owner_id)[1]

    def _deliver(self, rec: JobRecord, worker_id: str) -> tuple[JobRecord, Lease]:
        """Hands a lease granted ahead of its taker (at Submit, or to a call that went away) to the caller, once."""
        lease = rec.lease
        if lease is None or lease.delivered or rec.busy or rec.in_doubt:
            raise FailedPrecondition(
                f"request {rec.request_id} is already running under a lease held elsewhere; watch it for the result"
            )
        lease.delivered = True
        lease.worker_id = worker_id or lease.worker_id
        lease.expires_at = self.clock() + self.ttl
        self._notify(rec, WatchEvent.GRANTED)
        return rec, lease

    async def acquire_orphan(self, worker_id: str, models: list[str], wait_s: float) -> tuple[JobRecord, Lease] | None:
        """Waits for orphaned work of `models` (all when empty): jobs without an owner, or whose owner went away."""
        for model in models:
            self.configs.get(model)
        fut: asyncio.Future[JobRecord | None] = asyncio.get_running_loop().create_future()
        waiter = OrphanWaiter(worker_id, frozenset(models), fut)
        self._orphan_waiters.append(waiter)
        try:
            for model in models or list(self.queues):
                self.dispatch(model)
                if fut.done():
                    break
            granted = await self._wait_for_grant(fut, _clamp_wait(wait_s))
        finally:
            if waiter in self._orphan_waiters:
                self._orphan_waiters.remove(waiter)
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
            self._unreserve(rec)
            raise
        lease = apply_grant(rec, grant, self.ttl, now, delivered=True)
        self.by_lease[lease.lease_id] = rec.request_id
        self.with_events.add(rec.request_id)
        self._unlock(rec)
        self._notify(rec, WatchEvent.GRANTED)
        self._notify_positions(rec.model)
        return rec, lease

    async def _insert(self, rec: JobRecord, collection: str, doc: docs.Doc) -> None:
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
        rec = self.active.get(request_id)
        lease = rec.lease if rec is not None else None
        if rec is None or lease is None or lease.lease_id != lease_id:
            return HeartbeatReply(now, True, self.ended_leases.get(lease_id, STOP_LEASE_LOST))
        lease.delivered = True
        lease.expires_at = now + self.ttl
        self._owner_active(rec, lease, now)
        if backend:
            rec.backend = backend[:MAX_TEXT]
        if progress > rec.progress:
            rec.progress = progress
            self._notify(rec, WatchEvent.PROGRESS)
        if rec.cancel_requested:
            return HeartbeatReply(lease.expires_at, True, STOP_CANCELLED)
        if now >= rec.deadline:
            return HeartbeatReply(lease.expires_at, True, STOP_DEADLINE)
        return HeartbeatReply(lease.expires_at, False)

    def _owner_active(self, rec: JobRecord, lease: Lease, now: float) -> None:
        """The owner running its own job is present: if the job is requeued, it stays the owner's to take."""
        if lease.worker_id == rec.owner_id:
            rec.owner_seen = now

    async def _leased(self, request_id: str, lease_id: str, body: Callable[[JobRecord], Awaitable[T]]) -> T | None:
        """Runs `body` on the job if `lease_id` is its current lease; None when the job is no longer active."""
        rec = self.active.get(request_id)
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
        rec = await self.find(request_id)
        if rec.finished_lease == lease_id and rec.state in states:
            return rec
        raise FailedPrecondition(f"lease {lease_id} is not the current lease of request {request_id} (it ended {rec.state.name})")

    async def complete(self, lease_id: str, request_id: str, backend: str, result: bytes) -> JobRecord:
        """Stores the result of the leased attempt: SUCCEEDED (CANCELLED when cancellation was asked for)."""

        async def body(rec: JobRecord) -> JobRecord:
            return await self._finish(rec, succeeded(rec, lease_id, result, backend[:MAX_TEXT] or rec.backend, self.clock()))

        done = await self._leased(request_id, lease_id, body)
        return done if done is not None else await self._settled(request_id, lease_id, (State.SUCCEEDED, State.CANCELLED))

    async def fail(self, lease_id: str, request_id: str, error: JobError, retryable: bool) -> JobRecord:
        """Records a failed attempt: requeued while attempts remain and it is retryable, FAILED otherwise."""

        async def body(rec: JobRecord) -> JobRecord:
            assert rec.lease is not None
            now = self.clock()
            err = JobError(error.code or "UNKNOWN", error.message[:2000], rec.lease.attempt, error.backend or rec.backend, now)
            decision = after_failure(rec, err, retryable, now)
            self._owner_active(rec, rec.lease, now)
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
            self._owner_active(rec, rec.lease, now)
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
        self.with_events.add(rec.request_id)
        self._lease_ended(lease.lease_id, STOP_LEASE_LOST)
        mq = self.queues[rec.model]
        mq.running.discard(rec.request_id)
        mq.push(rec)
        if crash is not None and end.error is not None:
            self._note(crash, rec, f"attempt {lease.attempt} of {rec.max_attempts} failed ({end.error.code}); requeued")
        self._notify(rec, WatchEvent.REQUEUED)
        self._notify_positions(rec.model)
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
        mq = self.queues[rec.model]
        mq.remove(rec)
        mq.running.discard(rec.request_id)
        self.active.pop(rec.request_id, None)
        if lease is not None:
            reason = STOP_CANCELLED if outcome.state == State.CANCELLED else STOP_LEASE_LOST
            if outcome.error is not None and outcome.error.code == "DEADLINE_EXCEEDED":
                reason = STOP_DEADLINE
            self._lease_ended(lease.lease_id, reason)
        self._remember(rec)
        waiter = self._owner_waiters.pop(rec.request_id, None)
        if waiter is not None:
            _expire(waiter)
        code = outcome.error.code if outcome.error is not None else ""
        stats = self.stats[rec.model]
        stats.count_finished(outcome.state, code)
        stats.sample(rec.queued_ms(outcome.at), rec.service_ms(outcome.at), ran)
        total_ms = (outcome.at - rec.submitted_at) * 1000.0
        self.series.finished(rec.model, outcome.state, code, total_ms, rec.queued_ms(outcome.at), outcome.at)
        if rec.request_id in self.with_events:
            self.with_events.discard(rec.request_id)
            self.cleanup.append(rec.request_id)
        self._notify(rec, WatchEvent.FINISHED)
        self._notify_positions(rec.model)

    def _lease_ended(self, lease_id: str, reason: str) -> None:
        self.by_lease.pop(lease_id, None)
        self.ended_leases[lease_id] = reason
        while len(self.ended_leases) > ENDED_LEASES:
            self.ended_leases.popitem(last=False)

    def _remember(self, rec: JobRecord) -> None:
        """Keeps a finished job at hand for polls and repeated calls (without its payload; large results are reread)."""
        rec.payload = b""
        if len(rec.result) > RECENT_RESULT_BYTES:
            self._forget_finished(rec)
            return
        self.recent[rec.request_id] = rec
        while len(self.recent) > RECENT_JOBS:
            self._forget_finished(self.recent.popitem(last=False)[1])

    def _forget_finished(self, rec: JobRecord) -> None:
        if rec.idempotency_key and self.idem.get((docs.idem_scope(rec), rec.idempotency_key)) == rec.request_id:
            del self.idem[(docs.idem_scope(rec), rec.idempotency_key)]

    # ---- cancellation, deadlines, lapses (the last three run from the housekeeping tick)

    async def cancel(self, request_id: str, requested_by: str) -> JobRecord:
        """Cancels a queued job at once; asks a running job's worker to stop (it learns it from its heartbeat)."""
        rec = self.active.get(request_id)
        if rec is None:
            return await self.find(request_id)
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
                self.with_events.add(rec.request_id)
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
            if rec.state != State.RUNNING or lease is None or lease.delivered or self._owner_present(rec, now):
                return
            await self._end_grant(rec, released(rec, "granted, but nobody took the lease", now), None)

        await self._locked(rec, body)

    def due(self, now: float) -> list[tuple[Action, JobRecord]]:
        """The deadline, lapse and reclaim actions due now."""
        actions: list[tuple[Action, JobRecord]] = []
        for rec in self.active.values():
            if rec.busy or rec.in_doubt:
                continue
            lease = rec.lease
            if now >= rec.deadline:
                actions.append((self.expire, rec))
            elif lease is not None and lease.delivered and now >= lease.expires_at:
                actions.append((self.lapse, rec))
            elif lease is not None and not lease.delivered and not self._owner_present(rec, now):
                actions.append((self.reclaim, rec))
        return actions

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

    def _rebuild(self, rec: JobRecord, job: docs.Doc, events: list[docs.Doc], now: float) -> None:
        """Replays a job's stored grants and ends onto its record, and puts it in its place."""
        grants, ends, cancel_asked = docs.split_events(events)
        first = docs.inline_grant(job)
        if first is not None:
            grants.append(first)
        if rec.lease is not None:
            self.by_lease.pop(rec.lease.lease_id, None)
        replay(rec, grants, ends, self.ttl, now)
        rec.cancel_requested = cancel_asked
        if events:
            self.with_events.add(rec.request_id)
        mq = self.queues[rec.model]
        mq.remove(rec)
        mq.running.discard(rec.request_id)
        if rec.state == State.RUNNING and rec.lease is not None:
            mq.running.add(rec.request_id)
            self.by_lease[rec.lease.lease_id] = rec.request_id
        else:
            mq.push(rec)

    # ---- recovery

    async def load_active(self, job_docs: list[docs.Doc], events: dict[str, list[docs.Doc]], now: float) -> list[JobRecord]:
        """Takes stored unfinished jobs into the view: queued ones keep their place, running ones get one TTL to heartbeat."""
        loaded: list[JobRecord] = []
        for doc in job_docs:
            if doc.get("model") not in self.queues:
                log.warning("stored job of an unconfigured model left as is", extra={"request_id": doc["_id"]})
                continue
            rec = docs.record_from_document(doc)
            if rec.payload_apart:
                stored = await self.store.find_one(PAYLOADS, {"_id": rec.request_id})
                rec.payload = bytes(stored["payload"]) if stored is not None else b""
            rec.owner_seen = now
            self._seq = max(self._seq, rec.seq)
            self.active[rec.request_id] = rec
            if rec.idempotency_key:
                self.idem[(docs.idem_scope(rec), rec.idempotency_key)] = rec.request_id
            self._rebuild(rec, doc, events.get(rec.request_id, []), now)
            loaded.append(rec)
        return loaded

    # ---- reads

    async def find(self, request_id: str, include_payload: bool = False) -> JobRecord:
        """A job by id, from memory or the store; NotFound when unknown (or past retention)."""
        rec = self.active.get(request_id) or self.recent.get(request_id)
        if rec is None:
            rec = await self._load(request_id)
        if include_payload and not rec.payload:
            rec = _copy(rec)
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

    def position(self, rec: JobRecord) -> int:
        """1-based place in grant order while queued; 0 otherwise."""
        if rec.state != State.QUEUED or rec.request_id not in self.queues[rec.model]:
            return 0
        return self.queues[rec.model].positions(self.clock(), self.ageing).get(rec.request_id, 0)

    def queue_stats(self, model: str) -> QueueStats:
        settings = self.configs.get(model)
        mq = self.queues[model]
        return QueueStats(settings, len(mq.running), len(mq), self.stats[model])

    # ---- watchers

    async def watch(self, request_id: str) -> AsyncIterator[tuple[WatchEvent, JobRecord]]:
        """The job's events until it ends: its state first (POSITION, GRANTED or FINISHED), then every change."""
        rec = self.active.get(request_id)
        if rec is None:
            yield WatchEvent.FINISHED, await self.find(request_id)
            return
        events: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self._watchers.setdefault(request_id, []).append(events)
        try:
            first = WatchEvent.POSITION if rec.state == State.QUEUED else WatchEvent.GRANTED
            self._positions[request_id] = self.position(rec)
            yield first, rec
            while True:
                event = await events.get()
                yield event, rec
                if event == WatchEvent.FINISHED:
                    return
        finally:
            queues = self._watchers.get(request_id, [])
            if events in queues:
                queues.remove(events)
            if not queues:
                self._watchers.pop(request_id, None)
                self._positions.pop(request_id, None)

    def _notify(self, rec: JobRecord, event: WatchEvent) -> None:
        for events in self._watchers.get(rec.request_id, ()):
            events.put_nowait(event)

    def _notify_positions(self, model: str) -> None:
        """Notes the model's new depth; sends POSITION to watchers of its queued jobs whose place changed."""
        self.series.depth(model, len(self.queues[model].running), len(self.queues[model]), self.clock())
        if not self._watchers:
            return
        watched = [self.active[r] for r in self._watchers if r in self.active and self.active[r].model == model]
        if not watched:
            return
        positions = self.queues[model].positions(self.clock(), self.ageing)
        for rec in watched:
            place = positions.get(rec.request_id, 0)
            if place != self._positions.get(rec.request_id):
                self._positions[rec.request_id] = place
                if place:
                    self._notify(rec, WatchEvent.POSITION)

    def notify_all_positions(self) -> None:
        for model in self.queues:
            self._notify_positions(model)

    def _note(self, kind: CrashKind, rec: JobRecord, message: str) -> None:
        details = {"attempt": str(rec.attempt), "max_attempts": str(rec.max_attempts)}
        event = CrashEvent(kind, message, "queue", rec.model, rec.backend, rec.request_id, details)
        self.crashlog.note(event)

    async def close(self) -> None:
        """Lets running transitions finish (briefly), then cancels what is left."""
        for waiter in self._orphan_waiters:
            _expire(waiter.fut)
        for fut in self._owner_waiters.values():
            _expire(fut)
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)


def _expire(fut: asyncio.Future[JobRecord | None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _clamp_wait(wait_s: float) -> float:
    return min(MAX_WAIT_SECONDS, max(0.0, wait_s))


async def _nothing() -> None:
    return None


def _outcome_of(rec: JobRecord) -> Outcome:
    return Outcome(rec.state, rec.finished_at, rec.error, rec.result, rec.backend, rec.finished_lease, tuple(rec.attempt_errors))


def _copy(rec: JobRecord) -> JobRecord:
    return replace(rec, attempt_errors=list(rec.attempt_errors))
