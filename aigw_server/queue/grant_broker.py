"""Who gets which queued job: grant order under each model's concurrency limit, the takers waiting for grants
(a job's owner, or workers taking orphaned work), and the lease a job's owner gets at Submit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from aigw_server.queue.active_jobs import ActiveJobs
from aigw_server.queue.job_locks import JobLocks
from aigw_server.queue.job_watchers import JobWatchers, WatchEvent
from aigw_server.queue.jobs import Grant, JobRecord, Lease, State, apply_grant
from aigw_server.queue.model_settings import ModelSettings
from aigw_server.runtime.config import QueueConfig
from aigw_server.runtime.errors import FailedPrecondition

MAX_WAIT_SECONDS = 30.0


@dataclass(eq=False)
class OrphanWaiter:
    """A worker waiting for orphaned work of some models (all when `models` is empty)."""

    worker_id: str
    models: frozenset[str]
    fut: asyncio.Future[JobRecord | None]


class GrantBroker:
    """Hands queued jobs to waiting takers in grant order while running slots are free; writes nothing itself.

    A job granted here is reserved (its lock held, its running slot taken) until the engine has written
    the grant, or puts it back with `unreserve`.
    """

    def __init__(
        self,
        jobs: ActiveJobs,
        locks: JobLocks,
        watchers: JobWatchers,
        settings: Callable[[str], ModelSettings],
        qcfg: QueueConfig,
        clock: Callable[[], float],
    ) -> None:
        self.jobs = jobs
        self.locks = locks
        self.watchers = watchers
        self.settings = settings
        self.ttl = qcfg.lease_ttl_seconds
        self.orphan_grace = qcfg.orphan_grace_seconds
        self.clock = clock
        self._owner_waiters: dict[str, asyncio.Future[JobRecord | None]] = {}
        self._orphan_waiters: list[OrphanWaiter] = []

    # ---- admission

    def admit(self, rec: JobRecord, settings: ModelSettings) -> None:
        """Places a new job: an owner's job that would be granted at once runs at once, under a lease its owner has
        not received yet (see `lease_at_submit`); any other job is queued."""
        now = rec.submitted_at
        ahead = self.jobs.ahead_of_new(rec.model, rec.priority, now) if rec.owner_id else 0
        if rec.owner_id and self.jobs.running(rec.model) + ahead < settings.max_concurrent:
            grant = Grant(1, uuid.uuid4().hex, rec.owner_id, 1, now)
            apply_grant(rec, grant, self.ttl, now, delivered=False)
            self.jobs.occupy(rec)
        else:
            self.jobs.enqueue(rec)

    def lease_at_submit(self, rec: JobRecord, accept_lease: bool, existing: bool) -> Lease | None:
        """The lease a Submit answer carries: only to an owner that accepts one, for the job it just admitted, when
        that job was granted at admission and no other caller has taken the lease meanwhile."""
        if not accept_lease or not rec.owner_id or existing:
            return None
        lease = rec.lease
        if rec.state != State.RUNNING or lease is None or lease.delivered or rec.busy:
            return None
        return self.deliver(rec, rec.owner_id)[1]

    def deliver(self, rec: JobRecord, worker_id: str) -> tuple[JobRecord, Lease]:
        """Hands a lease granted ahead of its taker (at Submit, or to a call that went away) to the caller, once."""
        lease = rec.lease
        if lease is None or lease.delivered or rec.busy or rec.in_doubt:
            raise FailedPrecondition(
                f"request {rec.request_id} is already running under a lease held elsewhere; watch it for the result"
            )
        lease.delivered = True
        lease.worker_id = worker_id or lease.worker_id
        lease.expires_at = self.clock() + self.ttl
        self.watchers.notify(rec, WatchEvent.GRANTED)
        return rec, lease

    # ---- grant order

    def dispatch(self, model: str) -> None:
        """Grants the model's queued jobs, in grant order, to the takers waiting for them while running slots are free.

        A job nobody is waiting to take keeps a slot promised: a job behind it is granted only into a slot
        that remains free after every job ahead has one.
        """
        free = self.settings(model).max_concurrent - self.jobs.running(model)
        if free <= 0 or not self.jobs.queued(model):
            return
        now = self.clock()
        chosen: list[tuple[JobRecord, asyncio.Future[JobRecord | None]]] = []
        promised = 0
        for rec in self.jobs.grant_order(model, now):
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
            self.jobs.occupy(rec)
            self.locks.hold(rec)
            fut.set_result(rec)

    def owner_present(self, rec: JobRecord, now: float) -> bool:
        """Whether the job's owner is waiting for it or was seen within the orphan grace period."""
        return bool(rec.owner_id) and (rec.owner_waiting or now - rec.owner_seen <= self.orphan_grace)

    def _taker(self, rec: JobRecord, now: float) -> asyncio.Future[JobRecord | None] | None:
        if self.owner_present(rec, now):
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

    def unreserve(self, rec: JobRecord) -> None:
        """Puts a job reserved for a taker that is gone back at its place."""
        self.jobs.enqueue(rec)
        self.locks.release(rec)

    # ---- takers

    async def wait_own(self, rec: JobRecord, wait_s: float) -> JobRecord | None:
        """Waits until the owner's queued job is reserved for it; None when `wait_s` passes first."""
        request_id = rec.request_id
        previous = self._owner_waiters.pop(request_id, None)
        if previous is not None and not previous.done():
            previous.set_result(None)
        fut: asyncio.Future[JobRecord | None] = asyncio.get_running_loop().create_future()
        self._owner_waiters[request_id] = fut
        rec.owner_waiting = True
        try:
            self.dispatch(rec.model)
            return await self._wait_for_grant(fut, wait_s)
        finally:
            if self._owner_waiters.get(request_id) is fut:
                del self._owner_waiters[request_id]
                rec.owner_waiting = False
            rec.owner_seen = self.clock()

    async def wait_orphan(self, worker_id: str, models: list[str], wait_s: float) -> JobRecord | None:
        """Waits until orphaned work of `models` (all when empty) is reserved for the worker; None when `wait_s` passes."""
        fut: asyncio.Future[JobRecord | None] = asyncio.get_running_loop().create_future()
        waiter = OrphanWaiter(worker_id, frozenset(models), fut)
        self._orphan_waiters.append(waiter)
        try:
            for model in models or self.jobs.models():
                self.dispatch(model)
                if fut.done():
                    break
            return await self._wait_for_grant(fut, wait_s)
        finally:
            if waiter in self._orphan_waiters:
                self._orphan_waiters.remove(waiter)

    async def _wait_for_grant(self, fut: asyncio.Future[JobRecord | None], wait_s: float) -> JobRecord | None:
        handle = asyncio.get_running_loop().call_later(min(MAX_WAIT_SECONDS, max(0.0, wait_s)), _expire, fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result() is not None:
                reserved = fut.result()
                assert reserved is not None
                self.unreserve(reserved)
            raise
        finally:
            handle.cancel()

    def job_ended(self, rec: JobRecord) -> None:
        """The job ended: its owner stops waiting for it."""
        waiter = self._owner_waiters.pop(rec.request_id, None)
        if waiter is not None:
            _expire(waiter)

    def close(self) -> None:
        """Every taker stops waiting (answered with no grant)."""
        for waiter in self._orphan_waiters:
            _expire(waiter.fut)
        for fut in self._owner_waiters.values():
            _expire(fut)


def _expire(fut: asyncio.Future[JobRecord | None]) -> None:
    if not fut.done():
        fut.set_result(None)
